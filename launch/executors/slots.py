"""The local executor with `executor.local.slots` = N > 1: up to N jobs at once, each in a child process
(`python -m launch.executors.worker`), one GPU each where there are GPUs (CUDA_VISIBLE_DEVICES).

Scheduling is per job, as on SLURM: a transfer or clustering job starts once its own pretraining run has finished
(not the whole stage); if that run failed, it is not run (its error log says why) and the others go on. Free
slots go to jobs in plan order (stage 1 first). A child's output goes to <sweep>/logs/<run>.log; a child that
dies without writing its error log (killed, out of memory) gets one from here, with its exit code and the log's
tail. The children are in their own session, so a Ctrl-C reaches this process alone, which then stops them all
(SIGINT: the run keeps its last checkpoint; SIGKILL after STOP_S) before it returns; they also die with it
(PR_SET_PDEATHSIG) when it is killed outright. The jobs.json record's "running" list names the jobs in flight,
which is how `grainsweep status` tells running from waiting while the sweep holds its folder's lock. A fused
group (launch/fuse.py) is one child (log: <sweep>/logs/<group>.log); its members are all "running" while it runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from core.format.run_folder import is_done
from launch import fuse
from launch.executors import base, records
from launch.plan import LOGS_DIR, JobSpec

POLL_S = 0.2  # how often finished children are looked for
STOP_S = 30.0  # how long children get to stop after a Ctrl-C before they are killed
LOG_TAIL = 4000  # characters of a child's log kept in its error log when it died without writing one


@dataclass
class Child:
    specs: list[JobSpec]  # one run, or a fused group's members (launch/fuse.py)
    proc: subprocess.Popen
    gpu: str | None
    t0: float
    log: IO[str]


def gpu_ids() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries for the children ([] without CUDA)."""
    import torch

    n = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [x.strip() for x in visible.split(",") if x.strip()] if visible is not None else [str(i) for i in range(n)]
    return ids[:n]


def run(sweep_dir: Path, todo: list[JobSpec], slots: int, rec: dict) -> None:
    """Runs `todo` (in plan order) with up to `slots` children at once; fills rec["states"] as they end."""
    gpus = gpu_ids()
    if gpus and slots > len(gpus):
        print(f"note: executor.local.slots={slots} but {len(gpus)} GPU(s): running {len(gpus)} at once", flush=True)
        slots = len(gpus)
    waiting, children = fuse.units(todo), {}
    n = len(waiting)
    try:
        while waiting or children:
            changed = False
            for name in [x for x, c in children.items() if c.proc.poll() is not None]:
                _finish(sweep_dir, children.pop(name), rec)
                changed = True
            for unit in list(waiting):
                if len(children) >= slots:
                    break
                unfinished = {s.name for c in children.values() for s in c.specs} | {s.name for u in waiting
                                                                                     for s in u}
                if any(s.source_name in unfinished for s in unit):
                    continue  # its source runs in this sweep and has not finished
                waiting.remove(unit)
                changed = True
                name = fuse.unit_name(unit)
                unit = [s for s in unit if not base.skip_without_source(sweep_dir, s, rec)]
                if not unit:
                    print(f"[{n - len(waiting)}/{n}] {name}: not run (its source run failed)", flush=True)
                    continue
                busy = {c.gpu for c in children.values()}
                gpu = next((g for g in gpus if g not in busy), None)
                children[name] = _start(sweep_dir, unit, gpu)
                print(f"[{n - len(waiting)}/{n}] {name}" + (f" (GPU {gpu})" if gpu is not None else "")
                      + (f" (fused: {', '.join(s.name for s in unit)})" if len(unit) > 1 else ""), flush=True)
            if changed:
                rec["running"] = [s.name for c in children.values() for s in c.specs]
                records.update_last_record(sweep_dir, rec)
            time.sleep(POLL_S)
    finally:
        _stop(list(children.values()))
        if children:
            rec["running"] = []
            records.update_last_record(sweep_dir, rec)


def _start(sweep_dir: Path, specs: list[JobSpec], gpu: str | None) -> Child:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    path = Path(sweep_dir) / LOGS_DIR / f"{fuse.unit_name(specs)}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    log = open(path, "a")  # noqa: SIM115 - closed in _finish / _stop
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "launch.executors.worker"], stdin=subprocess.PIPE, stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True, text=True)
    # the jobs as plan.json has them (typed config round trip), not a pickle
    proc.stdin.write(json.dumps({"parent": os.getpid(), "sweep_dir": specs[0].sweep_dir,
                                 "specs": [s.to_dict() for s in specs]}))
    proc.stdin.close()
    return Child(specs, proc, gpu, t0, log)


def _finish(sweep_dir: Path, child: Child, rec: dict) -> None:
    child.log.close()
    name, code = fuse.unit_name(child.specs), child.proc.returncode
    if code == 0:
        rec["states"].update({s.name: base.DONE for s in child.specs})
        print(f"    {name} done in {time.time() - child.t0:.1f} s", flush=True)
        return
    for s in child.specs:  # a fused group may fail after some of its members finished
        if len(child.specs) > 1 and is_done(s.run_dir):
            rec["states"][s.name] = base.DONE
            continue
        rec["states"][s.name] = base.FAILED
        error = base.error_file(sweep_dir, s.name)
        if not error.is_file() or error.stat().st_mtime < child.t0:  # died before the job could say why
            tail = Path(child.log.name).read_text(errors="replace")[-LOG_TAIL:]
            base.write_error(sweep_dir, s.name, f"{tail}\nworker process exit code {code} (see {child.log.name})\n")
        print(f"    {s.name} FAILED; see {error}", flush=True)


def _stop(children: list[Child]) -> None:
    """SIGINT to every child still running (a KeyboardInterrupt in its run), then SIGKILL after STOP_S."""
    for c in children:
        if c.proc.poll() is None:
            c.proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_S
    for c in children:
        try:
            c.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.proc.kill()
            c.proc.wait()
        c.log.close()
