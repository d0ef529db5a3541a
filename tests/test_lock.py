"""core.format.lock: one writer per folder across real processes; a dead owner's lock is taken over."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from core.format.lock import FolderLock, LockedError, lock_path, owner

HOLD = """
import sys, time
from core.format.lock import FolderLock
with FolderLock(sys.argv[1], what="test holder"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_second_process_is_refused_then_gets_it_after_release(tmp_path):
    folder = tmp_path / "ds"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), "3"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LockedError, match=rf"in use by pid {holder.pid} .*test holder"):
        with FolderLock(folder):
            pass
    with FolderLock(folder, wait_s=30, poll_s=0.1):  # waits for the holder to finish
        assert owner(folder)["pid"] != holder.pid
    assert holder.wait() == 0 and not lock_path(folder).exists()


def test_lock_of_a_dead_process_is_stale(tmp_path):
    folder = tmp_path / "sweep"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    lock_path(folder).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "time": time.time()}))
    with FolderLock(folder):
        assert owner(folder)["pid"] != dead.pid
    assert not lock_path(folder).exists()


def test_reentrant_in_one_process(tmp_path):
    with FolderLock(tmp_path / "run"):
        with FolderLock(tmp_path / "run"):
            pass
        assert lock_path(tmp_path / "run").exists()
    assert not lock_path(tmp_path / "run").exists()


def test_lock_of_an_earlier_start_of_the_same_slurm_job_is_taken_over(tmp_path, monkeypatch):
    # a requeued job may land on another node: its earlier start's lock names that node, which cannot be checked
    # from here, but it is the same SLURM job, so that start is gone
    folder = tmp_path / "run"
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    lock_path(folder).write_text(json.dumps({"pid": 1, "host": "another-node", "time": time.time(), "job": "4242"}))
    with FolderLock(folder):
        assert owner(folder)["job"] == "4242" and owner(folder)["host"] != "another-node"
    lock_path(folder).write_text(json.dumps({"pid": 1, "host": "another-node", "time": time.time(), "job": "7"}))
    with pytest.raises(LockedError, match="another-node"):  # another job's lock on another node: held
        with FolderLock(folder):
            pass
