"""Faults around one training run, through the real CLI: a second writer into a run folder is refused while the
first holds it (real processes), and a full disk while a run writes ends in one line with no partial file."""

from __future__ import annotations

import subprocess
import sys

import pytest

from launch.cli import main as cli

SETS = [f"--set={s}" for s in ("data.resolution=16", "data.batch_size=16", "data.workers=1", "model.name=bmlp",
                               "model.compile=never", "optim.name=adamw", "optim.lr=0.003", "train.epochs=1",
                               "train.device=cpu")]
HOLD = """
import sys, time
from core.format.lock import FolderLock
with FolderLock(sys.argv[1], what="a training run"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_second_writer_into_a_run_folder_is_refused(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for argv in (["train", "--data", str(tiny_dataset), "--out", str(out), "--set=model.kwargs={depth: 1, "
                      "width: 16}", *SETS], ["train", "--data", str(tiny_dataset), "--out", str(out), "--resume",
                                             "--set=model.kwargs={depth: 1, width: 16}", *SETS]):
            assert cli(argv) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and f"in use by pid {holder.pid}" in err[0] and "a training run" in err[0], err
        assert not out.exists()  # the refused command wrote nothing
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock is stale and the run goes ahead
    assert cli(["train", "--data", str(tiny_dataset), "--out", str(out), "--set=model.kwargs={depth: 1, width: 16}",
                *SETS]) == 0


@pytest.fixture()
def small_disk(tmp_path):
    """A 3 MiB tmpfs (a real file system that fills up: ENOSPC), unmounted afterwards. Needs root (CI has it)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_disk_full_during_training_is_one_line_and_leaves_no_partial_checkpoint(tiny_dataset, small_disk, capsys):
    out = small_disk / "run"
    # a ~17 MB checkpoint (4.6 M parameters) cannot fit in 3 MiB: the first checkpoint write fills the disk
    argv = ["train", "--data", str(tiny_dataset), "--out", str(out), "--set=model.kwargs={depth: 2, width: 512}",
            *SETS]
    assert cli(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "%|" not in ln and "it/s" not in ln]
    assert len(err) == 1 and "no space left" in err[0] and "--resume" in err[0], err
    ckpts = out / "checkpoints"
    assert not ckpts.exists() or sorted(p.name for p in ckpts.iterdir()) == []  # no partial, no temporary
    assert not (out / "result.json").exists()
    assert not (small_disk / "run.lock").exists()  # the lock went with the failed run
