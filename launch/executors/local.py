"""The local executor: runs the jobs itself, in this process, one after the other: stage 1, then each transfer
and clustering job whose pretraining run finished (afterok per job).

In-process because every new process spends ~8-10 s importing torch/ffcv, longer than many of the demo's runs;
on 2 cores a pool would only contend. On a workstation with several GPUs (or cores to spare),
`executor.local.slots: N` > 1 runs up to N jobs at once in child processes instead (launch/executors/slots.py).
A failed run is logged (<sweep>/logs/<run>.error) and the sweep goes on; its transfers and clustering job are
not run.
A fused group (launch/fuse.py) runs as one job; its members are done or failed each by its own result.json.
Its jobs.json record lists the runs in the order they run and gets each one's outcome as it ends; a run without
an outcome is running (those in the record's "running" list: the job in flight, all of a group's members) or
waiting (the rest) only while the sweep that wrote the record still holds the sweep folder's lock: after a Ctrl-C
or a crash they are "todo" again.
"""

from __future__ import annotations

import time
from pathlib import Path

from core.format import lock
from core.format.run_folder import is_done
from launch import fuse
from launch.executors import base, records, slots
from launch.executors.job import SweepJob
from launch.plan import JobSpec, Plan


class LocalExecutor(base.Executor):
    name = "local"
    runs_here = True

    def submit(self, plan: Plan, todo: list[JobSpec]) -> list[dict]:
        todo = sorted(todo, key=lambda j: j.stage)
        rec = {"time": time.time(), "executor": self.name, "jobs": {s.name: "local" for s in todo}, "states": {}}
        if self.cfg.local.slots > 1:
            rec["slots"], rec["running"] = self.cfg.local.slots, []
            records.append_record(self.sweep_dir, rec)
            slots.run(self.sweep_dir, todo, self.cfg.local.slots, rec)
            return [rec]
        records.append_record(self.sweep_dir, rec)
        jobs = fuse.units(todo)
        for i, unit in enumerate(jobs):
            print(f"[{i + 1}/{len(jobs)}] {_title(unit)}", flush=True)
            unit = [s for s in unit if not base.skip_without_source(self.sweep_dir, s, rec)]  # needs its source
            if unit:
                rec["running"] = [s.name for s in unit]
                records.update_last_record(self.sweep_dir, rec)
                t0 = time.time()
                try:
                    SweepJob()(fuse.job_arg(unit))
                    rec["states"].update({s.name: base.DONE for s in unit})
                    print(f"    done in {time.time() - t0:.1f} s", flush=True)
                except Exception:  # noqa: BLE001 - one failed job must not stop the others (SweepJob logged it)
                    # each member by its folder: a fused group may fail after some of its members finished
                    for s in unit:
                        rec["states"][s.name] = base.DONE if len(unit) > 1 and is_done(s.run_dir) else base.FAILED
                        if rec["states"][s.name] == base.FAILED:
                            print(f"    FAILED; see {base.error_file(self.sweep_dir, s.name)}", flush=True)
                rec["running"] = []
            records.update_last_record(self.sweep_dir, rec)
        return [rec]

    @classmethod
    def states(cls, sweep_dir: Path, jobs: dict[str, tuple[dict, str]]) -> dict[str, tuple[str, str]]:
        out = {}
        for name, (rec, _) in jobs.items():
            outcome = rec.get("states", {}).get(name)
            if outcome == base.DONE:  # its result.json is gone (status looks at the folder first)
                out[name] = (base.TODO, "result.json missing; runs again")
            elif outcome == base.FAILED:
                out[name] = (base.FAILED, base.error_note(sweep_dir, name, since=rec.get("time", 0.0)))
            elif outcome is None and _written_by_live_sweep(sweep_dir, rec):
                waiting = [n for n in rec["jobs"] if n not in rec.get("states", {})]
                running = rec.get("running", waiting[:1])
                out[name] = (base.RUNNING, "") if name in running else (base.PENDING, "queued here")
            else:  # its sweep was interrupted (Ctrl-C, killed) before it got to this job, or while on it
                out[name] = (base.TODO, base.not_running_note(sweep_dir, name) or "not started")
        return out


def _title(unit: list[JobSpec]) -> str:
    """A job's line in the printout: the run, or a fused group and its members."""
    if len(unit) == 1:
        return unit[0].name
    return f"{fuse.unit_name(unit)} (fused: {', '.join(s.name for s in unit)})"


def _written_by_live_sweep(sweep_dir: Path, rec: dict) -> bool:
    """Whether the sweep that wrote `rec` is still running: it holds the sweep folder's lock since before."""
    owner = lock.held(sweep_dir)
    return owner is not None and owner.get("time", float("inf")) <= rec.get("time", 0.0)