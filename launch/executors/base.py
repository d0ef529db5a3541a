"""What an executor is: `check` its parameters, be `ready` (a cluster that answers), `submit` a plan's unfinished
jobs, read the `states` of jobs it submitted. Shared by all executors: run folders derived from the sweep folder,
and the per-run error log.

Run folders are always <sweep>/runs/<name> under the folder this call was given (never a path stored earlier),
so a copied or moved sweep folder reads and runs its own runs, not the old location's.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from core.format.run_folder import RunFolder
from launch.plan import LOGS_DIR, RUNS_DIR, JobSpec, Plan
from launch.sweep_config import ExecutorConfig

# a job's state as `grainsweep status` shows it
DONE, RUNNING, PENDING, FAILED, TODO = "done", "running", "pending", "failed", "todo"
BLOCKED = "blocked"  # a stage-2 job whose source run failed: it runs once a rerun of the sweep gets the source done
SUBMITIT_DIR = "submitit"  # <sweep>/submitit/<job id>/: submitit's pickles and logs (slurm, debug)


class Executor:
    name: ClassVar[str]
    runs_here: ClassVar[bool] = False  # True: jobs run in this process (the sweep prints "to run", not "to submit")

    def __init__(self, cfg: ExecutorConfig, sweep_dir: Path) -> None:
        self.cfg, self.sweep_dir = cfg, Path(sweep_dir)

    def check(self) -> None:
        """Raises ConfigError (naming the key) for parameters that would fail at submission. Nothing is written."""

    def ready(self) -> None:
        """Raises ConfigError, saying what to do, when jobs cannot be submitted now (a cluster that does not
        answer). Called after planning (so config errors are reported first), before anything is written."""

    def submit(self, plan: Plan, todo: list[JobSpec]) -> list[dict]:
        """Runs or submits `todo` (unfinished jobs of `plan`, both stages, stage 2 only after its source run
        succeeded); appends one record per submission to jobs.json and returns them."""
        raise NotImplementedError

    @classmethod
    def states(cls, sweep_dir: Path, jobs: dict[str, tuple[dict, str]]) -> dict[str, tuple[str, str]]:
        """run name -> (state, note) of runs this executor was given last (`jobs`: name -> (its jobs.json record,
        job id)), read from live sources only (the queue, logs as text, the sweep lock), never unpickled.
        Called before the run folders are looked at: a run whose result.json exists is "done" whatever this says."""
        raise NotImplementedError


# run folders under the folder given
def run_dir(sweep_dir: Path, name: str) -> Path:
    return Path(sweep_dir) / RUNS_DIR / name


def not_running_note(sweep_dir: Path, name: str) -> str:
    """Why a run without a live job is not done, from its folder: resumable, or never started."""
    folder = RunFolder(run_dir(sweep_dir, name))
    newest = folder.newest_checkpoint()
    if newest is not None:
        return f"interrupted; resumes from {newest.name}"
    return "interrupted; starts over" if folder.holds_run() else ""


def skip_without_source(sweep_dir: Path, spec: JobSpec, rec: dict) -> bool:
    """A local transfer or clustering job whose source run did not succeed is not run: recorded failed, with an
    error log saying why (status then shows it blocked by that run). True when skipped."""
    if not spec.source or RunFolder(spec.source).is_done():
        return False
    rec["states"][spec.name] = FAILED
    write_error(sweep_dir, spec.name, f"not run: its pretraining run {spec.source_name} did not succeed\n")
    return True


# the per-run error log: <sweep>/logs/<run>.error, the traceback of its last failure
def error_file(sweep_dir: Path, name: str) -> Path:
    return Path(sweep_dir) / LOGS_DIR / f"{name}.error"


def write_error(sweep_dir: Path, name: str, text: str) -> None:
    path = error_file(sweep_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def last_error_line(text: str) -> str:
    """The line of a log that says what went wrong: the last exception line ('ValueError: ...') or SLURM's own
    ('slurmstepd: error: ... CANCELLED ...'), else the last non-empty line."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if "slurmstepd: error" in line or (head.replace(".", "").replace("_", "").isalnum()
                                           and head.endswith(("Error", "Exception", "Interrupt", "Exit"))):
            return line[:200]
    return lines[-1][:200] if lines else ""


def error_note(sweep_dir: Path, name: str, since: float = 0.0) -> str:
    """The last line of the run's error log when it was written at or after `since` (this submission's)."""
    path = error_file(sweep_dir, name)
    try:
        if path.stat().st_mtime < since:
            return ""
        return last_error_line(path.read_text(errors="replace"))
    except OSError:
        return ""
