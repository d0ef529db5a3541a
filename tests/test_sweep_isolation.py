"""A failed pretraining run holds back only its own transfers and clustering job (SLURM: afterok on its own
array task), `grainsweep status` shows them blocked by it, and a rerun retries it and its dependants only; the
local executor's slots run jobs at once in child processes, each stage-2 job after its own source, and a Ctrl-C
stops them all. Real sweeps (tiny preset, bmlp, 1 seed), the real local SLURM cluster, real processes.

The failure is planted, not mocked: a run folder's lock held by "another host" (core/format/lock.py), which the
run refuses in one line until the lock file is deleted by hand."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.format import config as cfglib, lock, run_folder
from launch import status, sweep
from launch.executors import records
from launch.jobs import read_starts
from launch.plan import load_plan, plan_sweep, prepare
from tests.slurm_cluster import job_field, slurm_cluster, wait_for  # noqa: F401
from tests.test_sweep_local import tiny_sweep

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The tiny dataset, converted once for the module."""
    path = tmp_path_factory.mktemp("isolation") / "data"
    prepare(tiny_sweep(path))
    return path


def plant_foreign_lock(run_dir: str) -> Path:
    """A lock on the run folder held by a process of another host: the run fails at once, naming it."""
    path = lock.lock_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "time": time.time(), "what": "planted",
                                "job": ""}))
    return path


def window(spec) -> tuple[float, float]:
    """(start, end) of a finished run: its first start log line, its result.json."""
    return read_starts(spec)[0]["time"], Path(spec.run_dir, run_folder.RESULT_FILE).stat().st_mtime


def test_failed_pretraining_run_holds_back_only_its_dependants_on_slurm(slurm_cluster, data, tmp_path):  # noqa: F811
    cfg = tiny_sweep(data, "seeds=[0]", "pretrain_levels=[subclass, superclass]",
                     "scratch.enabled=false", "run.train={epochs: 1, eval_every: 1}",
                     f"executor.slurm={{partition: {slurm_cluster.partition}, cpus_per_task: 1, timeout_min: 30}}")
    out = tmp_path / "sw"
    prepare(cfg)
    plan = plan_sweep(cfg, out)
    bad = next(j for j in plan.stage(1) if j.pretrain_level == "subclass")
    good = next(j for j in plan.stage(1) if j.pretrain_level == "superclass")
    bad_deps = sorted(j.name for j in plan.stage(2) if j.source_name == bad.name)
    good_deps = sorted(j.name for j in plan.stage(2) if j.source_name == good.name)
    assert len(bad_deps) == len(good_deps) == 2  # a linear transfer and a clustering job each
    planted = plant_foreign_lock(bad.run_dir)

    _, recs = sweep.run_sweep(cfg, out, executor="slurm")
    ids = [jid for rec in recs for jid in rec["jobs"].values()]

    def debug() -> str:
        q = subprocess.run(["squeue", "-o", "%i %T %r %E"], capture_output=True, text=True).stdout
        return q + status.format_table(status.job_states(out))

    try:
        # stage 1 as one array; per source run, an array of its dependants held by afterok on that run's task
        s1 = recs[0]
        assert s1["stage"] == 1 and sorted(s1["jobs"]) == sorted([bad.name, good.name])
        by_dep = {r["dependency"]: sorted(r["jobs"]) for r in recs[1:]}
        assert by_dep == {f"afterok:{s1['jobs'][bad.name]}": bad_deps, f"afterok:{s1['jobs'][good.name]}": good_deps}
        dependant = recs[1]["jobs"][next(iter(recs[1]["jobs"]))]
        assert job_field(dependant, "Dependency").startswith(recs[1]["dependency"]), debug()
        rows = {r["name"]: r for r in status.wait(out, timeout_s=480, poll_s=1.0)}
    finally:
        subprocess.run(["scancel", *ids], capture_output=True)

    # the good run and its dependants finished; the bad one failed, naming the lock; its dependants are blocked
    assert all(rows[n]["state"] == "done" for n in [good.name, *good_deps]), debug()
    assert rows[bad.name]["state"] == "failed" and "LockedError" in rows[bad.name]["note"], rows[bad.name]
    for name in bad_deps:
        assert rows[name]["state"] == "blocked" and rows[name]["note"] == f"blocked by {bad.name} (failed)", debug()
        assert not read_starts(load_spec(out, name))  # never started

    # the cause removed, a rerun submits the failed run and then its dependants, nothing else
    planted.unlink()
    good_starts = {n: len(read_starts(load_spec(out, n))) for n in [good.name, *good_deps]}
    _, again = sweep.run_sweep(cfg, out, executor="slurm")
    ids = [jid for rec in again for jid in rec["jobs"].values()]
    try:
        assert [list(r["jobs"]) for r in again[:1]] == [[bad.name]]
        assert [(r["dependency"], sorted(r["jobs"])) for r in again[1:]] == [
            (f"afterok:{again[0]['jobs'][bad.name]}", bad_deps)]
        rows = status.wait(out, timeout_s=480, poll_s=1.0)
    finally:
        subprocess.run(["scancel", *ids], capture_output=True)
    assert [r["state"] for r in rows] == ["done"] * len(plan.jobs), debug()
    assert {n: len(read_starts(load_spec(out, n))) for n in good_starts} == good_starts
    for name in bad_deps:  # each after its source had finished
        assert read_starts(load_spec(out, name))[0]["time"] >= window(bad)[1] - 1.0


