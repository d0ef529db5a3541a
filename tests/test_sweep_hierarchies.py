"""The `hierarchies` sweep section (launch/arms/hierarchies.py), run for real by the local executor on the tiny
data: every control hierarchy derived once, pretrained, transferred and clustered like the taxonomy levels, one
curve per hierarchy in the report; a rerun reuses the derived levels and skips the finished runs; bad sections
fail before anything is derived or run, naming the key."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from core.format import config as cfglib
from core.format import hierarchy as hlib
from launch import plan as planlib, report, report_plot, sweep
from launch.arms import hierarchies
from tests.test_sweep_local import tiny_sweep

# tiny: 12 leaves, 2 superclasses (the target) of 48 training images each, 96 training images in all
SECTION = "hierarchies={enabled: true, kmeans_aligned: {k: [2]}, kmeans_misaligned: {k: [3]}, random: {groups: [6]}, " \
          "per_sample: true}"
LEVELS = {"kmeans_aligned": ("kmeans2_in_superclass_pixels", 4), "kmeans_misaligned": ("kmeans3_pixels", 3),
          "random": ("random6_seed0", 6), "per_sample": ("per_sample", 96)}
SETS = ("pretrain_levels=[subclass, class]", "seeds=[0]", "scratch.enabled=false", "clustering.enabled=false",
        "run.train={epochs: 1, eval_every: 1}", SECTION)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("hier")
    cfg = tiny_sweep(root / "data", *SETS)
    plan, records = sweep.run_sweep(cfg, root / "sw", executor="local")
    return cfg, plan, records, root


def test_every_hierarchy_is_derived_pretrained_and_followed(finished):
    _, plan, records, root = finished
    assert set(records[0]["states"].values()) == {"done"}, records
    h = hlib.load(root / "data")
    assert set(h.derived) == {name for name, _ in LEVELS.values()}
    pre = {j.arm: j for j in plan.jobs if j.kind == "pretrain" and j.arm}
    assert {k: (j.pretrain_level, plan.classes[j.pretrain_level]) for k, j in pre.items()} == LEVELS
    for kind, j in pre.items():
        assert j.name.startswith(f"pretrain-{kind}-{LEVELS[kind][0]}-s0-")
        assert j.config.data.level == LEVELS[kind][0]
    # each derived run is transferred to the target (and clustered, where clustering is on) like the taxonomy's
    clustered = planlib.plan_sweep(tiny_sweep(root / "data", *SETS, "clustering.enabled=true"), root / "sw")
    for kind, src in pre.items():
        followers = sorted(j.kind for j in clustered.stage(2) if j.source == src.run_dir)
        assert followers == ["cluster", "transfer"], kind
    for j in plan.jobs:
        assert (Path(j.run_dir) / "result.json").is_file(), j.name
    # the order the derived levels were planned in is the plan's, after the taxonomy's levels
    assert list(plan.classes)[:3] == h.names


def test_report_draws_one_curve_per_hierarchy(finished):
    _, plan, _, root = finished
    files = report.write_report(root / "sw")
    with open(files["hierarchies_csv"]) as f:
        rows = list(csv.DictReader(f))
    # the taxonomy's three levels and every control
    want = {("taxonomy", "subclass"), ("taxonomy", "class"), ("taxonomy", "superclass")} | {
        (hierarchies.KINDS[k], name) for k, (name, _) in LEVELS.items()}
    assert {(r["hierarchy"], r["pretrain_level"]) for r in rows} == want
    assert all(r["mode"] == "linear" and r["seeds"] == "1" for r in rows)
    for r in rows:  # each row is its one transfer's result
        spec = next(j for j in plan.jobs if j.kind == "transfer" and j.pretrain_level == r["pretrain_level"])
        res = json.loads((Path(spec.run_dir) / "result.json").read_text())
        assert float(r["acc_all_mean"]) == pytest.approx(res["acc1/superclass"], abs=1e-5)
    assert files["png"].stat().st_size > 0
    md = files["md"].read_text()
    assert "## Target accuracy by pretraining hierarchy" in md
    assert "| one class per sample | linear | per_sample | 96 |" in md

    # the figure: one curve per hierarchy and mode, every level named with its classes, no tick labels overlapping
    with open(files["csv"]) as f:
        main = [{**r, "pretrain_classes": int(r["pretrain_classes"]), "acc_all_mean": float(r["acc_all_mean"]),
                 "acc_all_std": float(r["acc_all_std"]), "acc_hard_mean": _num(r["acc_hard_mean"]),
                 "acc_hard_std": _num(r["acc_hard_std"])} for r in csv.DictReader(f)]
    assert len(report_plot.curves(main, "all")) == 1 + len(LEVELS)
    fig = report_plot.figure(main, "superclass", 2)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
        assert boxes and not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    names = {t.get_text() for t in fig.axes[0].texts}
    assert {f"{name} ({n})" for name, n in LEVELS.values()} <= names


def _num(s: str) -> float | None:
    return float(s) if s else None


def test_rerun_reuses_levels_and_skips_runs(finished, capsys):
    cfg, plan, _, root = finished
    derived = root / "data" / "derived"
    before = {p.name: p.stat().st_mtime_ns for p in derived.iterdir()}
    plan2, records = sweep.run_sweep(cfg, root / "sw", executor="local")
    assert records == [] and [j.name for j in plan2.jobs] == [j.name for j in plan.jobs]
    assert {p.name: p.stat().st_mtime_ns for p in derived.iterdir()} == before
    assert capsys.readouterr().out.count("already there") == len(LEVELS)

    # k-means on a pretrained run's features: derived under the name planning gives it
    run = next(j for j in plan.jobs if j.kind == "pretrain" and j.pretrain_level == "subclass")
    cfg2 = tiny_sweep(root / "data", *SETS[:-1], f"hierarchies={{enabled: true, features: {run.run_dir}, "
                                                 "kmeans_misaligned: {k: [2]}}")
    planlib.prepare(cfg2)
    planned = planlib.plan_sweep(cfg2, root / "sw2")
    level = next(j.pretrain_level for j in planned.jobs if j.arm == "kmeans_misaligned")
    assert level == f"kmeans2_run-{Path(run.run_dir).name}-epoch0001" and level in hlib.load(root / "data").derived


@pytest.mark.parametrize("section, key", [
    ("{enabled: true, kmeans_misaligned: {k: [97]}}", r"hierarchies.kmeans_misaligned.k\[0\]=97"),
    ("{enabled: true, kmeans_aligned: {k: [2, 49]}}", r"hierarchies.kmeans_aligned.k\[1\]=49"),
    ("{enabled: true, random: {groups: [13]}}", r"hierarchies.random.groups\[0\]=13"),
    ("{enabled: true, features: no/such/run, kmeans_misaligned: {k: [2]}}", "hierarchies.features='no/such/run'"),
    ("{enabled: true, kmeans_aligned: {k: [2], within: genus}}", "hierarchies.kmeans_aligned.within='genus'"),
])
def test_bad_dataset_dependent_configs_fail_before_anything_runs(finished, tmp_path, section, key):
    _, _, _, root = finished
    h_file = root / "data" / hlib.FILENAME
    before = h_file.read_text()
    cfg = tiny_sweep(root / "data", *SETS[:-1], f"hierarchies={section}")
    with pytest.raises(cfglib.ConfigError, match=key):
        sweep.run_sweep(cfg, tmp_path / "sw", executor="local")
    assert h_file.read_text() == before and not (tmp_path / "sw").exists()


@pytest.mark.parametrize("section, key", [
    ("{enabled: true, kmeans_fancy: {k: [2]}}", "hierarchies.kmeans_fancy"),
    ("{enabled: true, random: {groups: []}}", "hierarchies.random.*groups: an empty list"),
    ("{enabled: true, kmeans_aligned: {k: [0]}}", r"hierarchies.kmeans_aligned.*k\[0\]=0"),
    ("{enabled: true}", "hierarchies.*no hierarchy asked for"),
])
def test_bad_sections_fail_when_loaded(tmp_path, section, key):
    with pytest.raises(cfglib.ConfigError, match=key):
        tiny_sweep(tmp_path / "data", f"hierarchies={section}")
