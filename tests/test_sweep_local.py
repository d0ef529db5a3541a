"""A whole sweep with the local executor (in-process, real training on the tiny preset): plan, dependencies,
baselines, clustering jobs, idempotent rerun, status, report; and bad configs that fail before anything is
submitted."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from core.format import run_folder
from core.format import config as cfglib
from launch import plan as planlib, report, status, sweep, sweep_config
from launch.executors.records import JOBS_FILE
from launch.cli import main as cli


def tiny_sweep(data: Path, *sets: str) -> sweep_config.SweepConfig:
    """The tiny preset (12 subclasses / 4 classes / 2 superclasses, 16 px), bmlp, 2 epochs everywhere.

    Built on the schema's defaults, not on the packaged default sweep (launch/sweeps/default.yaml, tuned for the
    demo), so retuning the demo does not change what these tests run."""
    return cfglib.load(sweep_config.SweepConfig, None, [
        "name=tiny", f"dataset.path={data}", "dataset.synthetic_preset=tiny", "dataset.synthetic_set=[workers=1]",
        "target_level=superclass", "pretrain_levels=[]", "seeds=[0, 1]",
        "run.data={resolution: 16, batch_size: 16, workers: 1}",
        "run.model={name: bmlp, kwargs: {depth: 2, width: 32}}", "run.train={epochs: 2, eval_every: 2}",
        "run.optim={name: adamw, lr: 0.002, weight_decay: 0.05, warmup_epochs: 1.0, label_smoothing: 0.1}",
        "transfer.modes=[linear]", "transfer.set=[train.epochs=1]", "scratch.set=[train.epochs=2]", *sets])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    cfg = tiny_sweep(root / "data")
    planlib.prepare(cfg)  # converts the tiny data (launch.sweep calls it too once it prepares before planning)
    plan, records = sweep.run_sweep(cfg, root / "sw", executor="local")
    return cfg, plan, records, root


def test_plan_stages_and_baselines(finished):
    _, plan, _, _ = finished
    kinds = [(j.kind, j.pretrain_level, j.seed) for j in plan.jobs]
    levels = ["subclass", "class", "superclass"]
    assert sorted(k for k in kinds if k[0] == "pretrain") == sorted(("pretrain", lv, s) for lv in levels
                                                                     for s in (0, 1))
    assert sorted(k for k in kinds if k[0] == "scratch") == [("scratch", "", 0), ("scratch", "", 1)]
    transfers = [j for j in plan.stage(2) if j.kind == "transfer"]
    assert len(transfers) == 6 and all(j.level == "superclass" for j in transfers)
    clusters = [j for j in plan.stage(2) if j.kind == "cluster"]  # clustering.enabled is on by default
    assert sorted((j.pretrain_level, j.seed) for j in clusters) == sorted((lv, s) for lv in levels for s in (0, 1))
    assert len(plan.stage(2)) == len(transfers) + len(clusters)
    assert {j.kind for j in plan.stage(1)} == {"pretrain", "scratch"}
    by_dir = {j.run_dir: j for j in plan.jobs}
    for t in transfers + clusters:  # each starts from the pretraining run of its own level and seed
        src = by_dir[t.source]
        assert (src.kind, src.level, src.seed) == ("pretrain", t.pretrain_level, t.seed)
    assert all(j.name.startswith(f"cluster-{j.pretrain_level}-s{j.seed}-") and j.config == by_dir[j.source].config
               for j in clusters)
    assert len({j.name for j in plan.jobs}) == len(plan.jobs)


def test_local_run_finishes_everything_in_dependency_order(finished):
    _, plan, records, root = finished
    assert len(records) == 1 and records[0]["executor"] == "local"
    assert set(records[0]["states"].values()) == {"done"}
    assert all(run_folder.is_done(j.run_dir) for j in plan.jobs)
    # afterok: every transfer started after its pretraining run had finished
    from launch.jobs import read_starts

    by_dir = {j.run_dir: j for j in plan.jobs}
    for t in plan.stage(2):
        started = read_starts(t)[0]["time"]
        assert started >= (Path(t.source) / "result.json").stat().st_mtime
        if t.kind == "transfer":
            rec = json.loads((Path(t.run_dir) / "transfer.json").read_text())
            assert rec["source"] == by_dir[t.source].run_dir
        else:  # a clustering job: its result is the source's clustering.json, every level scored
            res = json.loads((Path(t.run_dir) / "result.json").read_text())
            assert res == json.loads((Path(t.source) / "clustering.json").read_text())
            assert res["run"] == t.source and list(res["metrics"]) == list(plan.classes)
    # one compile cache for the whole sweep
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(root.resolve() / "sw" / planlib.CACHE_DIR)
    rows = status.job_states(root / "sw")
    assert [r["state"] for r in rows] == ["done"] * len(plan.jobs)


def test_rerun_submits_nothing(finished, capsys):
    cfg, plan, _, root = finished
    before = (root / "sw" / JOBS_FILE).read_text()
    plan2, records = sweep.run_sweep(cfg, root / "sw", executor="local")
    assert records == [] and [j.name for j in plan2.jobs] == [j.name for j in plan.jobs]
    assert (root / "sw" / JOBS_FILE).read_text() == before
    assert "0 to run" in capsys.readouterr().out
    # a changed setting is a new run folder for what it touches only
    plan3 = planlib.plan_sweep(tiny_sweep(root / "data", "transfer.set=[train.epochs=2]"), root / "sw")
    old = {j.name for j in plan.jobs}
    assert {j.name for j in plan3.jobs if j.kind == "pretrain"} <= old
    assert not {j.name for j in plan3.jobs if j.kind == "transfer"} & old
    # scratch.set fixes train.epochs=2, so the scratch runs' resolved configs (and folders) did not change
    assert {j.name for j in plan3.jobs if j.kind == "scratch"} <= old
    # clustering depends on the pretraining run only; switched off, there is none
    assert {j.name for j in plan3.jobs if j.kind == "cluster"} == {j.name for j in plan.jobs if j.kind == "cluster"}
    plan4 = planlib.plan_sweep(tiny_sweep(root / "data", "clustering.enabled=false"), root / "sw")
    assert [j.name for j in plan4.jobs] == [j.name for j in plan.jobs if j.kind != "cluster"]


def test_report_files_and_rows(finished):
    _, plan, _, root = finished
    files = report.write_report(root / "sw")
    with open(files["csv"]) as f:
        rows = list(csv.DictReader(f))
    got = sorted((r["kind"], r["mode"], r["pretrain_level"], r["pretrain_classes"]) for r in rows)
    assert got == sorted([("scratch", "", "", "0"), ("transfer", "linear", "subclass", "12"),
                          ("transfer", "linear", "class", "4"), ("transfer", "linear", "superclass", "2")])
    for r in rows:
        assert r["seeds"] == "2" and r["target_classes"] == "2"
        for k in ("acc_all_mean", "acc_hard_mean"):
            assert 0.0 <= float(r[k]) <= 1.0
        assert float(r["acc_all_std"]) >= 0.0
    md = files["md"].read_text()
    # header row + 4 settings (separator: "|---"), the pretrained networks (header + 3 levels), then the
    # clustering table: header + 3 x 3 levels
    assert md.count("\n| ") == 1 + 4 + 1 + 3 + 1 + 9 and "chance 50.0%" in md
    with open(files["pretrained_csv"]) as f:  # the pretraining runs' own results at the target, over seeds
        prows = {r["pretrain_level"]: r for r in csv.DictReader(f)}
    assert list(prows) == ["subclass", "class", "superclass"]
    for lv, r in prows.items():
        res = [json.loads((Path(j.run_dir) / "result.json").read_text()) for j in plan.jobs
               if j.kind == "pretrain" and j.pretrain_level == lv]
        assert r["seeds"] == "2"
        assert float(r["acc_hard_mean"]) == pytest.approx(sum(x["acc1_hard/superclass"] for x in res) / 2, abs=1e-5)
    assert "## Clustering of frozen pretrained features" in md and "Missing" not in md
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(files["clustering_csv"]) as f:
        crows = list(csv.DictReader(f))
    levels = [("subclass", "12"), ("class", "4"), ("superclass", "2")]
    assert [(r["pretrain_level"], r["pretrain_classes"], r["eval_level"], r["eval_classes"]) for r in crows] == [
        (p, pc, e, ec) for p, pc in levels for e, ec in levels]
    for r in crows:
        assert r["seeds"] == "2"
        assert 0.0 <= float(r["nmi_mean"]) <= 1.0 and -1.0 <= float(r["ari_mean"]) <= 1.0
        assert 0.0 < float(r["acc_mean"]) <= 1.0 and float(r["acc_std"]) >= 0.0
    # the table's numbers are the clustering jobs' results, averaged over seeds
    runs = [json.loads((Path(j.run_dir) / "result.json").read_text()) for j in plan.jobs
            if j.kind == "cluster" and j.pretrain_level == "class"]
    want = sum(r["metrics"]["superclass"]["nmi"] for r in runs) / 2
    got = next(r for r in crows if (r["pretrain_level"], r["eval_level"]) == ("class", "superclass"))
    assert float(got["nmi_mean"]) == pytest.approx(want, abs=1e-5)


def test_status_and_report_cli(finished, capsys):
    _, plan, _, root = finished
    assert cli(["status", str(root / "sw")]) == 0
    out = capsys.readouterr().out
    assert f"{len(plan.jobs)} runs: {len(plan.jobs)} done" in out
    assert sum("cluster" in line.split() and "k-means" in line.split() for line in out.splitlines()) == 6
    assert cli(["report", str(root / "sw")]) == 0
    assert (root / "sw" / "report.md").is_file()


BAD = [
    (["pretrain_levels=[subclass, genus]"], "pretrain_levels[1]"),
    (["target_level=genus"], "target_level"),
    (["dataset.synthetic_preset=''", "dataset.path=/nonexistent/data"], "dataset.path"),
    (["executor.slurm.gpus_per_node=-1"], "gpus_per_node"),
    (["executor.slurm.gpu=1"], "executor.slurm.gpu"),
    (["executor.slurm.additional={'bad key': 1}"], "executor.slurm.additional"),
    (["executor.slurm.additional={partition: x}"], "executor.slurm.additional.partition"),
    (["transfer.set=[model.name=resnet10t]"], "transfer.set"),
    (["transfer.set=[optim.nme=sgd]"], "optim.nme"),
    (["run.model.name=no_such_model"], "run.model.name"),
    (["run.data.level=class"], "run.data.level"),
    (["seeds=[]"], "seeds"),
    (["run.data.batch_size=100000"], "run.data.batch_size"),
]


# every case with the local executor; the executor-related ones with slurm too (sbatch on PATH, no cluster
# needed: nothing may reach it)
@pytest.mark.parametrize("sets, key, executor", [(*b, "local") for b in BAD] +
                         [(*b, "slurm") for b in BAD if b[0][0].startswith(("executor", "pretrain_levels"))])
def test_bad_config_fails_before_submission(finished, tmp_path, capsys, sets, key, executor):
    _, _, _, root = finished
    if executor == "slurm" and not __import__("shutil").which("sbatch"):
        pytest.skip("sbatch not on PATH")
    base = tmp_path / "tiny.yaml"  # not the packaged default sweep (tuned for the demo): the schema's defaults
    base.write_text("name: tiny\n")
    args = ["sweep", str(base), "--executor", executor, "--out", str(tmp_path / "sw"),
            *[f"--set={s}" for s in (f"dataset.path={root / 'data'}", "dataset.synthetic_preset=tiny",
                                     "dataset.synthetic_set=[workers=1]",
                                     "run.model={name: bmlp, kwargs: {depth: 1, width: 8}}", "run.data.resolution=16",
                                     "run.data.batch_size=16",
                                     *sets)]]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert key in err, err
    assert not (tmp_path / "sw" / JOBS_FILE).exists() and not (tmp_path / "sw" / "runs").exists()


def test_sweep_config_file_and_packaged_default(tmp_path):
    cfg = sweep_config.load(sweep_config.sweep_file("default"))
    assert cfg.name == "default" and cfg.dataset.synthetic_preset == "default"
    f = tmp_path / "s.yaml"
    f.write_text("name: x\nseeds: [3]\nexecutor: {slurm: {partitoin: gpu}}\n")
    with pytest.raises(cfglib.ConfigError, match="executor.slurm.partitoin"):
        sweep_config.load(f)


def test_status_report_and_planning_do_not_import_torch():
    # `grainsweep status` / `report` and a rerun that skips everything should not pay torch/ffcv's import time
    import subprocess
    import sys

    code = ("import sys, launch.sweep, launch.status, launch.report, launch.plan; "
            "print(sorted(m for m in ('torch', 'ffcv', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_fields_added_later_keep_folder_names_at_their_defaults():
    from core.train.run_config import RunConfig
    config = RunConfig()
    hashed = planlib.hashed_config(config)
    for (section, key), default in planlib.LATER_FIELDS.items():  # as in a config from before the field existed
        assert getattr(getattr(config, section), key) == default and key not in hashed[section]
    changed = cfglib.with_values(config, {"data.resident": True})
    assert planlib.run_hash(changed, "pretrain") != planlib.run_hash(config, "pretrain")
    # keep_checkpoints changes no result: any value is hashed as 1 (the default when the first sweeps were named)
    for keep in (1, 2, 5):
        kept = cfglib.with_values(config, {"train.keep_checkpoints": keep})
        assert planlib.hashed_config(kept)["train"]["keep_checkpoints"] == 1
        assert planlib.run_hash(kept, "pretrain") == planlib.run_hash(config, "pretrain")
