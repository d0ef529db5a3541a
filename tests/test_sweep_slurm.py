"""A whole sweep through the real one-node SLURM cluster (tests/slurm_cluster.py): stage 1 as one job array,
stage 2 as a second array held by afterok on the first, status from squeue + submitit files, the report, and a
rerun that submits nothing. Real training (tiny preset, bmlp), no mocks.

Not covered yet: preempting a sweep job (requeue + resume from its checkpoint). On this cluster `scancel
--signal` exits 229 for the sweep's array tasks, and a SIGTERM+USR2 by hand ended the job without a requeue;
submitit's requeue of a plain Checkpointable job does work here (tests/test_slurm_cluster.py)."""

from __future__ import annotations

import csv
import json
import subprocess
import time
from pathlib import Path

import pytest

from core import train_run
from launch import executors, report, status, sweep
from launch.jobs import read_starts
from tests.slurm_cluster import slurm_cluster  # noqa: F401
from tests.test_sweep_local import tiny_sweep

POLL_S = 0.5


def _field(job_id: str, name: str) -> str:
    res = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True)
    for tok in res.stdout.split():
        if tok.startswith(name + "="):
            return tok.split("=", 1)[1]
    return ""


def _wait_for(predicate, timeout: float, what: str, debug=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(POLL_S)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{debug()}")


def test_sweep_on_slurm_arrays_afterok_rerun(slurm_cluster, tmp_path):  # noqa: F811
    root = tmp_path  # same machine: the jobs see it
    cfg = tiny_sweep(root / "data", "seeds=[0]", "run.train={epochs: 3, eval_every: 3}",
                     f"executor.slurm={{partition: {slurm_cluster.partition}, cpus_per_task: 1, timeout_min: 60}}")
    out = root / "sw"
    plan, records = sweep.run_sweep(cfg, out, executor="slurm")
    all_ids = [jid for rec in records for jid in rec["jobs"].values()]

    def debug() -> str:
        q = subprocess.run(["squeue", "-o", "%i %T %r"], capture_output=True, text=True).stdout
        logs = []
        for p in sorted((out / "submitit").glob("*/*_log.*"))[-6:]:
            logs.append(f"--- {p}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:]))
        return q + status.format_table(status.job_states(out)) + "\n" + "\n".join(logs)

    try:
        # two arrays: stage 1 (3 pretrain + 1 scratch), stage 2 (3 transfers) held by afterok on stage 1
        assert [r["stage"] for r in records] == [1, 2]
        s1, s2 = records
        assert len(s1["jobs"]) == 4 and len(s2["jobs"]) == 3
        assert all(jid.startswith(s1["array_id"] + "_") for jid in s1["jobs"].values())
        assert all(jid.startswith(s2["array_id"] + "_") for jid in s2["jobs"].values())
        assert s2["dependency"] == f"afterok:{s1['array_id']}"
        first_transfer = next(iter(s2["jobs"].values()))
        assert _field(first_transfer, "Dependency").startswith(f"afterok:{s1['array_id']}"), debug()
        # held by its dependency (the scheduler sets the reason within a couple of seconds of submission)
        _wait_for(lambda: slurm_cluster.job_state(first_transfer) == ("PENDING", "Dependency"), 20,
                  "stage 2 PENDING (Dependency)", debug)
        assert {r["state"] for r in status.job_states(out)} <= {"pending", "running"}

        rows = status.wait(out, timeout_s=180, poll_s=1.0)
        assert [r["state"] for r in rows] == ["done"] * len(plan.jobs), debug()
    finally:
        subprocess.run(["scancel", *all_ids], capture_output=True)

    # afterok: no transfer started before the last stage-1 run had finished
    stage1_end = max(Path(j.run_dir, train_run.RESULT_FILE).stat().st_mtime for j in plan.stage(1))
    transfer_starts = [read_starts(j)[0]["time"] for j in plan.stage(2)]
    assert min(transfer_starts) >= stage1_end - 1.0
    assert all(read_starts(j)[0]["array_job_id"] == s2["array_id"] for j in plan.stage(2))

    # the report has one row per setting
    files = report.write_report(out)
    with open(files["csv"]) as f:
        assert len(list(csv.DictReader(f))) == 4  # scratch + 3 pretraining levels (linear)

    # a rerun submits nothing (no new sbatch: jobs.json unchanged)
    before = (out / executors.JOBS_FILE).read_text()
    _, again = sweep.run_sweep(cfg, out, executor="slurm")
    assert again == [] and (out / executors.JOBS_FILE).read_text() == before