def test_failed_local_run_blocks_its_dependants_and_a_rerun_retries_only_them(data, tmp_path):
    # the in-process executor (slots: 1): the same status and rerun as on SLURM, without a cluster
    cfg = tiny_sweep(data, "seeds=[0]", "pretrain_levels=[subclass, superclass]", "scratch.enabled=false",
                     "run.train={epochs: 1, eval_every: 1}")
    out = tmp_path / "sw"
    plan = plan_sweep(cfg, out)
    bad = next(j for j in plan.stage(1) if j.pretrain_level == "subclass")
    bad_deps = sorted(j.name for j in plan.stage(2) if j.source_name == bad.name)
    planted = plant_foreign_lock(bad.run_dir)
    sweep.run_sweep(cfg, out, executor="local")
    rows = {r["name"]: r for r in status.job_states(out)}
    assert rows[bad.name]["state"] == "failed" and "LockedError" in rows[bad.name]["note"]
    assert {n: (r["state"], r["note"]) for n, r in rows.items() if r["state"] != "done"} == {
        bad.name: ("failed", rows[bad.name]["note"]), **{n: ("blocked", f"blocked by {bad.name} (failed)")
                                                        for n in bad_deps}}
    assert len(bad_deps) == 2 and len(rows) == 6  # the other run, its transfer and clustering job are done
    assert all(not read_starts(load_spec(out, n)) for n in bad_deps)

    planted.unlink()
    before = {n: len(read_starts(load_spec(out, n))) for n in rows}
    _, recs = sweep.run_sweep(cfg, out, executor="local")
    assert list(recs[0]["jobs"]) == [bad.name, *[j.name for j in plan.stage(2) if j.source_name == bad.name]]
    assert [r["state"] for r in status.job_states(out)] == ["done"] * 6
    assert {n: len(read_starts(load_spec(out, n))) - k for n, k in before.items()} == {
        n: int(n in (bad.name, *bad_deps)) for n in rows}


def load_spec(sweep_dir: Path, name: str):
    return next(j for j in load_plan(sweep_dir).jobs if j.name == name)


def local_sweep_command(tmp_path: Path, data: Path, *sets: str) -> tuple[list[str], Path]:
    cfg = tiny_sweep(data, "seeds=[0]", "pretrain_levels=[subclass, superclass]", "scratch.enabled=false",
                     "clustering.enabled=false", "executor.local.slots=2", *sets)
    cfg_file = tmp_path / "sweep.yaml"
    cfg_file.write_text(cfglib.to_yaml(cfg))
    sw = tmp_path / "sw"
    return [sys.executable, "-m", "launch.cli", "sweep", str(cfg_file), "--executor", "local", "--out", str(sw)], sw


def running_rows(sw: Path) -> list[dict]:
    if not (sw / "plan.json").is_file():
        return []
    return [r for r in status.job_states(sw) if r["state"] == "running"]


def test_two_local_slots_run_jobs_at_once_each_after_its_source(data, tmp_path):
    command, sw = local_sweep_command(tmp_path, data, "run.train={epochs: 1, eval_every: 1}")
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # status of the live sweep: both pretraining runs running at once (two children), their transfers waiting
        wait_for(lambda: len(running_rows(sw)) == 2 or proc.poll() is not None, 300, "two jobs running")
        rows = {r["name"]: r for r in status.job_states(sw)}
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert sorted(r["kind"] for r in rows.values() if r["state"] == "running") == ["pretrain", "pretrain"]
        transfers = [r for r in rows.values() if r["kind"] == "transfer"]
        assert all(r["state"] == "pending" and r["note"].startswith("waits for ") for r in transfers), rows
        output, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output[-3000:]
    plan = load_plan(sw)
    assert [r["state"] for r in status.job_states(sw)] == ["done"] * len(plan.jobs)
    first, second = (window(j) for j in plan.stage(1))
    assert first[0] < second[1] and second[0] < first[1]  # their time windows overlap
    for job in plan.stage(2):  # each transfer started after its own source finished
        source = next(j for j in plan.stage(1) if j.name == job.source_name)
        assert window(job)[0] >= window(source)[1] - 1.0
    assert all((sw / "logs" / f"{j.name}.log").is_file() for j in plan.jobs)  # each child's output


def test_ctrl_c_stops_every_local_slot(data, tmp_path):
    # far more epochs than can run before the interrupt: the first run must still be training when the second
    # has started (200 epochs of the tiny data once finished in the time the second took to start)
    command, sw = local_sweep_command(tmp_path, data, "run.train={epochs: 100000, eval_every: 100000}")
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: len(running_rows(sw)) == 2 or proc.poll() is not None, 300, "two jobs running")
        plan = load_plan(sw)
        # each child holds its run folder's lock once its run has started
        wait_for(lambda: all(lock.owner(j.run_dir) for j in plan.stage(1)) or proc.poll() is not None, 300,
                 "both pretraining runs started")
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        pids = [lock.owner(j.run_dir)["pid"] for j in plan.stage(1)]
        assert len(set(pids)) == 2 and proc.pid not in pids
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, output[-3000:]
    assert not any(_alive(pid) for pid in pids)
    rows = {r["name"]: r for r in status.job_states(sw)}
    assert all(rows[j.name]["state"] == "todo" for j in plan.stage(1)), \
        ([(r["name"], r["state"], r["note"]) for r in rows.values()], output[-3000:])
    assert not any(lock.owner(j.run_dir) for j in plan.stage(1))  # released by the children themselves
    assert records.read_records(sw)[-1]["running"] == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
