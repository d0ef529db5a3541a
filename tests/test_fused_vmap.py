"""benchmarks/fused_vmap.py: a fused job's members batched with torch.vmap train the same weights as the members
stepped one after another (an MLP and a CNN with BatchNorm), the check catches members that differ, and the CLI
writes its JSON and its RESULTS.md section (replacing its own section only)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from benchmarks import fused_vmap as fv


@pytest.mark.parametrize("case", fv.TINY, ids=lambda c: c.model)
def test_batched_members_train_the_same_weights_as_sequential_ones(case):
    # float64: the two sides agree to ~1e-15 there, so only a real difference fails (float32 rounding of other
    # kernels grows with lr 0.2 and BatchNorm: benchmarks/fused_vmap.py TOLERANCE)
    check = fv.check_case(case, torch.float64, steps=4)
    assert check["equal"], check
    assert check["max_weight_change"] > 1e-3  # they trained: the equality is not the initial weights'


def test_each_batched_member_is_an_ordinary_state_dict_of_its_model():
    case = fv.TINY[1]  # resnet10t: BatchNorm buffers too
    models = fv.build_members(case)
    bat = fv.Batched([copy.deepcopy(m) for m in models], case.weight_decay)
    bat.step(*fv.batches(case, count=1)[0])
    for model, sd in zip(models, bat.state_dicts()):
        model.load_state_dict(sd, strict=True)  # what a member's checkpoint would hold
        assert int(model.get_submodule("net.bn1").num_batches_tracked) == 1


def test_check_catches_a_member_that_trained_differently():
    case = fv.TINY[0]
    models = fv.build_members(case)
    x, ys = fv.batches(case, count=1)[0]
    seq = fv.Sequential([copy.deepcopy(m) for m in models], case.weight_decay)
    bat = fv.Batched([copy.deepcopy(m) for m in models], case.weight_decay)
    ys_other = [ys[0], ys[1], (ys[2] + 1) % case.classes[2]]  # member 2 sees other labels on the batched side
    seq.step(x, ys)
    bat.step(x, ys_other)
    check = fv.check_equal(bat.state_dicts(), seq.state_dicts())
    assert not check["equal"] and check["where"].startswith("member 2"), check


def test_cli_tiny_writes_json_and_its_results_section(tmp_path, capsys):
    threads = torch.get_num_threads()
    results_md = tmp_path / "RESULTS.md"
    results_md.write_text(f"# Results\n\nother figures\n\n{fv.START}\nold section\n{fv.END}\n\n## after\n")
    try:
        rc = fv.main(["--tiny", "--threads", str(threads), "--json", str(tmp_path / "r.json"),
                      "--results", str(results_md)])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    out = json.loads((tmp_path / "r.json").read_text())
    assert [c["case"] for c in out["cases"]] == [c.name for c in fv.TINY]
    for c in out["cases"]:
        assert c["check"]["equal"], c
        assert len(c["sequential"]["runs"]) == len(c["batched"]["runs"]) == 2 and c["speedup"] > 0
    text = results_md.read_text()
    assert text.startswith("# Results\n\nother figures\n\n") and text.endswith("\n\n## after\n")
    assert "old section" not in text and text.count(fv.START) == 1 and "Verdict" in text
    assert "Verdict" in capsys.readouterr().out
