"""`grainsweep train --nproc N` (launch/spawn.py): N real processes started by torch's elastic launcher, gloo on the
CPU, no mocks. A 2-process run leaves the folder a 1-process run leaves (rank 0 alone wrote); a rank killed
mid-run makes the command exit non-zero naming that rank, the other rank stopped and no process left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from launch.cli import main as cli
from launch.spawn import PARENT_ENV

SETS = [f"--set={s}" for s in ("data.resolution=16", "data.batch_size=16", "data.workers=1", "model.name=bmlp",
                               "model.kwargs={depth: 1, width: 16}", "model.compile=never", "optim.name=adamw",
                               "optim.lr=0.003", "train.device=cpu")]
HANG_GUARD_S = 600  # only so that a broken launcher fails the test instead of hanging CI; not a timing check


def _train(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), *SETS, *extra]


def _files(run: Path) -> list[str]:
    """The run folder's files; TensorBoard's event file names (host, pid, time) reduced to 'events'."""
    names = (str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    return sorted("tb/events" if n.startswith("tb/events.out.tfevents") else n for n in names)


def test_two_processes_leave_the_folder_of_one(tiny_dataset, tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli(_train(tiny_dataset, one, "--set=train.epochs=2")) == 0
    capsys.readouterr()
    res = subprocess.run([sys.executable, "-m", "launch.cli", *_train(tiny_dataset, two, "--set=train.epochs=2",
                                                                      "--nproc", "2")],
                         capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert res.returncode == 0, res.stderr[-4000:]
    assert _files(two) == _files(one)
    assert (two / "config.yaml").read_text() == (one / "config.yaml").read_text()
    assert [json.loads(x)["epoch"] for x in (two / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((two / "result.json").read_text())["epochs"] == 2
    # one result printed (rank 0's), and the run folder's lock released
    assert res.stdout.count('"level"') == 1, res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]


def _workers(launcher: int) -> dict[int, int]:
    """rank -> pid of the processes `launcher` started."""
    out = {}
    for child in psutil.Process(launcher).children():
        try:
            env = child.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if env.get(PARENT_ENV) == str(launcher) and "RANK" in env:
            out[int(env["RANK"])] = child.pid
    return out


def test_a_killed_rank_fails_the_command_naming_it(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    argv = _train(tiny_dataset, out, "--set=train.epochs=1000", "--set=train.eval_every=1000", "--nproc", "2")
    proc = subprocess.Popen([sys.executable, "-m", "launch.cli", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    workers: dict[int, int] = {}
    try:
        deadline = time.time() + HANG_GUARD_S
        while not (out / "metrics.jsonl").is_file():  # both ranks are past their first epoch
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-4000:]
            time.sleep(0.2)
        workers = _workers(proc.pid)
        assert sorted(workers) == [0, 1], workers
        os.kill(workers[1], signal.SIGKILL)  # as the OOM killer would
        _, err = proc.communicate(timeout=HANG_GUARD_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err[-4000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("grainsweep train: error: rank 1 of 2 failed") and "SIGKILL" in last, err[-4000:]
    assert not [pid for pid in workers.values() if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]  # rank 0 was stopped too
