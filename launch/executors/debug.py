"""The debug executor: submitit's DebugExecutor, in-process and synchronous (a failure opens pdb when run
interactively). One record per stage like SLURM's, with each job's outcome like the local executor's."""

from __future__ import annotations

import time

import submitit

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
            specs = [j for j in todo if j.stage == stage]
            if not specs:
                continue
            jobs = [ex.submit(SweepJob(), spec) for spec in specs]
            rec = {"time": time.time(), "executor": self.name, "stage": stage, "array_id": jobs[0].job_id,
                   "dependency": "", "folder": str(self.sweep_dir / base.SUBMITIT_DIR),
                   "jobs": {s.name: j.job_id for s, j in zip(specs, jobs)}, "states": {}}
            records.append_record(self.sweep_dir, rec)
            for spec, job in zip(specs, jobs):  # a DebugJob runs when its result is asked for
                try:
                    job.result()
                    rec["states"][spec.name] = base.DONE
                except Exception:  # noqa: BLE001 - SweepJob wrote the error log
                    rec["states"][spec.name] = base.FAILED
                records.update_last_record(self.sweep_dir, rec)
            out.append(rec)
        return out
