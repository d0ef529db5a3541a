"""A sweep job of 2 SLURM tasks on the real local cluster (tests/slurm_cluster.py) is one 2-rank torch.distributed
run (gloo, from submitit's environment: launch/jobs.py): it trains, is preempted (submitit's Job._interrupt: SIGTERM,
then USR2 to every task), is requeued once (submitit's handler requeues from global rank 0 only) and resumes from
its last checkpoint; rank 0 alone writes the start log and the run folder. Its transfer runs on 2 tasks too."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import submitit

from core.format import run_folder
from launch import status, sweep
from launch.jobs import read_starts
from tests.slurm_cluster import job_field, slurm_cluster, wait_for  # noqa: F401
from tests.test_sweep_local import tiny_sweep


def _epochs_logged(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(x)["epoch"] for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def test_two_task_job_is_preempted_requeued_once_and_resumes(slurm_cluster, tmp_path):  # noqa: F811
    if slurm_cluster.cpus < 2:
        pytest.skip(f"the SLURM node has {slurm_cluster.cpus} CPU; 2 tasks of 1 CPU need 2")
    epochs = 8
    # one pretraining run (at the target level) and its transfer: every job takes both of the node's CPUs
    cfg = tiny_sweep(tmp_path / "data", "seeds=[0]", "pretrain_levels=[superclass]", "scratch.enabled=false",
                     "clustering.enabled=false", f"run.train={{epochs: {epochs}, eval_every: {epochs}}}",
                     f"executor.slurm={{partition: {slurm_cluster.partition}, cpus_per_task: 1, tasks_per_node: 2, "
                     "timeout_min: 60}")
    out = tmp_path / "sw"
    plan, records = sweep.run_sweep(cfg, out, executor="slurm")
    (spec,) = plan.stage(1)
    job_id = records[0]["jobs"][spec.name]
    run_dir = Path(spec.run_dir)
    all_ids = [jid for rec in records for jid in rec["jobs"].values()]

    def debug() -> str:
        q = subprocess.run(["squeue", "-o", "%i %T %r"], capture_output=True, text=True).stdout
        logs = [f"--- {p}\n" + p.read_text(errors="replace")[-2500:]
                for p in sorted((out / "submitit").glob("*/*_log.*"))]
        return q + "\n".join(logs)

    try:
        wait_for(lambda: len(_epochs_logged(run_dir)) >= 2, 600, "two epochs of the 2-task run", debug)
        assert len(_epochs_logged(run_dir)) < epochs, "the run finished before it could be interrupted"
        submitit.SlurmJob(out / "submitit" / "%j", job_id)._interrupt()  # a preemption: SIGTERM, then USR2
        wait_for(lambda: job_field(job_id, "Restarts") not in ("", "0"), 120, "the requeue", debug)
        rows = status.wait(out, timeout_s=1200, poll_s=1.0)  # a hang guard; jobs start ~10 s of imports a task
        assert [r["state"] for r in rows] == ["done"] * len(plan.jobs), debug()
        restarts = job_field(job_id, "Restarts")
    finally:
        subprocess.run(["scancel", *all_ids], capture_output=True)

    # requeued once, not once per task; one start line per start (rank 0's), the second resuming
    assert restarts == "1", debug()
    starts = read_starts(spec)
    assert len(starts) == 2, starts
    assert starts[0]["resume"] is False and starts[0]["from_epoch"] == 0
    assert starts[1]["resume"] is True and starts[1]["restart"] == 1 and 2 <= starts[1]["from_epoch"] < epochs
    # both tasks were ranks of the run; only rank 0 asked for the requeue
    logs = {t: "".join(p.read_text(errors="replace") for p in (out / "submitit" / job_id).glob(f"*_{t}_log.*"))
            for t in (0, 1)}
    assert "global_rank=1(2)" in logs[1] and "this job is preempted" in logs[0], debug()
    assert "Not checkpointing nor requeuing since I am a slave" in logs[1], debug()
    # rank 0 alone wrote the run folder: every epoch once (the one in flight at the signal redone)
    assert _epochs_logged(run_dir) == list(range(1, epochs + 1))
    assert json.loads((run_dir / run_folder.RESULT_FILE).read_text())["epochs"] == epochs
    (transfer,) = plan.stage(2)
    assert len(read_starts(transfer)) == 1 and run_folder.is_done(transfer.run_dir)
    assert not (out / "logs" / f"{spec.name}.error").exists()  # rank 1's loss of rank 0 at the requeue is no error
