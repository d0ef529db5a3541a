"""submitit against a real one-node SLURM cluster (tests/slurm_cluster.py): arrays, dependencies, requeue.

No mocks: every job goes through sbatch/slurmctld/slurmd. There is no accounting database, so sacct
fails; submitit logs "Bypassing sacct error" and still collects results from its own folder. Job
states are read with `scontrol show job` instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit

from tests.slurm_cluster import job_field, slurm_cluster, wait_for  # noqa: F401

# Jobs unpickle the submitted callables; pickle this module's functions/classes by value so a job does
# not need to import `tests.test_slurm_cluster` (its cwd/sys.path need not contain the repository).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

POLL_S = 0.25


# --------------------------------------------------------------------------- job functions (run in jobs)


def square(x: int) -> dict:
    return {"x": x, "square": x * x, "array_task": os.environ.get("SLURM_ARRAY_TASK_ID"),
            "job_id": os.environ.get("SLURM_JOB_ID")}


def stamp(name: str, folder: str, sleep_s: float = 0.0) -> dict:
    """Record when this job started and ended (same machine: one clock)."""
    start = time.time()
    time.sleep(sleep_s)
    rec = {"name": name, "start": start, "end": time.time(), "job_id": os.environ.get("SLURM_JOB_ID")}
    Path(folder, f"{name}.json").write_text(json.dumps(rec))
    return rec


def fail(message: str) -> None:
    raise RuntimeError(message)


class CountTo(submitit.helpers.Checkpointable):
    """Counts to `n`, saving progress after every step; a requeued run resumes from the progress file."""

    def __call__(self, n: int, progress: str, step_s: float = 0.25) -> dict:
        path = Path(progress)
        i = int(path.read_text()) if path.exists() else 0
        with open(path.with_suffix(".starts"), "a") as f:  # one line per (re)start
            f.write(f"{i} {os.environ.get('SLURM_RESTART_COUNT', '0')}\n")
        while i < n:
            time.sleep(step_s)
            i += 1
            tmp = path.with_suffix(".tmp")
            tmp.write_text(str(i))
            os.replace(tmp, path)
        return {"count": i, "restarts": int(os.environ.get("SLURM_RESTART_COUNT", "0"))}


# --------------------------------------------------------------------------- helpers


def _executor(cluster, folder: Path, **params) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    assert ex.cluster == "slurm"
    ex.update_parameters(slurm_partition=cluster.partition, timeout_min=params.pop("timeout_min", 5),
                         cpus_per_task=1, **params)
    return ex


def _debug(cluster, jobs) -> str:
    out = [subprocess.run(["squeue", "-o", "%i %T %r %S"], capture_output=True, text=True).stdout]
    for job in jobs:
        out.append(f"--- job {job.job_id} scontrol state {cluster.job_state(job.job_id)}")
        for kind in ("stdout", "stderr"):
            try:
                text = getattr(job, kind)() or ""
            except Exception as e:  # noqa: BLE001
                text = f"<{e}>"
            out.append(f"{kind}:\n" + "\n".join(text.splitlines()[-20:]))
    out.append(cluster.log_tail(15))
    return "\n".join(out)


def _wait_done(cluster, jobs, timeout: float) -> None:
    """Poll (short sleeps) until every submitit job has its result file; fail with logs on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(job.done() for job in jobs):
            return
        time.sleep(POLL_S)
    pytest.fail(f"jobs not done after {timeout:.0f} s:\n{_debug(cluster, jobs)}")


def _scancel(*job_ids: str) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, text=True)


# --------------------------------------------------------------------------- tests


def test_cluster_is_up(slurm_cluster):  # noqa: F811
    res = subprocess.run(["sinfo", "-h", "-o", "%P %a %D %N"], capture_output=True, text=True, check=True)
    assert res.stdout.split() == [f"{slurm_cluster.partition}*", "up", "1", slurm_cluster.hostname], res.stdout
    assert slurm_cluster.scratch.is_dir() and slurm_cluster.cpus >= 1


def test_job_array_map_array(slurm_cluster, tmp_path):  # noqa: F811
    ex = _executor(slurm_cluster, tmp_path, slurm_array_parallelism=4)
    xs = [1, 2, 3, 4, 5]
    jobs = ex.map_array(square, xs)
    try:
        array_ids = {job.job_id.split("_")[0] for job in jobs}
        assert len(array_ids) == 1, [j.job_id for j in jobs]
        assert [job.job_id.split("_")[1] for job in jobs] == [str(i) for i in range(len(xs))]
        _wait_done(slurm_cluster, jobs, timeout=60)
        results = [job.result() for job in jobs]
    finally:
        _scancel(*(j.job_id for j in jobs))
    assert [r["square"] for r in results] == [x * x for x in xs]
    assert [r["array_task"] for r in results] == [str(i) for i in range(len(xs))]
    assert len({r["job_id"] for r in results}) == len(xs)  # each task is its own SLURM job


