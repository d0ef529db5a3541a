"""Where a run reports: `metrics.jsonl` (one JSON object per epoch) and TensorBoard events in the run folder."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from core.format.provenance import write_atomic

METRICS_FILE = "metrics.jsonl"


class RunLog:
    """Appends epoch records to metrics.jsonl and scalars to TensorBoard.

    On resume, `start_epoch` (epochs completed by the checkpoint) drops records of later epochs (they will be
    redone), so the file never holds an epoch twice; TensorBoard's `purge_step` does the same for the event files.
    """

    def __init__(self, run_dir: str | Path, start_epoch: int = 0, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter  # tensorboard import is slow: only when logging

        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / METRICS_FILE
        self._truncate(start_epoch)
        self.tb = SummaryWriter(str(self.dir / "tb"), purge_step=purge_step)

    def _truncate(self, start_epoch: int) -> None:
        if not self.path.exists():
            return
        keep = [r for r in read_metrics(self.dir) if r.get("epoch", 0) <= start_epoch]  # 1-based: done
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        for k, v in values.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.tb.add_scalar(f"{prefix}{k}", v, step)

    def epoch(self, record: dict[str, Any]) -> None:
        """One line per epoch; flushed at once so that a killed run keeps every finished epoch."""
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.tb.flush()

    def close(self) -> None:
        self.tb.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill mid-write: the epoch is redone on resume
                break
    return out
