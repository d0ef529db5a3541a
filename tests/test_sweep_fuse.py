"""Fused sweeps (`fuse.levels`, launch/fuse.py): a seed's pretraining runs at several levels train as one job, yet
every run keeps its own folder; the report is the one of the same sweep without fuse; a rerun trains only the
members that are not done; the slots executor runs a group as one child; planning groups by seed and
max_models; config errors name the key; on SLURM a group is one array task that its runs' transfers wait for,
requeued mid-training (as at a time limit) it resumes every member from its checkpoint."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from core.format import config as cfglib
from core.format.lock import FolderLock
from core.format.run_folder import is_done
from launch import fuse, report, status, sweep, sweep_config
from launch import plan as planlib
from launch.executors import records
from launch.jobs import read_starts
from tests.slurm_cluster import job_field, slurm_cluster, wait_for  # noqa: F401


def small_sweep(data: Path, *sets: str) -> sweep_config.SweepConfig:
    """The tiny preset's three levels, one seed, bmlp, 2 epochs; one linear transfer each; no scratch, no
    clustering (they do not depend on fuse)."""
    return cfglib.load(sweep_config.SweepConfig, None, [
        "name=fz", f"dataset.path={data}", "dataset.synthetic_preset=tiny", "dataset.synthetic_set=[workers=1]",
        "target_level=superclass", "seeds=[0]", "run.data={resolution: 16, batch_size: 16, workers: 1}",
        "run.model={name: bmlp, kwargs: {depth: 2, width: 32}}", "run.train={epochs: 2, eval_every: 2}",
        "run.optim={name: adamw, lr: 0.002, weight_decay: 0.05, warmup_epochs: 1.0}",
        "transfer.modes=[linear]", "transfer.set=[train.epochs=1]", "scratch.enabled=false",
        "clustering.enabled=false", *sets])


def rows(path: Path) -> dict[tuple, dict]:
    """A report csv's rows by what they are about (every column but the measured ones)."""
    with open(path) as f:
        return {tuple(v for k, v in r.items() if not k.startswith("acc_")): r for r in csv.DictReader(f)}


def same_rows(a: Path, b: Path) -> None:
    ra, rb = rows(a), rows(b)
    assert ra.keys() == rb.keys() and ra
    for key, row in ra.items():
        for col, value in row.items():
            try:
                assert float(value) == pytest.approx(float(rb[key][col]), abs=1e-4), (key, col)
            except ValueError:
                assert value == rb[key][col], (key, col)