def test_afterok_dependencies_order_jobs(slurm_cluster, tmp_path):  # noqa: F811
    """single job A -> array B (afterok:A) -> job C (afterok:<B's array job id>)."""
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    ex = _executor(slurm_cluster, tmp_path)
    submitted = []
    try:
        a = ex.submit(stamp, "a", str(stamps), 2.0)
        submitted.append(a)
        ex.update_parameters(slurm_dependency=f"afterok:{a.job_id}")
        bs = ex.map_array(stamp, ["b0", "b1", "b2"], [str(stamps)] * 3, [0.5] * 3)
        submitted += bs
        b_array = bs[0].job_id.split("_")[0]
        ex.update_parameters(slurm_dependency=f"afterok:{b_array}")
        c = ex.submit(stamp, "c", str(stamps))
        submitted.append(c)

        # while A runs, C is held by its dependency
        state, reason = slurm_cluster.job_state(c.job_id)
        assert (state, reason) == ("PENDING", "Dependency"), _debug(slurm_cluster, submitted)
        assert job_field(c.job_id, "Dependency").startswith(f"afterok:{b_array}")

        _wait_done(slurm_cluster, submitted, timeout=90)
        ra, rbs, rc = a.result(), [b.result() for b in bs], c.result()
    finally:
        _scancel(*(j.job_id for j in submitted))
    assert min(rb["start"] for rb in rbs) >= ra["end"], (ra, rbs)
    assert rc["start"] >= max(rb["end"] for rb in rbs), (rbs, rc)
    assert sorted(p.name for p in stamps.iterdir()) == ["a.json", "b0.json", "b1.json", "b2.json", "c.json"]


def test_afterok_on_failing_job_never_runs(slurm_cluster, tmp_path):  # noqa: F811
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    ex = _executor(slurm_cluster, tmp_path)
    bad = ex.submit(fail, "boom from the first job")
    ex.update_parameters(slurm_dependency=f"afterok:{bad.job_id}")
    dependent = ex.submit(stamp, "never", str(stamps))
    try:
        _wait_done(slurm_cluster, [bad], timeout=60)
        with pytest.raises(submitit.core.utils.FailedJobError, match="boom from the first job"):
            bad.result()
        # slurm.conf has SchedulerParameters=kill_invalid_depend: the dependent job is cancelled with
        # reason DependencyNeverSatisfied (without it, it would stay PENDING with that reason forever).
        state, reason = wait_for(
            lambda: (lambda s: s if s[1] == "DependencyNeverSatisfied" else None)(
                slurm_cluster.job_state(dependent.job_id)),
            timeout=30, what="DependencyNeverSatisfied", debug=lambda: _debug(slurm_cluster, [bad, dependent]))
        assert state in ("CANCELLED", "PENDING"), (state, reason)
        time.sleep(1.0)
        assert slurm_cluster.job_state(dependent.job_id)[0] in ("CANCELLED", "PENDING")
        assert not (stamps / "never.json").exists()
        assert not dependent.paths.result_pickle.exists()
    finally:
        _scancel(bad.job_id, dependent.job_id)  # never leave it pending


@pytest.mark.parametrize("timeout", [False, True], ids=["preemption", "timeout"])
def test_checkpointable_job_is_requeued_and_resumes(slurm_cluster, tmp_path, timeout):  # noqa: F811
    # submitit decides "timed out" vs "preempted" from the job's walltime, not from the signal:
    # timed out iff walltime >= min(0.8 * limit, limit - 10 min). With a 5 min limit that bound is
    # negative, so any USR2 counts as a timeout; with 60 min, a USR2 a few seconds in is a preemption.
    ex = _executor(slurm_cluster, tmp_path, timeout_min=5 if timeout else 60)
    progress = tmp_path / "progress.txt"
    n = 16
    job = ex.submit(CountTo(), n, str(progress))
    try:
        wait_for(lambda: progress.exists() and int(progress.read_text() or 0) >= 3, timeout=60,
                  what="progress >= 3", debug=lambda: _debug(slurm_cluster, [job]))
        job._interrupt(timeout=timeout)  # scancel --signal [SIGTERM then] USR2
        # the job checkpoints, calls `scontrol requeue` on itself and exits; SLURM holds it PENDING
        # (Reason=BeginTime) for AuthInfo cred_expire (10 s in our slurm.conf; 120 s by default)
        wait_for(lambda: job_field(job.job_id, "Restarts") not in ("", "0"), timeout=30,
                  what="requeue (Restarts >= 1)", debug=lambda: _debug(slurm_cluster, [job]))
        _wait_done(slurm_cluster, [job], timeout=90)
        result = job.result()
    finally:
        _scancel(job.job_id)
    assert result["count"] == n
    assert result["restarts"] >= 1
    starts = [line.split() for line in progress.with_suffix(".starts").read_text().splitlines()]
    assert len(starts) == 2, starts
    assert starts[0][0] == "0" and 3 <= int(starts[1][0]) < n, starts  # resumed, not restarted from 0
    log = job.stderr() + job.stdout()
    assert ("this job is timed-out" if timeout else "this job is preempted") in log, log[-3000:]
