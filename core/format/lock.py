"""One writer per folder: a lock file naming its owner (pid, host), taken atomically, stale locks detected.

Used for dataset folders (convert, derive), sweep folders (sweep) and run folders (train, finetune). The lock
is a file `<folder>.lock` beside the folder (the folder itself may not exist yet, or be renamed into place),
created with O_CREAT | O_EXCL, which is atomic on local and NFS v3+ file systems. A lock whose owner is a
process of this host that no longer exists is stale and is taken over; a lock held by another host cannot be
checked from here and is only taken over by hand (delete the file).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path


class LockedError(RuntimeError):
    """Another live process holds the folder's lock."""


def lock_path(folder: str | Path) -> Path:
    folder = Path(folder).resolve()
    return folder.with_name(folder.name + ".lock")


def owner(folder: str | Path) -> dict | None:
    """The lock's owner record ({pid, host, time, what}) or None when unlocked (or the file is unreadable)."""
    try:
        return json.loads(lock_path(folder).read_text())
    except (OSError, ValueError):
        return None


def held(folder: str | Path) -> dict | None:
    """The owner record of a live lock on `folder` (a lock of another host counts as live), else None."""
    rec = owner(folder)
    return rec if rec is not None and _alive(rec) else None


def _alive(rec: dict) -> bool:
    job = os.environ.get("SLURM_JOB_ID", "")
    if job and rec.get("job") == job and rec.get("pid") != os.getpid():
        return False  # an earlier start of this very SLURM job (requeued, maybe onto another node): it is gone
    if rec.get("host") != socket.gethostname():
        return True  # cannot tell from here: treat as held
    try:
        return pid_alive(int(rec["pid"]))
    except (KeyError, ValueError, TypeError):
        return True


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host still runs (a process of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped by its parent still answers kill(0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class FolderLock:
    """`with FolderLock(folder, what="convert"):` ... one writer at a time.

    wait_s = 0 refuses at once when the folder is held (LockedError naming the owner); > 0 polls that long.
    Re-entrant within one process (a nested lock on the same folder by the same pid is a no-op)."""

    _held: dict[Path, int] = {}

    def __init__(self, folder: str | Path, what: str = "", wait_s: float = 0.0, poll_s: float = 0.5) -> None:
        self.path = lock_path(folder)
        self.folder = Path(folder)
        self.what, self.wait_s, self.poll_s = what, wait_s, poll_s

    def __enter__(self) -> FolderLock:
        if self._held.get(self.path):
            self._held[self.path] += 1
            return self
        deadline = time.monotonic() + self.wait_s
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(),
                             "what": self.what, "job": os.environ.get("SLURM_JOB_ID", "")})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                rec = owner(self.folder)
                if rec is not None and not _alive(rec):  # stale: its owner died without releasing it
                    self.path.unlink(missing_ok=True)
                    continue
                if rec is None and self.path.exists():  # being written this instant, or garbage: retry once
                    time.sleep(0.05)
                    rec = owner(self.folder)
                    if rec is None:
                        self.path.unlink(missing_ok=True)
                        continue
                if time.monotonic() >= deadline:
                    held = (f"pid {rec['pid']} on {rec['host']}" + (f" ({rec['what']})" if rec.get("what") else "")
                            if rec else "another process")
                    raise LockedError(f"{self.folder} is in use by {held}; wait for it to finish, or delete "
                                      f"{self.path} if that process is gone") from None
                time.sleep(self.poll_s)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(record)
            self._held[self.path] = 1
            return self

    def __exit__(self, *exc: object) -> None:
        self._held[self.path] -= 1
        if self._held[self.path] == 0:
            del self._held[self.path]
            self.path.unlink(missing_ok=True)
