"""The job a sweep runs: one run of core, as its sweep arm runs it (launch/arms/), requeueable on SLURM.

`RunJob` is a submitit Checkpointable: on a preemption or timeout signal submitit calls `checkpoint()`, which
returns the same call with resume=True; SLURM requeues it and train_run continues from the run folder's newest
checkpoint (epoch granularity: the epoch in flight is redone). A job whose run is already finished returns its
result.json at once. Each start appends a line to <sweep>/logs/<run>.starts.jsonl (time, job id, restart count,
the checkpoint epoch it starts from), which is how a resumed start can be told from a fresh one.

A job of several SLURM tasks (executor.slurm nodes x tasks_per_node) is one torch.distributed run: each task
exports RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT from submitit's environment
(submitit.helpers.TorchDistributedEnvironment) and core creates the process group from them. Only rank 0 writes
the start log. A preemption or timeout signal reaches every task, but submitit's handler checkpoints and
requeues from global rank 0 only (the others log "Not checkpointing nor requeuing since I am a slave"), so the
job is requeued once and all its tasks start again. Only rank 0's error goes to logs/<run>.error. Arms whose jobs
are not distributed (`one_process`) run on rank 0 alone; the other tasks return at once.

A fused group (launch/fuse.py) is one job called with the list of its members: each member gets its own start
log line, finished members are skipped, and a requeue resumes every unfinished member (resume=True for all).
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from pathlib import Path

import submitit

from core.format.run_folder import RunFolder
from launch import arms
from launch.plan import JobSpec


class RunJob(submitit.helpers.Checkpointable):
    def __call__(self, spec: JobSpec | list[JobSpec], resume: bool = False) -> dict | list[dict]:
        """Runs one run, or (a list) a fused group's members as one job (launch/fuse.py): finished members are
        skipped, the others resume as a single run would."""
        specs = spec if isinstance(spec, list) else [spec]
        # one compile cache for every job of the sweep, so reruns and requeues do not recompile
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(specs[0].cache_dir)
        folders = [RunFolder(s.run_dir) for s in specs]
        if all(f.is_done() for f in folders):
            results = [f.result() for f in folders]
            return results if isinstance(spec, list) else results[0]
        todo = [(s, f) for s, f in zip(specs, folders) if not f.is_done()]
        arm = arms.runner(specs[0].kind, specs[0].mode, specs[0].arm)
        rank, tasks = _tasks()
        if tasks > 1 and arm.one_process:
            if rank != 0:
                return {}
            tasks = 1  # rank 0 runs it as a job of one process
        if tasks > 1:
            # overwrite: inside a SLURM task its environment is the truth (an sbatch may inherit a shell's RANK);
            # CUDA_VISIBLE_DEVICES is left to SLURM and core (device LOCAL_RANK of the node's GPUs)
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        # a folder with a started run is continued (requeue, or a rerun of the sweep after a crash)
        # (the sweep owns the folder: anything in it was written by an earlier start of this job); a group resumes
        # as a whole: a member with no checkpoint yet starts fresh (core/train/run.py)
        started = [resume or f.holds_run() for _, f in todo]
        if rank == 0:
            for (s, f), st in zip(todo, started):
                _log_start(s, f, st)
        for s, _ in todo:
            if s.source and not RunFolder(s.source).is_done():
                raise RuntimeError(f"{s.name}: its pretraining run {s.source} has not finished")

        def go(resume: bool) -> dict | list[dict]:
            if isinstance(spec, list):
                from launch import fuse

                return fuse.train([s for s, _ in todo], resume)
            return arm.run(spec, Path(spec.run_dir), resume)

        if tasks == 1:
            return go(any(started))
        try:
            # rank 0 may already be writing the folder when another rank looks, so every rank is told to resume;
            # resuming a folder with no checkpoint yet is a fresh start (core/train/run.py)
            return go(True)
        except Exception:
            if rank == 0:
                raise
            # logs/<run>.error is rank 0's (its error names a failed peer, core.train.distributed.RankFailure):
            # after a requeue by rank 0 the others only report its exit, which must not read as the job's error
            traceback.print_exc()  # into this task's own SLURM log
            raise SystemExit(1) from None

    def checkpoint(self, spec: JobSpec | list[JobSpec], resume: bool = False) -> submitit.helpers.DelayedSubmission:
        # nothing to save here: train_run checkpoints every `train.checkpoint_every` epochs
        return submitit.helpers.DelayedSubmission(self, spec, resume=True)


def _tasks() -> tuple[int, int]:
    """(global rank, number of tasks) of this submitit job; (0, 1) outside one (the local executor runs jobs in
    its own process, perhaps in a shell inside a SLURM allocation, whose SLURM_NTASKS is not this job's)."""
    if "SUBMITIT_FOLDER" not in os.environ:
        return 0, 1
    env = submitit.JobEnvironment()
    return env.global_rank, env.num_tasks


def _log_start(spec: JobSpec, folder: RunFolder, resume: bool) -> None:
    last = folder.newest_checkpoint()
    epoch = int(last.stem.removeprefix("epoch")) if last is not None and last.stem.startswith("epoch") else 0
    rec = {"time": time.time(), "host": socket.gethostname(), "job_id": os.environ.get("SLURM_JOB_ID", ""),
           "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID", ""),
           "restart": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0), "resume": resume,
           "from_epoch": epoch}
    spec.log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(spec.log_file, "a") as f:
        f.write(json.dumps(rec) + "\n")


def read_starts(spec: JobSpec) -> list[dict]:
    if not spec.log_file.is_file():
        return []
    return [json.loads(x) for x in spec.log_file.read_text().splitlines() if x.strip()]
