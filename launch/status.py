"""A sweep's job states, from its run folders, its submission log (jobs.json) and squeue where available.

done     - the run folder has result.json
running  - squeue says RUNNING/COMPLETING (or the local executor is on it)
pending  - squeue says PENDING/REQUEUED/... (waiting for resources, a dependency or a requeue)
failed   - its job ended without result.json (error, cancelled, dependency never satisfied)
todo     - never submitted
Kinds: pretrain, scratch (stage 1); transfer, cluster (stage 2: k-means on a pretraining run's frozen features,
mode shown as 'k-means').
"""

from __future__ import annotations

import pickle
import shutil
import subprocess
import time
from pathlib import Path

from core.format.run_folder import is_done
from launch.executors import read_records
from launch.plan import JobSpec, load_plan

RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING"}
PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESV_DEL_HOLD"}


def squeue_states() -> dict[str, str] | None:
    """job id (array tasks as <array>_<task>) -> SLURM state; None where squeue is not available."""
    if not shutil.which("squeue"):
        return None
    try:
        res = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    return dict(line.split()[:2] for line in res.stdout.splitlines() if len(line.split()) >= 2)


def job_states(sweep_dir: str | Path, queue: dict[str, str] | None = None) -> list[dict]:
    """One row per planned run: name, kind, pretrain level, mode, seed, state, job id, note."""
    sweep_dir = Path(sweep_dir)
    plan = load_plan(sweep_dir)
    latest: dict[str, tuple[dict, str]] = {}
    for rec in read_records(sweep_dir):
        for name, job_id in rec["jobs"].items():
            latest[name] = (rec, job_id)
    if queue is None and any(rec["executor"] == "slurm" for rec, _ in latest.values()):
        queue = squeue_states()
    return [_row(spec, latest.get(spec.name), queue) for spec in plan.jobs]


def _row(spec: JobSpec, submitted: tuple[dict, str] | None, queue: dict[str, str] | None) -> dict:
    mode = spec.mode or ("k-means" if spec.kind == "cluster" else "")  # a clustering job: the method, for the table
    level = f"{spec.pretrain_level} ({spec.arm})" if spec.arm else spec.pretrain_level
    row = {"name": spec.name, "kind": spec.kind, "pretrain_level": level, "mode": mode,
           "seed": spec.seed, "job_id": submitted[1] if submitted else "", "state": "todo", "note": "",
           "executor": submitted[0]["executor"] if submitted else ""}
    if is_done(spec.run_dir):
        row["state"] = "done"
        return row
    if submitted is None:
        return row
    rec, job_id = submitted
    if rec["executor"] in ("local", "debug"):
        row["state"] = rec.get("states", {}).get(spec.name, "running")
        return row
    slurm = (queue or {}).get(job_id)
    if slurm is not None:
        row["state"] = "running" if slurm in RUNNING else "pending" if slurm in PENDING else "failed"
        row["note"] = slurm
        return row
    outcome = _submitit_outcome(Path(rec["folder"]), job_id)
    if queue is None and outcome is None:
        row["state"], row["note"] = "pending", "squeue unavailable; no result yet"
    else:
        row["state"] = "failed"
        row["note"] = outcome or "ended without a result (cancelled, or its dependency failed)"
    return row


def _submitit_outcome(folder: Path, job_id: str) -> str | None:
    """The last line of the job's error if submitit wrote one, else None."""
    path = folder / job_id / f"{job_id}_0_result.pkl"
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            kind, value = pickle.load(f)
    except Exception as e:  # noqa: BLE001 - a half-written pickle is just "no outcome yet"
        return f"unreadable result ({e})"
    if kind == "success":
        return "job succeeded but result.json is missing"
    return str(value).strip().splitlines()[-1] if str(value).strip() else "error"


def summary(rows: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["state"]] = out.get(r["state"], 0) + 1
    return out


def format_table(rows: list[dict]) -> str:
    cols = ("state", "job_id", "kind", "pretrain_level", "mode", "seed", "name", "note")
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols} if rows else {c: len(c) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary(rows).items()))
    return "\n".join(lines + [f"{len(rows)} runs: {counts}"])


def wait(sweep_dir: str | Path, timeout_s: float = 86400, poll_s: float = 5.0) -> list[dict]:
    """Polls until no run is pending or running (or the timeout); returns the last rows."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = job_states(sweep_dir)
        if not any(r["state"] in ("pending", "running") for r in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(poll_s)
