"""The submission log <sweep>/jobs.json: a list of records, one per submission, oldest first.

A record: {"time", "executor", "jobs": {run name: job id}} and, per executor, "stage", "array_id",
"dependency", "folder" (slurm, debug) and "states": {run name: "done" | "failed"} (local, debug: filled in as
the jobs finish). It says what was submitted where; whether a run is done is its folder's result.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.format import provenance

JOBS_FILE = "jobs.json"


def read_records(sweep_dir: Path) -> list[dict]:
    path = Path(sweep_dir) / JOBS_FILE
    return json.loads(path.read_text()) if path.is_file() else []


def latest_jobs(sweep_dir: Path) -> dict[str, tuple[dict, str]]:
    """run name -> (the last record that submitted it, its job id there)."""
    latest: dict[str, tuple[dict, str]] = {}
    for rec in read_records(sweep_dir):
        for name, job_id in rec.get("jobs", {}).items():
            latest[name] = (rec, str(job_id))
    return latest


def append_record(sweep_dir: Path, rec: dict) -> None:
    _write(sweep_dir, read_records(sweep_dir) + [rec])


def update_last_record(sweep_dir: Path, rec: dict) -> None:
    records = read_records(sweep_dir)
    records[-1] = rec
    _write(sweep_dir, records)


def _write(sweep_dir: Path, records: list[dict]) -> None:
    provenance.write_atomic(Path(sweep_dir) / JOBS_FILE, json.dumps(records, indent=1) + "\n")
