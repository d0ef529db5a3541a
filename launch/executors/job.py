"""The callable every executor runs: launch.jobs.RunJob, plus the run's error log on failure.

<sweep>/logs/<run>.error (the traceback) is written by the job itself, wherever it runs, so `grainsweep status`
reads why a job failed as text, whatever executor ran it (never from submitit's pickled result).
"""

from __future__ import annotations

import traceback
from pathlib import Path

from launch.executors.base import write_error
from launch.jobs import RunJob
from launch.plan import JobSpec


class SweepJob(RunJob):
    def __call__(self, spec: JobSpec, resume: bool = False) -> dict:
        try:
            return super().__call__(spec, resume=resume)
        except Exception:  # noqa: BLE001 - recorded, then raised as before (a preemption is not an Exception)
            write_error(Path(spec.sweep_dir), spec.name, traceback.format_exc())
            raise
