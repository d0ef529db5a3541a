"""A sweep's job states, from its run folders first, then from the executor that was given each job last
(jobs.json says which; each reads its own live sources: squeue, logs as text, the sweep lock; never a pickle).

done     - the run folder has result.json (whatever the submission log says)
running  - squeue says RUNNING/COMPLETING, or the local sweep that holds the sweep folder is on it
pending  - squeue says PENDING/REQUEUED/... (resources, a dependency, a requeue), or a live local sweep will get
           to it
failed   - its job ended without result.json (error, cancelled); note: why
blocked  - a transfer or clustering job whose pretraining run failed (note: "blocked by <run> (failed)"), whatever
           its own job says (pending on a dependency never satisfied, cancelled, not run); it runs after its
           source once a rerun of the sweep gets that run done
todo     - never submitted, or interrupted with no live job (note: whether it resumes from a checkpoint), or
           its result.json is gone; `grainsweep sweep` runs every run that is todo, failed or blocked
A pending (or locally queued) stage-2 job whose source is not done yet says "waits for <run>".
The members of a fused group (launch/fuse.py) share one job: each is running or pending while it is, and done as
soon as its own result.json is written; their note names the group.
Kinds: pretrain, scratch (stage 1); transfer, cluster (stage 2: k-means on a pretraining run's frozen features,
mode shown as 'k-means').
"""

from __future__ import annotations

import time
from pathlib import Path

from core.format.run_folder import is_done
from launch import arms, executors
from launch.executors import base, records
from launch.plan import JobSpec, load_plan


def job_states(sweep_dir: str | Path) -> list[dict]:
    """One row per planned run: name, kind, pretrain level, mode, seed, state, job id, executor, note.

    Run folders are <sweep_dir>/runs/<name> under the folder given, so a copied or moved sweep reads its own."""
    sweep_dir = Path(sweep_dir)
    plan = load_plan(sweep_dir)
    planned = {j.name for j in plan.jobs}
    latest = {n: v for n, v in records.latest_jobs(sweep_dir).items() if n in planned}
    # the executors' live states before the folders: a job that finishes in between reads "done", not "failed"
    by_executor: dict[str, dict[str, tuple[dict, str]]] = {}
    for name, (rec, job_id) in latest.items():
        by_executor.setdefault(str(rec.get("executor")), {})[name] = (rec, job_id)
    live: dict[str, tuple[str, str]] = {}
    for ex_name, jobs in by_executor.items():
        try:
            live.update(executors.get(ex_name).states(sweep_dir, jobs))
        except ValueError:
            live.update({n: (base.TODO, f"jobs.json: unknown executor {ex_name!r}") for n in jobs})
    rows = [_row(spec, sweep_dir, latest.get(spec.name), live.get(spec.name)) for spec in plan.jobs]
    _mark_blocked(plan.jobs, rows)
    return rows


def _mark_blocked(specs: list[JobSpec], rows: list[dict]) -> None:
    """A job waits on its source run alone: blocked while that run failed, "waits for" it while it is unfinished."""
    by_name = {r["name"]: r for r in rows}
    for spec, row in zip(specs, rows):
        source = by_name.get(spec.source_name)
        if source is None or row["state"] in (base.DONE, base.RUNNING) or source["state"] == base.DONE:
            continue
        if source["state"] in (base.FAILED, base.BLOCKED):
            row["state"], row["note"] = base.BLOCKED, f"blocked by {spec.source_name} (failed)"
        elif row["state"] == base.PENDING:
            row["note"] = f"waits for {spec.source_name}"


def _row(spec: JobSpec, sweep_dir: Path, submitted: tuple[dict, str] | None, live: tuple[str, str] | None) -> dict:
    mode = arms.mode_label(spec)
    level = f"{spec.pretrain_level} ({spec.arm})" if spec.arm else spec.pretrain_level
    row = {"name": spec.name, "kind": spec.kind, "pretrain_level": level, "mode": mode,
           "seed": spec.seed, "job_id": submitted[1] if submitted else "", "state": base.TODO, "note": "",
           "executor": str(submitted[0].get("executor", "")) if submitted else ""}
    if is_done(base.run_dir(sweep_dir, spec.name)):
        row["state"] = base.DONE
    elif live is not None:
        row["state"], row["note"] = live
    else:
        row["note"] = base.not_running_note(sweep_dir, spec.name)
    if spec.group and row["state"] in (base.RUNNING, base.PENDING):  # one job trains the group's members
        row["note"] = "; ".join(x for x in (row["note"], f"fused job {spec.group}") if x)
    return row


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
