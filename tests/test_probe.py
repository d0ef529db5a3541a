"""Transfer mode 'probe' (core/methods/probe.py): the converged logistic-regression probe on known answers, its C
chosen from training data only, its feature cache, `grainsweep finetune --mode probe`, and the mode run end to end
by a tiny local sweep."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.format import config as cfglib
from core.methods import probe as probelib
from core.train.run_config import RunConfig
from launch import cli, plan as planlib, report, sweep
from tests.test_sweep_local import tiny_sweep


def _blobs(rng, n_per_class: int, centres: np.ndarray, spread: float) -> tuple[np.ndarray, np.ndarray]:
    y = np.repeat(np.arange(len(centres)), n_per_class)
    return (centres[y] + spread * rng.standard_normal((len(y), centres.shape[1]))).astype(np.float32), y


def test_separable_features_reach_100_percent():
    rng = np.random.default_rng(0)
    centres = 10.0 * np.eye(4, 16)  # 4 classes, 10 apart, unit noise: linearly separable
    x_tr, y_tr = _blobs(rng, 50, centres, 1.0)
    x_va, y_va = _blobs(rng, 30, centres, 1.0)
    pc = probelib.ProbeConfig()
    c, scores = probelib.choose_c(x_tr, y_tr, pc, seed=0)
    assert set(scores) == set(pc.cs) and scores[c] == max(scores.values())
    clf = probelib.fit(x_tr, y_tr, c, pc)
    logits = probelib.target_logits(clf, x_va, num_classes=5)  # class 4 absent from train: never predicted
    assert (logits.argmax(1) == y_va).all()
    assert (logits[:, 4] < logits[:, :4].min(1)).all()


def test_c_is_chosen_on_held_out_train_rows():
    # overlapping classes so the C's differ; the choice is the argmax of held-out accuracy, smallest C on ties
    rng = np.random.default_rng(1)
    x, y = _blobs(rng, 60, rng.standard_normal((3, 40)), 3.0)
    pc = probelib.ProbeConfig(cs=(1e-4, 1e-2, 1.0, 100.0))
    c, scores = probelib.choose_c(x, y, pc, seed=3)
    best = max(scores.values())
    assert c == min(k for k, v in scores.items() if v == best)
    assert probelib.choose_c(x, y, pc, seed=3) == (c, scores)  # deterministic given the seed
    with pytest.raises(cfglib.ConfigError, match="holdout"):
        probelib.ProbeConfig(holdout=1.0)


SETS = ("pretrain_levels=[subclass]", "seeds=[0]", "clustering.enabled=false", "scratch.enabled=false",
        "run.train={epochs: 1, eval_every: 1}", "transfer.modes=[probe]")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    cfg = tiny_sweep(root / "data", *SETS)
    planlib.prepare(cfg)
    plan, records = sweep.run_sweep(cfg, root / "sw", executor="local")
    return cfg, plan, records, root


def _probes(plan):
    return [j for j in plan.jobs if j.kind == "transfer"]


def test_probe_mode_in_a_sweep(finished):
    _, plan, records, root = finished
    assert set(records[0]["states"].values()) == {"done"}, records
    probes = _probes(plan)
    assert sorted(j.pretrain_level for j in probes) == ["subclass", "superclass"]
    assert {j.mode for j in probes} == {"probe"}
    t = plan.target_level
    for j in probes:
        run = Path(j.run_dir)
        res = json.loads((run / "result.json").read_text())
        # the fields every transfer has, at the target level, all and hard (tiny's val marks hard samples)
        for key in (f"acc1/{t}", f"acc1_hard/{t}", f"acc5/{t}", "loss", "n", "n_hard"):
            assert key in res, key
        assert res["probe"]["c"] in probelib.ProbeConfig().cs and res["probe"]["converged"]
        tr = json.loads((run / "transfer.json").read_text())
        assert (tr["source"], tr["mode"], tr["target_level"]) == (str(Path(j.source).resolve()), "probe", t)
        assert (run / "config.yaml").is_file() and (run / probelib.FEATURES_FILE).is_file()
    files = report.write_report(root / "sw")
    assert "| probe |" in files["md"].read_text()


def test_rerun_reuses_cached_features(finished):
    _, plan, _, _ = finished
    j = _probes(plan)[0]
    run = Path(j.run_dir)
    before = json.loads((run / "result.json").read_text())
    cache = run / probelib.FEATURES_FILE
    stamp = cache.stat().st_mtime_ns
    (run / "result.json").unlink()
    with pytest.raises(cfglib.ConfigError, match="already holds a run"):
        probelib.probe(j.source, j.config, run)
    again = probelib.probe(j.source, j.config, run, resume=True)
    assert cache.stat().st_mtime_ns == stamp  # not recomputed
    assert again == before


def test_val_labels_cannot_change_c(finished, tmp_path):
    # a copy of a probe folder whose cached val labels are all rewritten: the chosen C and every held-out score
    # stay; only the val accuracy (computed on the rewritten labels) changes
    _, plan, _, _ = finished
    j = _probes(plan)[0]
    t = plan.target_level
    before = json.loads((Path(j.run_dir) / "result.json").read_text())
    with np.load(Path(j.run_dir) / probelib.FEATURES_FILE) as z:
        arrays = {k: z[k] for k in z.files}
    for k in arrays:
        if k.startswith("val_") and k not in ("val_x", "val_hard"):
            arrays[k] = np.zeros_like(arrays[k])
    out = tmp_path / "probe-edited"
    out.mkdir()
    np.savez(out / probelib.FEATURES_FILE, **arrays)
    after = probelib.probe(j.source, j.config, out, resume=True)
    assert after["probe"]["c"] == before["probe"]["c"]
    assert after["probe"]["holdout_acc1"] == before["probe"]["holdout_acc1"]
    pc = probelib.ProbeConfig()
    clf = probelib.fit(arrays["train_x"], arrays["train_y"], after["probe"]["c"], pc)
    assert after[f"acc1/{t}"] == pytest.approx(float((clf.predict(arrays["val_x"]) == 0).mean()))


def test_finetune_cli_probe(finished, tmp_path, capsys):
    _, plan, _, _ = finished
    src = next(j for j in plan.jobs if j.kind == "pretrain")
    out = tmp_path / "cli-probe"
    assert cli.main(["finetune", "--from", src.run_dir, "--level", plan.target_level, "--mode", "probe",
                     "--out", str(out)]) == 0
    res = json.loads((out / "result.json").read_text())
    assert json.loads(capsys.readouterr().out) == res
    cfg = cfglib.load(RunConfig, out / "config.yaml")
    assert cfg.data.level == plan.target_level
    assert cli.main(["finetune", "--from", src.run_dir, "--level", plan.target_level, "--mode", "probe",
                     "--out", str(tmp_path / "x"), "--select-k", "2"]) != 0
    assert "--mode probe" in capsys.readouterr().err
    assert cli.main(["finetune", "--from", src.run_dir, "--level", plan.target_level, "--mode", "probe",
                     "--out", str(tmp_path / "x"), "--nproc", "2"]) != 0
    assert "--nproc 2" in capsys.readouterr().err and not (tmp_path / "x").exists()
    shutil.rmtree(out)
