"""The files that mark a run folder's state, importable without torch (sweep status, report, planning)."""

from __future__ import annotations

from pathlib import Path

RESULT_FILE = "result.json"  # written last, atomically: its presence is what makes a run "done"
CHECKPOINT_DIR = "checkpoints"


def is_done(run_dir: str | Path) -> bool:
    return (Path(run_dir) / RESULT_FILE).is_file()
