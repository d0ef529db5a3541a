"""`python -m launch.executors.worker`: one sweep job in a child process of the local executor's slots
(launch/executors/slots.py). Reads {"parent": pid, "sweep_dir", "specs": [plan.json's entries]} from stdin (one
run, or a fused group's members: launch/fuse.py), runs the job (SweepJob writes <sweep>/logs/<run>.error on
failure) and exits 0 (done), 1 (failed) or 130 (interrupted). It dies with
its parent (PR_SET_PDEATHSIG), so a killed sweep leaves no run training on."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from data_tools.workers import die_with_parent


def main() -> int:
    job = json.loads(sys.stdin.read())
    die_with_parent(int(job["parent"]))
    from launch.executors.job import SweepJob  # torch, after the parent check
    from launch.plan import JobSpec

    specs = [JobSpec.from_dict(d, Path(job["sweep_dir"])) for d in job["specs"]]
    try:
        SweepJob()(specs if len(specs) > 1 else specs[0])
    except KeyboardInterrupt:
        print(f"{', '.join(s.name for s in specs)}: interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - SweepJob wrote the error log; the traceback also goes to this job's log
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
