"""`grainsweep status` reads each run's state from its folder and live sources, never from a pickle: a planted
submitit result file is not loaded, a deleted result.json is "todo" and is run again, a copied sweep folder reads
its own runs, and a Ctrl-C'd local sweep leaves no run "running". Real sweeps (tiny preset, bmlp), real
processes for the interrupted sweep."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.format import config as cfglib, lock
from core.format.run_folder import RESULT_FILE
from launch import status, sweep
from launch.cli import main as cli
from launch.executors import records
from launch.jobs import read_starts
from launch.plan import load_plan
from tests.test_executors import controller_down  # noqa: F401
from tests.test_sweep_local import tiny_sweep

REPO = Path(__file__).resolve().parents[1]


def small_sweep(data: Path, *sets: str):
    """One pretraining run (superclass) and its linear transfer."""
    return tiny_sweep(data, "seeds=[0]", "pretrain_levels=[superclass]", "scratch.enabled=false",
                      "clustering.enabled=false", *sets)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("status")
    cfg = small_sweep(root / "data")
    plan, _ = sweep.run_sweep(cfg, root / "sw", executor="local")
    rows = status.job_states(root / "sw")
    assert [r["state"] for r in rows] == ["done", "done"], [(r["name"], r["state"], r["note"]) for r in rows]
    return cfg, plan, root


def copy_of(small, dest: Path) -> Path:
    _, _, root = small
    shutil.copytree(root / "sw", dest)
    return dest


class Planted:
    """What an attacker would leave in a shared sweep folder: unpickling it creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_planted_result_pickle_is_never_loaded(small, tmp_path, capsys):
    sw = copy_of(small, tmp_path / "sw")
    plan = load_plan(sw)
    transfer = next(j for j in plan.jobs if j.kind == "transfer")
    (Path(transfer.run_dir) / RESULT_FILE).unlink()
    # the planted files are armed: loading one runs its code
    pickle.loads(pickle.dumps(Planted(tmp_path / "armed")))
    assert (tmp_path / "armed").is_dir()
    marker = tmp_path / "pwned"
    evil = tmp_path / "elsewhere"  # a doctored record may point its submitit folder anywhere
    job_id = "4242_0"
    for folder in (sw / "submitit", evil):
        (folder / job_id).mkdir(parents=True)
        for suffix in ("result", "submitted"):
            (folder / job_id / f"{job_id}_0_{suffix}.pkl").write_bytes(pickle.dumps(Planted(marker)))
    records.append_record(sw, {"time": time.time(), "executor": "slurm", "stage": 2, "array_id": "4242",
                               "dependency": "", "folder": str(evil), "jobs": {transfer.name: job_id}})

    rows = {r["name"]: r for r in status.job_states(sw)}
    assert cli(["status", str(sw)]) == 0
    out = capsys.readouterr().out
    assert not marker.exists()
    # still reported: not in the queue (or no queue to ask), no result
    row = rows[transfer.name]
    assert row["job_id"] == job_id and row["executor"] == "slurm" and row["state"] in ("failed", "pending"), row
    assert transfer.name in out and job_id in out
    assert rows[next(j.name for j in plan.jobs if j.kind == "pretrain")]["state"] == "done"


def test_doctored_job_id_is_not_a_path(small, tmp_path):
    sw = copy_of(small, tmp_path / "sw")
    transfer = next(j for j in load_plan(sw).jobs if j.kind == "transfer")
    (Path(transfer.run_dir) / RESULT_FILE).unlink()
    records.append_record(sw, {"time": time.time(), "executor": "slurm", "jobs": {transfer.name: "../../etc"}})
    row = next(r for r in status.job_states(sw) if r["name"] == transfer.name)
    assert row["state"] == "failed" and "not a SLURM job id" in row["note"]


def test_deleted_result_is_todo_and_runs_again_in_a_copied_folder(small, tmp_path, capsys):
    cfg, plan, root = small
    sw = copy_of(small, tmp_path / "copied")  # a copied (or moved) sweep folder: its own runs, not the original's
    pre = next(j for j in load_plan(sw).jobs if j.kind == "pretrain")
    assert Path(pre.run_dir).parent.parent == sw.resolve()
    (Path(pre.run_dir) / RESULT_FILE).unlink()
    rows = {r["name"]: r for r in status.job_states(sw)}
    assert rows[pre.name]["state"] == "todo" and "result.json" in rows[pre.name]["note"]
    assert [r["state"] for r in status.job_states(root / "sw")] == ["done", "done"]  # the original is untouched

    original = next(j for j in plan.jobs if j.kind == "pretrain")
    starts_before = read_starts(original)
    _, recs = sweep.run_sweep(cfg, sw, executor="local")
    assert [list(r["jobs"]) for r in recs] == [[pre.name]]  # that run only, into the copy
    assert [r["state"] for r in status.job_states(sw)] == ["done", "done"]
    assert len(read_starts(pre)) == len(starts_before) + 1 and read_starts(original) == starts_before
    assert "1 to run" in capsys.readouterr().out


def test_second_sweep_is_refused_and_ctrl_c_leaves_nothing_running(small, tmp_path):
    # two real `grainsweep sweep` processes on one folder: the second is refused while the first trains; then
    # the first is Ctrl-C'd (SIGINT) in the middle of its first run
    _, _, root = small
    cfg = small_sweep(root / "data", "run.train={epochs: 5000, eval_every: 5000}")  # outlasts the second sweep
    cfg_file = tmp_path / "sweep.yaml"
    cfg_file.write_text(cfglib.to_yaml(cfg))
    sw = tmp_path / "sw"
    command = [sys.executable, "-m", "launch.cli", "sweep", str(cfg_file), "--executor", "local", "--out", str(sw)]
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        pre = None
        while time.monotonic() < deadline and first.poll() is None:
            if pre is None and (sw / "plan.json").is_file():
                pre = next(j for j in load_plan(sw).jobs if j.kind == "pretrain")
            if pre is not None and any(Path(pre.run_dir, "checkpoints").glob("*.pt")):
                break
            time.sleep(0.5)
        assert first.poll() is None and pre is not None, "the sweep ended before its first checkpoint"

        second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert first.poll() is None, "the first sweep ended before the second one was refused"
        assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
        err = [x for x in second.stderr.splitlines() if x.startswith("grainsweep")]
        assert len(err) == 1 and f"in use by pid {first.pid}" in err[0] and "grainsweep sweep (local)" in err[0]
        assert len(records.read_records(sw)) == 1 and len(read_starts(pre)) == 1  # the second ran nothing

        # while the first runs: the run in flight is "running", the one after it waits in that process
        rows = {r["kind"]: r for r in status.job_states(sw)}
        assert rows["pretrain"]["state"] == "running" and rows["transfer"]["state"] == "pending", rows
        first.send_signal(signal.SIGINT)
        out, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 130, out[-3000:]
    assert lock.owner(sw) is None
    rows = {r["kind"]: r for r in status.job_states(sw)}
    assert rows["pretrain"]["state"] == "todo" and rows["pretrain"]["note"].startswith("interrupted; resumes from")
    assert rows["transfer"]["state"] == "todo" and rows["transfer"]["note"] == "not started"
    assert records.read_records(sw)[-1]["states"] == {}


def test_auto_reruns_locally_with_a_note_when_the_controller_is_down(small, controller_down, capsys):
    cfg, _, root = small
    _, recs = sweep.run_sweep(cfg, root / "sw", executor="auto")
    out = capsys.readouterr().out
    assert recs == [] and "note: executor auto:" in out and "0 to run (local)" in out
