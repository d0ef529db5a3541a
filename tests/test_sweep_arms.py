"""The sweep arms of the seed papers' other methods, run for real by the local executor on the tiny data:
transfer mode 'select' (pretraining data selected by unbalanced OT, Liu et al.) and `multilevel`
(semantic-softmax pretraining over every level, ImageNet-21K-P), with their report rows; and the plain runs'
folder names unchanged by adding the arms (a rerun of an older sweep still finds its runs)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from core.format import config as cfglib
from launch import plan as planlib, report, sweep
from launch.arms.select import SelectArmConfig
from tests.test_sweep_local import tiny_sweep

ARMS = ("pretrain_levels=[subclass]", "seeds=[0]", "clustering.enabled=false", "scratch.enabled=false",
        "transfer.modes=[linear, select]", "transfer.select={k: 3, lam: 0.5}", "multilevel.enabled=true")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("arms")
    cfg = tiny_sweep(root / "data", *ARMS)
    planlib.prepare(cfg)
    plan, records = sweep.run_sweep(cfg, root / "sw", executor="local")
    return cfg, plan, records, root


def test_arms_are_planned(finished):
    cfg, plan, _, root = finished
    pre = {(j.pretrain_level, j.arm): j for j in plan.jobs if j.kind == "pretrain"}
    assert set(pre) == {("subclass", ""), ("superclass", ""), ("subclass", "multilevel")}
    ml = pre[("subclass", "multilevel")].config.train
    assert ml.objective == "semantic_softmax" and ml.objective_weights == cfg.multilevel.weights
    assert all(pre[k].config.train.objective == "single" for k in pre if not k[1])
    transfers = [j for j in plan.jobs if j.kind == "transfer"]
    assert sorted((j.pretrain_level, j.arm, j.mode) for j in transfers) == sorted(
        (lv, arm, m) for lv, arm in pre for m in ("linear", "select"))
    for j in transfers:
        assert j.config.train.objective == "single"  # a transfer trains one new head
        assert j.source == pre[(j.pretrain_level, j.arm)].run_dir
        # k is capped at the pretraining level's classes (tiny: 12 subclasses, 2 superclasses)
        assert j.options == (None if j.mode == "linear" else
                             SelectArmConfig(k=min(3, plan.classes[j.pretrain_level]), lam=0.5, batch_size=0))

    # the plain runs keep the folder names a sweep without the arms gives them
    plain = planlib.plan_sweep(tiny_sweep(root / "data", *ARMS[:4], "transfer.modes=[linear]"), root / "sw")
    assert {j.name for j in plain.jobs} <= {j.name for j in plan.jobs}


def test_arms_run_and_report(finished):
    _, plan, records, root = finished
    assert set(records[0]["states"].values()) == {"done"}, records
    for j in plan.jobs:
        assert (Path(j.run_dir) / "result.json").is_file(), j.name
    for j in (j for j in plan.jobs if j.mode == "select"):
        sel = json.loads((Path(j.run_dir) / "selection.json").read_text())
        assert sel["k"] == j.options.k and len(sel["classes"]) == j.options.k
        assert sel["source_level"] == j.pretrain_level
    # the multi-level run trained a head per level from subclass up
    ml = next(j for j in plan.jobs if j.kind == "pretrain" and j.arm == "multilevel")
    assert cfglib.read_yaml(Path(ml.run_dir) / "config.yaml")["train"]["objective"] == "semantic_softmax"

    files = report.write_report(root / "sw")
    with open(files["csv"]) as f:
        rows = list(csv.DictReader(f))
    got = sorted((r["arm"], r["mode"], r["pretrain_level"]) for r in rows)
    assert got == sorted((arm, m, lv) for lv, arm in (("subclass", ""), ("superclass", ""),
                                                         ("subclass", "multilevel")) for m in ("linear", "select"))
    t = plan.target_level
    for r in rows:  # each row is its one run's result
        spec = next(j for j in plan.jobs if j.kind == "transfer" and (j.arm, j.mode, j.pretrain_level)
                    == (r["arm"], r["mode"], r["pretrain_level"]))
        res = json.loads((Path(spec.run_dir) / "result.json").read_text())
        assert float(r["acc_all_mean"]) == pytest.approx(res[f"acc1/{t}"], abs=1e-5)
    md = files["md"].read_text()
    assert "multi-level pretraining (semantic softmax)" in md and "| select |" in md

    # a rerun finds everything done
    _, again = sweep.run_sweep(tiny_sweep(root / "data", *ARMS), root / "sw", executor="local")
    assert again == []
