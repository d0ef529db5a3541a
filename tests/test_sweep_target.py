"""A sweep with a separate target dataset (`target_dataset`): pretraining on one synthetic dataset, transfers
(linear and select) and the scratch baseline on another with classes of its own, end to end with the local
executor; a target sharing the pretraining hierarchy; bad target settings refused before anything runs, naming the
key; and `grainsweep sweep --dry-run` (stages, dependencies, image totals, no sweep folder)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from core.format import config as cfglib, hierarchy as hlib, run_folder
from data_tools import convert_synthetic
from launch import plan as planlib, report, sweep, sweep_config
from launch.cli import main as cli
from tests.test_sweep_local import tiny_sweep

# the target: 6 leaves ('kind') under 3 families, other features (seed 1), same image size as the tiny preset
TARGET_SETS = ["synthetic.branching=[3, 2]", "synthetic.level_names=[kind, family]", "synthetic.seed=1", "workers=1"]


@pytest.fixture(scope="module")
def target_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("target") / "other"
    convert_synthetic.convert(out, convert_synthetic.load_config("tiny", None, TARGET_SETS))
    return out


E2E = ["pretrain_levels=[subclass]", "transfer.modes=[linear, select]", "transfer.select.k=2"]


def target_sweep(data: Path, target: Path, *sets: str):
    return tiny_sweep(data, f"target_dataset={target}", "target_level=''", "seeds=[0]",
                      "run.train={epochs: 1, eval_every: 1}", "transfer.set=[train.epochs=1]",
                      "scratch.set=[train.epochs=1]", "clustering.enabled=false", *sets)


@pytest.fixture(scope="module")
def finished(tiny_dataset, target_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep-target")
    cfg = target_sweep(tiny_dataset, target_data, *E2E)
    plan, records = sweep.run_sweep(cfg, root / "sw", executor="local")
    return plan, records, tiny_dataset, target_data


def test_separate_target_runs_end_to_end(finished):
    plan, records, data, target = finished
    assert set(records[0]["states"].values()) == {"done"}, records
    assert (plan.target_level, plan.target_classes, plan.shared) == ("family", 3, False)
    assert plan.target_dataset == str(target.resolve()) and plan.dataset == str(data.resolve())
    pre = [j for j in plan.jobs if j.kind == "pretrain"]
    # no 'pretrain on target': the target's classes are not a level of the pretraining dataset
    assert [j.level for j in pre] == ["subclass"]
    assert all(j.config.data.path == str(data.resolve()) for j in pre)
    on_target = [j for j in plan.jobs if j.kind in ("transfer", "scratch")]
    assert sorted((j.kind, j.mode) for j in on_target) == [("scratch", ""), ("transfer", "linear"),
                                                           ("transfer", "select")]
    for j in on_target:
        assert (j.config.data.path, j.config.data.level) == (str(target.resolve()), "family")
        res = json.loads((Path(j.run_dir) / "result.json").read_text())
        assert "acc1/family" in res and not any(k.endswith(("/subclass", "/superclass")) for k in res)
    for j in on_target:
        if j.mode == "select":  # the extra data come from the pretraining dataset, the target batches from the target
            sel = json.loads((Path(j.run_dir) / "selection.json").read_text())
            assert sel["source_beton"] == str(data.resolve() / "train.beton")
            assert sel["target_beton"] == str(target.resolve() / "train.beton")
            assert sel["source_level"] == j.pretrain_level and sel["target_level"] == "family"
    saved = planlib.load_plan(plan.sweep_dir)  # plan.json keeps the target
    assert (saved.target_dataset, saved.target_classes, saved.shared) == (plan.target_dataset, 3, False)


def test_report_reads_the_target(finished):
    plan = finished[0]
    files = report.write_report(plan.sweep_dir)
    with open(files["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert {(r["kind"], r["mode"]) for r in rows} == {("scratch", ""), ("transfer", "linear"), ("transfer", "select")}
    assert {(r["target_level"], r["target_classes"]) for r in rows} == {("family", "3")}
    assert report.collect_pretrained(plan) == []  # other classes: no pretraining run is read at the target
    md = files["md"].read_text()  # nor is a transfer labelled as coming from pretraining on the target
    assert "| pretrain | linear |" in md and "pretrain on target" not in md and "pretrain finer" not in md, md


def test_rerun_skips_everything(finished):
    plan, _, data, target = finished
    cfg = target_sweep(data, target, *E2E)
    again, records = sweep.run_sweep(cfg, plan.sweep_dir, executor="local")
    assert records == [] and [j.name for j in again.jobs] == [j.name for j in plan.jobs]


def test_target_sharing_the_hierarchy_keeps_pretraining_on_target(tiny_dataset, tmp_path):
    # other images (seed 1, other features), the same tree of class ids: the pretraining runs are read at the target
    # level, and pretraining on it is the baseline again
    other = tmp_path / "same-tree"
    convert_synthetic.convert(other, convert_synthetic.load_config("tiny", None, ["synthetic.seed=1", "workers=1"]))
    same = [(lv.name, lv.classes, lv.leaf_to_class) for lv in hlib.load(tiny_dataset).levels]
    assert [(lv.name, lv.classes, lv.leaf_to_class) for lv in hlib.load(other).levels] == same  # titles differ
    plan = planlib.plan_sweep(target_sweep(tiny_dataset, other, "target_level=class"), tmp_path / "sw")
    assert plan.shared and plan.target_dataset == str(other.resolve())
    assert sorted(j.level for j in plan.jobs if j.kind == "pretrain") == ["class", "subclass"]
    assert {j.config.data.path for j in plan.jobs if j.kind != "pretrain"} == {str(other.resolve())}
    with pytest.raises(cfglib.ConfigError, match=re.escape("pretrain_levels[0]='superclass' is coarser")):
        planlib.plan_sweep(target_sweep(tiny_dataset, other, "target_level=class",
                                        "pretrain_levels=[superclass]"), tmp_path / "sw")


def _no_hierarchy(target: Path, tmp: Path) -> str:
    bad = tmp / "no-hierarchy"
    shutil.copytree(target, bad)
    (bad / "hierarchy.json").unlink()
    return str(bad)


def _relabelled(target: Path, tmp: Path) -> str:
    # a hierarchy.json edited by hand after conversion: its families no longer what the betons say
    bad = tmp / "relabelled"
    shutil.copytree(target, bad)
    h = hlib.load(bad)
    fam = h.level("family")
    swapped = [(c + 1) % fam.num_classes for c in fam.leaf_to_class]
    edited = hlib.Hierarchy((h.levels[0], type(fam)(fam.name, fam.classes, fam.titles, tuple(swapped))), h.derived)
    edited.save(bad / "hierarchy.json")
    return str(bad)


BAD = [  # (target_dataset, extra sets, the key the message must name)
    (lambda t, tmp: "/nonexistent/target", [], "target_dataset='/nonexistent/target'"),
    (_no_hierarchy, [], "target_dataset="),
    (_relabelled, [], "target_dataset"),
    (lambda t, tmp: str(t), ["target_level=genus"], "target_level='genus'"),
    (lambda t, tmp: str(t), ["target_level=superclass"], "target_level='superclass'"),  # a pretraining level only
    (lambda t, tmp: str(t), ["transfer.set=[data.batch_size=1000]"], "data.batch_size of the transfers"),
]


@pytest.mark.parametrize("make, sets, key", BAD)
def test_bad_target_fails_before_anything_runs(tiny_dataset, target_data, tmp_path, capsys, make, sets, key):
    base = tmp_path / "tiny.yaml"
    base.write_text("name: tiny\n")
    target = make(target_data, tmp_path)
    for extra in ([], ["--dry-run"]):
        args = ["sweep", str(base), "--executor", "local", "--out", str(tmp_path / "sw"), *extra,
                *[f"--set={s}" for s in _tiny_sets(tiny_dataset, target, *sets)]]
        assert cli(args) == 2
        err = capsys.readouterr().err
        assert key in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "sw").exists()


def _tiny_sets(data: Path, target: str, *sets: str) -> list[str]:
    return [f"dataset.path={data}", "dataset.synthetic_preset=tiny", "dataset.synthetic_set=[workers=1]",
            f"target_dataset={target}", "seeds=[0]", "run.model={name: bmlp, kwargs: {depth: 1, width: 8}}",
            "run.data.resolution=16", "run.data.batch_size=16", "run.train.epochs=2", "transfer.set=[train.epochs=3]",
            *sets]


def test_dry_run_prints_stages_dependencies_and_images(tiny_dataset, target_data, tmp_path, capsys):
    base = tmp_path / "tiny.yaml"
    base.write_text("name: tiny\n")
    out = tmp_path / "sw"
    args = ["sweep", str(base), "--executor", "local", "--out", str(out), "--dry-run",
            *[f"--set={s}" for s in _tiny_sets(tiny_dataset, str(target_data), "transfer.modes=[linear]")]]
    assert cli(args) == 0
    text = capsys.readouterr().out
    assert not out.exists()  # nothing written into the sweep folder, not even the folder
    n_pre = json.loads((tiny_dataset / "manifest.json").read_text())["splits"]
    n_tgt = json.loads((target_data / "manifest.json").read_text())["splits"]
    cfg = cfglib.load(sweep_config.SweepConfig, base, _tiny_sets(tiny_dataset, str(target_data), "transfer.modes=[linear]"))
    plan = planlib.plan_sweep(cfg, out)
    pre = [j for j in plan.stage(1) if j.kind == "pretrain"]
    # stage 1: 3 pretraining levels x 2 epochs x the pretraining set, one scratch run x 3 epochs x the target set
    stage1 = len(pre) * 2 * n_pre["train"] + 3 * n_tgt["train"]
    stage2 = len(pre) * (3 * n_tgt["train"] + n_pre["val"])  # a linear transfer and a clustering job per run
    assert f"stage 1: {len(plan.stage(1))} jobs; {stage1:,} images to process" in text, text
    assert f"stage 2: {len(plan.stage(2))} jobs, each after its pretraining run; {stage2:,} images" in text, text
    assert f"total: {len(plan.jobs)} jobs, {stage1 + stage2:,} images to process" in text
    for j in plan.stage(2):
        assert re.search(rf"{j.name}\s+after {j.source_name};", text), j.name
    assert "target: family (3 classes) of " + str(target_data.resolve()) in text
