"""A run folder's files and state, importable without torch (sweep status, report, planning).

A run folder (written by `grainsweep train`, `finetune` or a sweep job) holds config.yaml (the resolved config),
dataset.json (the dataset it trained on and that dataset's fingerprint), checkpoints/ (numbered `*.pt`),
transfer.json for a transfer, result.json once finished, and eval*.json from `grainsweep eval`. `RunFolder` names
those files and answers the questions every command asks of them, with one message each.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from core.format.config import ConfigError
from core.format.provenance import write_atomic

CONFIG_FILE = "config.yaml"
RESULT_FILE = "result.json"  # written last, atomically: its presence is what makes a run "done"
CHECKPOINT_DIR = "checkpoints"
TRANSFER_FILE = "transfer.json"  # a transfer's source run, its checkpoint and the mode
DATASET_FILE = "dataset.json"  # the dataset a run trained on: absolute path and fingerprint
EVAL_FILE = "eval.json"  # `grainsweep eval` on the run's own dataset; eval-<dataset>.json for another
MANIFEST_FILE = "manifest.json"  # a dataset's record of its conversion inputs and their hash (data_tools/publish.py)

_CHECKPOINT_NAME = re.compile(r"^(?!\.).*?(\d+)\.pt$")  # any "<name><number>.pt"; dot files are temporaries


class RunFolderError(ConfigError):
    """A folder that cannot serve as asked: no config.yaml, already holds a run, no loadable checkpoint."""


def is_done(run_dir: str | os.PathLike) -> bool:
    return RunFolder(run_dir).is_done()


def numbered_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The `*<number>.pt` files in `folder` (e.g. ckpt_000000300.pt, epoch0012.pt), highest number first.

    By the number in the name, not by mtime: clocks differ across nodes. Keep one naming scheme per folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT_NAME.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found, reverse=True)]


def dataset_fingerprint(data_dir: str | os.PathLike) -> str:
    """What identifies a dataset's contents: the hash of its conversion inputs from manifest.json; for a dataset
    without a manifest (made by hand), the byte sizes of its betons."""
    data_dir = Path(data_dir)
    try:
        digest = json.loads((data_dir / MANIFEST_FILE).read_text()).get("inputs_hash")
    except (OSError, ValueError):
        digest = None
    if digest:
        return f"inputs:{digest}"
    sizes = [str((data_dir / b).stat().st_size) if (data_dir / b).is_file() else "-"
             for b in ("train.beton", "val.beton")]
    return "sizes:" + ",".join(sizes)


class RunFolder:
    """Paths and state of one run folder; nothing is read or created until asked."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # files (each a path under the folder, named by its constant above)
    config_file = property(lambda self: self.path / CONFIG_FILE)
    result_file = property(lambda self: self.path / RESULT_FILE)
    checkpoint_dir = property(lambda self: self.path / CHECKPOINT_DIR)
    transfer_file = property(lambda self: self.path / TRANSFER_FILE)
    dataset_file = property(lambda self: self.path / DATASET_FILE)

    def eval_file(self, data: str | os.PathLike | None = None) -> Path:
        """eval.json for the run's own dataset, eval-<dataset folder name>.json for another `data`."""
        return self.path / (EVAL_FILE if data is None else f"eval-{Path(data).resolve().name}.json")

    # state
    def require_config(self, flag: str = "") -> Path:
        """config.yaml, or a RunFolderError naming the folder (and the option that named it, e.g. '--from')."""
        if not self.config_file.is_file():
            where = f"{flag} {self.path}" if flag else str(self.path)
            raise RunFolderError(f"{where}: no {CONFIG_FILE}; is this a run folder written by 'grainsweep train'?")
        return self.config_file

    def is_done(self) -> bool:
        return self.result_file.is_file()

    def result(self) -> dict[str, Any]:
        """The finished run's result.json."""
        if not self.is_done():
            raise RunFolderError(f"{self.path}: no {RESULT_FILE}; the run has not finished")
        return json.loads(self.result_file.read_text())

    def checkpoints(self) -> list[Path]:
        """The run's checkpoints, newest first."""
        return numbered_checkpoints(self.checkpoint_dir)

    def newest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[0] if found else None

    def holds_run(self) -> bool:
        """Anything in the folder: an earlier start wrote it."""
        return self.path.is_dir() and any(self.path.iterdir())

    def refuse_unless_resume(self, resume: bool) -> None:
        if self.holds_run() and not resume:
            raise RunFolderError(f"{self.path} already holds a run; pass --resume to continue it, or use a new "
                                 "--out")

    def dataset_record(self) -> dict[str, Any] | None:
        """dataset.json ({'path', 'fingerprint'}), or None for a run started before it was written."""
        if not self.dataset_file.is_file():
            return None
        return json.loads(self.dataset_file.read_text())

    def record_dataset(self, data_dir: str | os.PathLike) -> None:
        """Writes dataset.json: the dataset's absolute path and fingerprint, as the run starts on it."""
        self.path.mkdir(parents=True, exist_ok=True)
        record = {"path": os.path.abspath(data_dir), "fingerprint": dataset_fingerprint(data_dir)}
        write_atomic(self.dataset_file, json.dumps(record, indent=1) + "\n")

    def check_dataset(self, data_dir: str | os.PathLike, explicit: bool) -> None:
        """Refuses `data_dir` when it is the run's dataset by default (not named by --data) but its contents are
        not those the run trained on (re-converted with other inputs, or another folder at a relative path)."""
        record = self.dataset_record()
        if explicit or record is None:
            return
        now = dataset_fingerprint(data_dir)
        if now != record.get("fingerprint"):
            raise RunFolderError(f"{data_dir} is not the dataset {self.path} trained on (fingerprint "
                                 f"{record.get('fingerprint')} when the run started, {now} now); pass --data "
                                 f"{data_dir} to use it anyway")

    def transfer_record(self) -> dict[str, Any] | None:
        if not self.transfer_file.is_file():
            return None
        return json.loads(self.transfer_file.read_text())
