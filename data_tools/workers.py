"""Worker processes that die with their parent and report a full disk by their exit code.

A conversion's pre-pass pool and ffcv's writer processes are forked children. When the parent is SIGKILLed
(an OOM killer, a scheduler's time limit, `kill -9`), ffcv's writer workers kept running with parent pid 1,
about 0.5 GB each, holding the deleted temporary beton open. Each worker therefore asks Linux to SIGKILL it when
its parent dies (prctl PR_SET_PDEATHSIG, see prctl(2)); elsewhere a daemon thread polls os.getppid().
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

from core.format.provenance import DISK_FULL

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_S = 1.0  # parent check period where prctl is not available
DISK_FULL_EXIT = 28  # exit code of a worker that hit ENOSPC / EDQUOT (errno.ENOSPC on Linux)


def die_with_parent(parent_pid: int) -> None:
    """Makes this (forked) process exit when `parent_pid`, its parent, is gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent_pid:  # the parent died before the prctl took effect
                os._exit(1)
            return
    threading.Thread(target=_watch, args=(parent_pid,), daemon=True).start()


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_S)
    os._exit(1)


def run_worker(parent_pid: int, target, *args) -> None:
    """`target(*args)` in a worker that dies with its parent and exits with DISK_FULL_EXIT on a full disk."""
    die_with_parent(parent_pid)
    try:
        target(*args)
    except OSError as e:
        if e.errno in DISK_FULL:
            print(f"writer process: {e}", file=sys.stderr)
            sys.exit(DISK_FULL_EXIT)
        raise
