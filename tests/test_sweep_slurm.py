"""A whole sweep through the real one-node SLURM cluster (tests/slurm_cluster.py): stage 1 as one job array,
stage 2 as one array per pretraining run held by afterok on its task, status from squeue + submitit files, the
report, and a rerun that submits nothing; a preempted or timed-out sweep job requeued by submitit that resumes
from its last checkpoint. Real training (tiny preset, bmlp), no mocks.

Signals go to a task only once it runs: `scancel --signal` on a PENDING array task fails (exit 229), which is
why the tests wait for the run's first checkpoint before interrupting it."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from core.format import run_folder
from launch import executors, report, status, sweep
from launch.executors.records import JOBS_FILE
from launch.executors.slurm import SlurmExecutor
from launch.plan import plan_sweep, prepare
from launch.jobs import read_starts
from tests.slurm_cluster import job_field, slurm_cluster, wait_for  # noqa: F401
from tests.test_sweep_local import tiny_sweep

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
        # stage 1 as one array (3 pretrain + 1 scratch); stage 2 as one array per pretraining run (its transfer
        # and clustering job) held by afterok on that run's own task
        assert [r["stage"] for r in records] == [1, 2, 2, 2]
        s1, s2 = records[0], records[1]
        assert len(s1["jobs"]) == 4 and all(len(r["jobs"]) == 2 for r in records[1:])
        assert sorted(j.kind for j in plan.stage(2)) == ["cluster"] * 3 + ["transfer"] * 3
        assert all(jid.startswith(s1["array_id"] + "_") for jid in s1["jobs"].values())
        by_name = {j.name: j for j in plan.jobs}
        for rec in records[1:]:
            assert all(jid.startswith(rec["array_id"] + "_") for jid in rec["jobs"].values())
            assert {rec["dependency"]} == {f"afterok:{s1['jobs'][by_name[n].source_name]}" for n in rec["jobs"]}
        first_transfer = next(iter(s2["jobs"].values()))
        assert job_field(first_transfer, "Dependency").startswith(s2["dependency"]), debug()
        # held by its dependency (the scheduler sets the reason within a couple of seconds of submission)
        wait_for(lambda: slurm_cluster.job_state(first_transfer) == ("PENDING", "Dependency"), 20,
                  "stage 2 PENDING (Dependency)", debug)
        assert {r["state"] for r in status.job_states(out)} <= {"pending", "running"}

        rows = status.wait(out, timeout_s=480, poll_s=1.0)
        assert [r["state"] for r in rows] == ["done"] * len(plan.jobs), debug()
    finally:
        subprocess.run(["scancel", *all_ids], capture_output=True)

    # afterok: no transfer or clustering job started before its own pretraining run had finished
    for job in plan.stage(2):
        source_end = Path(job.source, run_folder.RESULT_FILE).stat().st_mtime
        assert read_starts(job)[0]["time"] >= source_end - 1.0
        assert read_starts(job)[0]["array_job_id"] == next(r["array_id"] for r in records if job.name in r["jobs"])

    # the report has one row per setting
    files = report.write_report(out)
    with open(files["csv"]) as f:
        assert len(list(csv.DictReader(f))) == 4  # scratch + 3 pretraining levels (linear)

    # a rerun submits nothing (no new sbatch: jobs.json unchanged)
    before = (out / JOBS_FILE).read_text()
    _, again = sweep.run_sweep(cfg, out, executor="slurm")
    assert again == [] and (out / JOBS_FILE).read_text() == before


def _epochs_logged(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(x)["epoch"] for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


@pytest.mark.parametrize("timeout", [False, True], ids=["preemption", "timeout"])
def test_interrupted_sweep_job_is_requeued_and_resumes(slurm_cluster, tmp_path, timeout):  # noqa: F811
    # submitit tells a timeout from a preemption by the job's walltime against its limit (tests/slurm_cluster.py):
    # with timeout_min=5 any USR2 counts as a timeout (requeued up to max_num_timeout times), with 60 as a
    # preemption (SIGTERM first, then USR2; requeued without limit)
    # enough epochs that the run cannot finish between its second epoch and the signal's handler (with 10 it once
    # did: the requeued job then found result.json and returned without a second start)
    epochs = 40
    cfg = tiny_sweep(tmp_path / "data", "seeds=[0]", "pretrain_levels=[subclass]", "scratch.enabled=false",
                     "clustering.enabled=false",
                     f"run.train={{epochs: {epochs}, eval_every: {epochs}}}",
                     f"executor.slurm={{partition: {slurm_cluster.partition}, cpus_per_task: 1, "
                     f"timeout_min: {5 if timeout else 60}}}")
    out = tmp_path / "sw"
    plan, records = sweep.run_sweep(cfg, out, executor="slurm")
    spec = next(j for j in plan.stage(1) if j.pretrain_level == "subclass")
    job_id = records[0]["jobs"][spec.name]
    run_dir = Path(spec.run_dir)
    all_ids = [jid for rec in records for jid in rec["jobs"].values()]

    def debug() -> str:
        q = subprocess.run(["squeue", "-o", "%i %T %r"], capture_output=True, text=True).stdout
        logs = [f"--- {p}\n" + p.read_text(errors="replace")[-2500:]
                for p in sorted((out / "submitit").glob(f"{job_id}*/*_log.*"))]
        return q + "\n".join(logs)

    try:
        # interrupt mid-training: after its second epoch's checkpoint, well before the last epoch
        wait_for(lambda: len(_epochs_logged(run_dir)) >= 2, 120, "two epochs of the pretraining run", debug)
        assert len(_epochs_logged(run_dir)) < epochs, "the run finished before it could be interrupted"
        signals = ["USR2"] if timeout else ["SIGTERM", "USR2"]
        for sig in signals:  # what submitit's Job._interrupt sends; SLURM sends the same on preemption / limit
            res = subprocess.run(["scancel", job_id, "--signal", sig], capture_output=True, text=True)
            assert res.returncode == 0, (sig, res.stderr, debug())
        wait_for(lambda: job_field(job_id, "Restarts") not in ("", "0"), 60, "the requeue (Restarts >= 1)", debug)
        rows = status.wait(out, timeout_s=300, poll_s=1.0)
        assert [r["state"] for r in rows] == ["done"] * len(plan.jobs), debug()
    finally:
        subprocess.run(["scancel", *all_ids], capture_output=True)

    starts = read_starts(spec)
    assert len(starts) == 2, starts
    assert starts[0]["resume"] is False and starts[0]["from_epoch"] == 0
    assert starts[1]["resume"] is True and starts[1]["restart"] >= 1
    assert 2 <= starts[1]["from_epoch"] < epochs  # resumed from its checkpoint, not restarted from scratch
    assert starts[1]["array_job_id"] == records[0]["array_id"]
    # every epoch logged once (the epoch in flight at the signal is redone, its partial record dropped)
    assert _epochs_logged(run_dir) == list(range(1, epochs + 1))
    assert json.loads((run_dir / run_folder.RESULT_FILE).read_text())["epochs"] == epochs
    # the requeued job kept its transfer waiting: afterok held until the resumed run succeeded
    transfer = next(j for j in plan.stage(2) if j.kind == "transfer" and j.source == spec.run_dir)
    assert read_starts(transfer)[0]["time"] >= (run_dir / run_folder.RESULT_FILE).stat().st_mtime - 1.0
    log = "".join(p.read_text(errors="replace") for p in (out / "submitit").glob(f"{job_id}*/*_log.err"))
    assert ("this job is timed-out" if timeout else "this job is preempted") in log, log[-3000:]


def test_auto_picks_the_live_cluster_and_a_failed_job_is_read_as_text(slurm_cluster, tmp_path):  # noqa: F811
    # the controller answers, so `auto` is SLURM; a job that fails (a transfer submitted without its pretraining
    # run) is "failed" with its error line, read from the run's error log (text), not from submitit's pickle
    assert SlurmExecutor.unavailable() is None
    cfg = tiny_sweep(tmp_path / "data", "seeds=[0]", "pretrain_levels=[superclass]", "scratch.enabled=false",
                     "clustering.enabled=false",
                     f"executor.slurm={{partition: {slurm_cluster.partition}, cpus_per_task: 1, timeout_min: 10}}")
    out = tmp_path / "sw"
    ex = executors.resolve("auto", cfg.executor, out)
    assert isinstance(ex, SlurmExecutor)
    prepare(cfg)
    plan = plan_sweep(cfg, out)
    plan.save()
    transfer = next(j for j in plan.jobs if j.kind == "transfer")
    recs = ex.submit(plan, [transfer])
    try:
        rows = {r["name"]: r for r in status.wait(out, timeout_s=240, poll_s=1.0)}
    finally:
        subprocess.run(["scancel", *recs[0]["jobs"].values()], capture_output=True)
    row = rows[transfer.name]
    assert row["state"] == "failed" and row["job_id"] == recs[0]["jobs"][transfer.name], row
    assert row["note"].startswith("RuntimeError") and "has not finished" in row["note"], row
