"""A run knows its dataset: config.yaml holds the absolute data.path and dataset.json its fingerprint, so `eval`,
`finetune` and `cluster` from another working directory use the run's dataset and refuse one whose contents
changed (unless named by --data); a hierarchy.json edited after conversion is refused when a run loads its data.
Real runs through the real CLI."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from core.format import config as cfglib
from core.format import hierarchy as hlib
from core.format.run_folder import RunFolder, dataset_fingerprint
from launch.cli import main as cli

SETS = [f"--set={s}" for s in ("data.resolution=16", "data.batch_size=16", "data.workers=1", "model.name=bmlp",
                               "model.kwargs={depth: 1, width: 32}", "model.compile=never", "optim.name=adamw",
                               "optim.lr=0.003", "train.epochs=1", "train.device=cpu")]


@pytest.fixture(scope="module")
def relative_run(tiny_dataset, tmp_path_factory) -> tuple[Path, Path]:
    """(run, its dataset): trained with a relative --data from the folder that holds a copy of the dataset."""
    home = tmp_path_factory.mktemp("home")
    shutil.copytree(tiny_dataset, home / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(home)
        assert cli(["train", "--data", "data", "--level", "subclass", "--out", "run", *SETS]) == 0
    return home / "run", home / "data"


def test_run_records_absolute_data_path_and_fingerprint(relative_run):
    run, data = relative_run
    assert cfglib.read_yaml(RunFolder(run).config_file)["data"]["path"] == str(data)
    assert RunFolder(run).dataset_record() == {"path": str(data), "fingerprint": dataset_fingerprint(data)}
    assert dataset_fingerprint(data).startswith("inputs:")  # from the converter's manifest.json


def test_eval_from_another_directory_uses_the_run_dataset(relative_run, tmp_path, monkeypatch):
    run, data = relative_run
    # another folder with a dataset at the same relative path, with other contents (fewer levels)
    other = tmp_path / "data"
    shutil.copytree(data, other)
    h = hlib.load(other)
    hlib.Hierarchy(h.levels[:2]).save(other / "hierarchy.json")
    monkeypatch.chdir(tmp_path)
    assert cli(["eval", str(run)]) == 0
    ev = json.loads(RunFolder(run).eval_file().read_text())
    assert ev["data"] == str(data) and "acc1/superclass" in ev  # the run's dataset, not ./data


def test_changed_dataset_refused_unless_named(relative_run, tmp_path, capsys):
    run, data = relative_run
    src = tmp_path / "run"
    shutil.copytree(run, src)
    # the run's dataset re-converted from other inputs: same folder, another fingerprint
    manifest = data / "manifest.json"
    before = manifest.read_text()
    try:
        manifest.write_text(json.dumps({**json.loads(before), "inputs_hash": "0" * 64}))
        capsys.readouterr()
        for name, args in {"eval": ["eval", str(src)],
                           "finetune": ["finetune", "--from", str(src), "--level", "class", "--out",
                                        str(tmp_path / "ft")],
                           "cluster": ["cluster", str(src), "--device", "cpu"]}.items():
            assert cli(args) == 2, name
            err = capsys.readouterr().err.strip()
            assert "fingerprint" in err and "--data" in err and "\n" not in err, (name, err)
        assert not (tmp_path / "ft").exists()
        # named by --data: the user's choice
        assert cli(["eval", str(src), "--data", str(data)]) == 0
        assert RunFolder(src).eval_file(data).is_file()
        assert cli(["finetune", "--from", str(src), "--data", str(data), "--level", "class", "--mode", "linear",
                    "--out", str(tmp_path / "ft"), "--set", "train.epochs=1"]) == 0
        # a resumed run must see the data it started on
        RunFolder(src).result_file.unlink()
        assert cli(["train", "--data", str(data), "--level", "subclass", "--out", str(src), *SETS,
                    "--resume"]) == 2
        assert "changed since" in capsys.readouterr().err
    finally:
        manifest.write_text(before)


def _merge_last_class(h: hlib.Hierarchy, level: str) -> hlib.Hierarchy:
    """`h` with the last class of `level` merged into a sibling (same parent): a valid hierarchy with one class
    fewer, as a hand edit would leave it."""
    i = h.index(level)
    lv = h.levels[i]
    last = lv.num_classes - 1
    parent = h.parent_map(level, h.names[i + 1])
    sibling = next(c for c in range(last) if parent[c] == parent[last])
    merged = dataclasses.replace(lv, classes=lv.classes[:last], titles=lv.titles[:last],
                                 leaf_to_class=tuple(sibling if c == last else c for c in lv.leaf_to_class))
    return hlib.Hierarchy(tuple(merged if j == i else x for j, x in enumerate(h.levels)), h.derived)


def _swap_leaves(h: hlib.Hierarchy, level: str) -> hlib.Hierarchy:
    """`h` with two leaves of different `level` classes (same parent) swapped: valid, same class counts, but no
    longer what the betons' `level` column says."""
    i = h.index(level)
    lv = h.levels[i]
    parent = h.parent_map(level, h.names[i + 1])
    l2c = list(lv.leaf_to_class)
    a = 0
    b = next(j for j, c in enumerate(l2c) if c != l2c[a] and parent[c] == parent[l2c[a]])
    l2c[a], l2c[b] = l2c[b], l2c[a]
    swapped = dataclasses.replace(lv, leaf_to_class=tuple(l2c))
    return hlib.Hierarchy(tuple(swapped if j == i else x for j, x in enumerate(h.levels)), h.derived)


@pytest.mark.parametrize("edit, message", [(_merge_last_class, "has label"), (_swap_leaves, "puts its leaf")])
def test_hand_edited_hierarchy_refused(tiny_dataset, tmp_path, capsys, edit, message):
    data = tmp_path / "edited"
    shutil.copytree(tiny_dataset, data)
    edit(hlib.load(data), "class").save(data / "hierarchy.json")
    hlib.load(data)  # still a valid hierarchy on its own
    assert cli(["train", "--data", str(data), "--level", "class", "--out", str(tmp_path / "r"), *SETS]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "hierarchy.json" in err and "'class'" in err and "\n" not in err, err