def tree_mtimes(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("fuse") / "data"
    planlib.prepare(small_sweep(data))  # converts the tiny preset
    return data


@pytest.fixture(scope="module")
def sweeps(data):
    """The same sweep twice, both with the local executor in-process: without fuse, and fused."""
    root = data.parent
    sep_plan, _ = sweep.run_sweep(small_sweep(data), root / "sep", executor="local")
    cfg = small_sweep(data, "fuse.levels=true")
    fused_plan, recs = sweep.run_sweep(cfg, root / "fused", executor="local")
    return data, sep_plan, fused_plan, recs


def test_fused_sweep_reports_what_the_separate_one_does(sweeps):
    _, sep, fused, recs = sweeps
    assert [j.name for j in sep.jobs] == [j.name for j in fused.jobs]  # same runs, same folders
    (name, members), = fuse.groups(fused.jobs).items()
    assert [m.pretrain_level for m in members] == ["subclass", "class", "superclass"]
    assert all(not j.group for j in sep.jobs) and all(not j.group for j in fused.stage(2))
    assert json.loads((fused.sweep_dir / planlib.PLAN_FILE).read_text())["jobs"][0]["group"] == name
    assert all(is_done(j.run_dir) for j in fused.jobs)
    assert set(recs[0]["states"].values()) == {"done"} and len(recs[0]["states"]) == len(fused.jobs)
    same_rows(report.write_report(sep.sweep_dir)["csv"], report.write_report(fused.sweep_dir)["csv"])
    same_rows(sep.sweep_dir / "report-pretrained.csv", fused.sweep_dir / "report-pretrained.csv")


def test_status_shows_every_member_running_while_the_group_runs(sweeps, tmp_path):
    _, _, fused, _ = sweeps
    copy = tmp_path / "copy"
    shutil.copytree(fused.sweep_dir, copy)
    (name, members), = fuse.groups(fused.jobs).items()
    done, left = members[0], members[1:]
    for m in left:
        (copy / planlib.RUNS_DIR / m.name / "result.json").unlink()
    with FolderLock(copy, what="test"):  # a live local sweep on the group: its record names the members running
        records.append_record(copy, {"time": time.time(), "executor": "local", "states": {},
                                     "jobs": {m.name: "local" for m in members}, "running": [m.name for m in members]})
        by_name = {r["name"]: r for r in status.job_states(copy)}
    assert by_name[done.name]["state"] == "done"  # its result.json is there
    for m in left:
        assert by_name[m.name]["state"] == "running" and name in by_name[m.name]["note"]


def test_rerun_trains_only_the_unfinished_members_in_one_slots_child(sweeps, capsys):
    data, _, fused, _ = sweeps
    (name, members), = fuse.groups(fused.jobs).items()
    gone, reset, kept = members
    shutil.rmtree(gone.run_dir)  # a member lost, another reset to no result and no checkpoint
    (Path(reset.run_dir) / "result.json").unlink()
    shutil.rmtree(Path(reset.run_dir) / "checkpoints")
    before = {j.name: tree_mtimes(Path(j.run_dir)) for j in fused.jobs if j not in (gone, reset)}
    capsys.readouterr()
    cfg = small_sweep(data, "fuse.levels=true", "executor.local.slots=2")
    _, recs = sweep.run_sweep(cfg, fused.sweep_dir, executor="local")
    out = capsys.readouterr().out
    assert "2 to run" in out and f"{name} (fused: {gone.name}, {reset.name})" in out
    assert recs[0]["states"] == {gone.name: "done", reset.name: "done"}
    logs = fused.sweep_dir / planlib.LOGS_DIR
    assert (logs / f"{name}.log").is_file()  # one child for the group
    assert not any((logs / f"{m.name}.log").exists() for m in members)
    assert is_done(gone.run_dir) and is_done(reset.run_dir)
    # the finished member and the transfers (done) untouched
    assert {j.name: tree_mtimes(Path(j.run_dir)) for j in fused.jobs if j not in (gone, reset)} == before
    assert [len(read_starts(m)) for m in members] == [2, 2, 1]
    assert read_starts(reset)[-1]["resume"] and not read_starts(gone)[-1]["resume"]
    assert {r["state"] for r in status.job_states(fused.sweep_dir)} == {"done"}


def test_plan_groups_by_seed_and_max_models(data, tmp_path):
    arms = ("seeds=[0, 1]", "multilevel.enabled=true", "hierarchies={enabled: true, random: {groups: [2]}}")
    cfg = small_sweep(data, *arms, "fuse={levels: true, max_models: 3}")
    planlib.prepare(cfg)  # derives the random level into the dataset folder
    plan = planlib.plan_sweep(cfg, tmp_path / "p")
    plain = planlib.plan_sweep(small_sweep(data, *arms), tmp_path / "p")
    assert [j.name for j in plan.jobs] == [j.name for j in plain.jobs]  # fuse does not rename runs
    found = fuse.groups(plan.jobs)
    # per seed: 3 taxonomy levels + the random control = 4 runs, cut by max_models into 3 + 1 (no group of one)
    assert sorted(len(m) for m in found.values()) == [3, 3]
    for name, members in found.items():
        assert len({m.seed for m in members}) == 1 and name.startswith(f"fused-s{members[0].seed}-")
        assert all(m.kind == "pretrain" and m.arm in ("", "random") for m in members)
    alone = [j for j in plan.stage(1) if j.kind == "pretrain" and not j.group]
    assert sorted(j.arm for j in alone) == ["multilevel", "multilevel", "random", "random"]  # another objective
    cfg4 = small_sweep(data, *arms, "fuse.levels=true")  # no cap: a seed's 4 runs in one job
    assert sorted(len(m) for m in fuse.groups(planlib.plan_sweep(cfg4, tmp_path / "p").jobs).values()) == [4, 4]
    plan.save()
    assert [j.group for j in planlib.load_plan(tmp_path / "p").jobs] == [j.group for j in plan.jobs]
    text = sweep.dry_run(cfg, tmp_path / "p", executor="local")[1]
    assert all(name in text for name in found) and "fused: 6 pretraining runs in 2 jobs" in text


def test_a_group_splits_where_the_device_memory_is_short(data, tmp_path):
    from core.train.fused import estimate_bytes

    plan = planlib.plan_sweep(small_sweep(data, "fuse.levels=true"), tmp_path / "p")
    (_, members), = fuse.groups(plan.jobs).items()
    cfgs = [m.config for m in members]
    two = estimate_bytes(cfgs[:2])
    assert estimate_bytes(cfgs) > two > estimate_bytes(cfgs[:1]) > 0
    assert fuse.split(cfgs, two, estimate_bytes) == [cfgs[:2], cfgs[2:]]
    assert fuse.split(cfgs, estimate_bytes(cfgs), estimate_bytes) == [cfgs]
    assert fuse.split(cfgs, 1, estimate_bytes) == [[c] for c in cfgs]  # a model too large alone still runs
    budget, where = fuse.device_bytes(cfgs[0])
    assert budget > 0 and where.startswith("RAM")


@pytest.mark.parametrize("value, message", [("0", "fuse.max_models must be >= 1, got 0"),
                                            ("two", "fuse.max_models")])
def test_bad_fuse_config_names_the_key(value, message):
    with pytest.raises(cfglib.ConfigError, match=message.replace(".", r"\.")):
        sweep_config.load(None, ["fuse.levels=true", f"fuse.max_models={value}"])


def _epochs_logged(run_dir: str | Path) -> list[int]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(x)["epoch"] for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def test_fused_sweep_on_slurm_is_one_task_per_group_and_resumes_every_member_when_requeued(
        slurm_cluster, data, tmp_path):  # noqa: F811
    # two levels: the node's two CPUs run both transfers at once. The group's task is interrupted mid-training as
    # SLURM does at a time limit (USR2; timeout_min=5 makes submitit read it as a timeout and requeue): every member
    # must resume from its checkpoint. Far more epochs than can run between the 2nd epoch and the signal's handler
    # (tests/test_sweep_slurm.py: with 10 a run once finished first)
    epochs = 40
    cfg = small_sweep(data, "fuse.levels=true", "pretrain_levels=[class, superclass]",
                      f"run.train={{epochs: {epochs}, eval_every: {epochs}}}",
                      f"executor.slurm={{partition: {slurm_cluster.partition}, cpus_per_task: 1, timeout_min: 5}}")
    out = tmp_path / "sw"
    plan, recs = sweep.run_sweep(cfg, out, executor="slurm")
    ids = [jid for rec in recs for jid in rec["jobs"].values()]
    (name, members), = fuse.groups(plan.jobs).items()
    s1, s2 = recs  # stage 2: one array, every transfer after the group's task
    task = s1["groups"][name]

    def debug() -> str:
        q = subprocess.run(["squeue", "-o", "%i %T %r"], capture_output=True, text=True).stdout
        logs = [f"--- {p}\n" + p.read_text(errors="replace")[-2500:]
                for p in sorted((out / "submitit").glob(f"{task.split('_')[0]}*/*_log.*"))]
        return q + "\n".join(logs)

    try:
        assert s1["jobs"] == {m.name: task for m in members}
        assert s2["dependency"] == f"afterok:{task}" and len(s2["jobs"]) == len(plan.stage(2))
        wait_for(lambda: all(len(_epochs_logged(m.run_dir)) >= 2 for m in members), 180,
                 "two epochs of every member", debug)
        assert len(_epochs_logged(members[0].run_dir)) < epochs, "the group finished before it could be interrupted"
        res = subprocess.run(["scancel", task, "--signal", "USR2"], capture_output=True, text=True)
        assert res.returncode == 0, (res.stderr, debug())
        wait_for(lambda: job_field(task, "Restarts") not in ("", "0"), 60, "the requeue (Restarts >= 1)", debug)
        rows = status.wait(out, timeout_s=480, poll_s=1.0)
        assert [r["state"] for r in rows] == ["done"] * len(plan.jobs), status.format_table(rows) + debug()
        assert {r["job_id"] for r in rows if r["name"] in s1["jobs"]} == {task}
    finally:
        subprocess.run(["scancel", *ids], capture_output=True)
    for m in members:  # one job for the group, started twice; each member resumed from its own checkpoint
        starts = read_starts(m)
        assert len(starts) == 2, (m.name, starts)
        assert starts[0]["resume"] is False and starts[0]["from_epoch"] == 0
        assert starts[1]["resume"] is True and starts[1]["restart"] >= 1 and 2 <= starts[1]["from_epoch"] < epochs
        # the group's task, not a job of its own (one task: submitit submits a plain job, no array id)
        assert {s["array_job_id"] or s["job_id"] for s in starts} == {task.split("_")[0]}
        # every epoch logged once (the epoch in flight at the signal is redone, its partial record dropped)
        assert _epochs_logged(m.run_dir) == list(range(1, epochs + 1)), m.name
        assert json.loads(Path(m.run_dir, "result.json").read_text())["epochs"] == epochs
    for t in plan.stage(2):  # afterok on the group: after its last member finished
        assert read_starts(t)[0]["time"] >= max(Path(m.run_dir, "result.json").stat().st_mtime for m in members) - 1
