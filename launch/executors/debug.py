"""The debug executor: submitit's DebugExecutor, in-process and synchronous (a failure opens pdb when run
interactively). One record per stage like SLURM's, with each job's outcome like the local executor's."""

from __future__ import annotations

import time

import submitit

from core.format.run_folder import is_done
from launch import fuse
from launch.executors import base, records
from launch.executors.job import SweepJob
from launch.executors.local import LocalExecutor
from launch.plan import JobSpec, Plan


class DebugExecutor(LocalExecutor):  # states: read like the local executor's
    name = "debug"

    def submit(self, plan: Plan, todo: list[JobSpec]) -> list[dict]:
        out = []
        ex = submitit.AutoExecutor(folder=self.sweep_dir / base.SUBMITIT_DIR / "%j", cluster="debug")
        for stage in (1, 2):
            units = fuse.units([j for j in todo if j.stage == stage])  # a fused group is one job
            if not units:
                continue
            jobs = [ex.submit(SweepJob(), fuse.job_arg(u)) for u in units]
            rec = {"time": time.time(), "executor": self.name, "stage": stage, "array_id": jobs[0].job_id,
                   "dependency": "", "folder": str(self.sweep_dir / base.SUBMITIT_DIR),
                   "jobs": {s.name: j.job_id for u, j in zip(units, jobs) for s in u}, "states": {}}
            records.append_record(self.sweep_dir, rec)
            for unit, job in zip(units, jobs):  # a DebugJob runs when its result is asked for
                try:
                    job.result()
                    rec["states"].update({s.name: base.DONE for s in unit})
                except Exception:  # noqa: BLE001 - SweepJob wrote the error log
                    rec["states"].update({s.name: base.DONE if len(unit) > 1 and is_done(s.run_dir)
                                          else base.FAILED for s in unit})
                records.update_last_record(self.sweep_dir, rec)
            out.append(rec)
        return out
