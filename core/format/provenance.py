"""What every output folder records about how it was made: the resolved config and the code's git SHA."""

from __future__ import annotations

import json
import errno
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core.format import config as cfglib

REPO_ROOT = Path(__file__).resolve().parent.parent


def git_sha(root: Path = REPO_ROOT) -> dict[str, Any]:
    """HEAD's SHA and whether the tree had uncommitted changes; 'unknown' outside a git checkout."""
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
    except (OSError, subprocess.TimeoutExpired):
        return {"git_sha": "unknown", "git_dirty": None}
    return {"git_sha": sha or "unknown", "git_dirty": dirty if sha else None}


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # the errnos of a write that found no space (disk or quota)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:  # a failed write (full disk) leaves neither a partial file nor its temporary
        tmp.unlink(missing_ok=True)


def record(out_dir: str | Path, cfg: Any, extra: dict | None = None) -> None:
    """Writes `config.yaml` (the resolved config) and `provenance.json` (git SHA, command, host, versions)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "config.yaml", cfglib.to_yaml(cfg))
    info = {
        **git_sha(),
        "argv": sys.argv,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        **(extra or {}),
    }
    write_atomic(out / "provenance.json", json.dumps(info, indent=1) + "\n")
