"""The callable every executor runs: launch.jobs.RunJob, plus the run's error log on failure.

<sweep>/logs/<run>.error (the traceback) is written by the job itself, wherever it runs, so `grainsweep status`
reads why a job failed as text, whatever executor ran it (never from submitit's pickled result). A fused group
that fails writes it for each member left without result.json.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from core.format.run_folder import is_done
from launch.executors.base import write_error
from launch.jobs import RunJob
from launch.plan import JobSpec


class SweepJob(RunJob):
    def __call__(self, spec: JobSpec | list[JobSpec], resume: bool = False) -> dict | list[dict]:
        try:
            return super().__call__(spec, resume=resume)
        except Exception:  # noqa: BLE001 - recorded, then raised as before (a preemption is not an Exception)
            text = traceback.format_exc()
            for s in spec if isinstance(spec, list) else [spec]:
                if not isinstance(spec, list) or not is_done(s.run_dir):
                    write_error(Path(s.sweep_dir), s.name, text)
            raise
