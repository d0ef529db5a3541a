"""Convert's hardening (issue 13): --force replaces only our own datasets, damaged outputs are noticed, concurrent
writers do not lose work, killed conversions leave no workers behind, a full disk leaves no half folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_tools import convert_synthetic
from data_tools.publish import DatasetExistsError
from launch.cli import main as cli

REPO = Path(__file__).resolve().parents[1]
TINY = ["convert", "synthetic", "--preset", "tiny", "--set", "workers=1"]


@pytest.fixture()
def dataset(tiny_dataset, tmp_path) -> Path:
    """A private copy of the tiny dataset (tests here damage it)."""
    out = tmp_path / "ds"
    shutil.copytree(tiny_dataset, out)
    return out


# --force replaces only a grainsweep dataset
def test_force_refuses_a_folder_we_did_not_write(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "labels.csv").write_text("path,leaf\na.png,x\n")
    (out / "a.png").write_bytes(b"not really")
    assert cli([*TINY, "--out", str(out), "--force"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out) in err and "--force" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "labels.csv"]
    # a manifest alone (no hierarchy.json) does not make it ours either
    (out / "manifest.json").write_text(json.dumps({"format": 1, "inputs_hash": "x"}))
    with pytest.raises(DatasetExistsError):
        convert_synthetic.convert(out, convert_synthetic.load_config("tiny", None, ["workers=1"]), force=True)
    assert (out / "a.png").is_file()


def test_force_refuses_our_dataset_holding_the_users_files(dataset, capsys):
    (dataset / "notes.txt").write_text("mine")
    assert cli([*TINY, "--out", str(dataset), "--force", "--set", "synthetic.seed=5"]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert (dataset / "notes.txt").read_text() == "mine"


def test_force_replaces_our_dataset(dataset):
    (dataset / "derived").mkdir(exist_ok=True)
    assert cli([*TINY, "--out", str(dataset), "--force", "--set", "synthetic.seed=5"]) == 0
    assert json.loads((dataset / "manifest.json").read_text())["inputs"]["synthetic"]["seed"] == 5


# damaged outputs
@pytest.mark.parametrize("damage", ["truncate", "corrupt_header", "delete"])
def test_damaged_dataset_is_not_up_to_date(dataset, capsys, damage):
    assert cli([*TINY, "--out", str(dataset)]) == 0
    assert "up to date" in capsys.readouterr().out
    beton = dataset / "train.beton"
    if damage == "truncate":
        with open(beton, "r+b") as f:
            f.truncate(beton.stat().st_size // 2)
    elif damage == "corrupt_header":
        with open(beton, "r+b") as f:
            f.seek(8)
            f.write(b"\xff\xff\xff\xff")
    else:
        beton.unlink()
    assert cli([*TINY, "--out", str(dataset)]) == 2
    err = capsys.readouterr().err
    assert "damaged" in err and "train.beton" in err and "--force" in err
    assert cli([*TINY, "--out", str(dataset), "--force"]) == 0
    assert cli([*TINY, "--out", str(dataset)]) == 0
    assert "up to date" in capsys.readouterr().out


# concurrent writers
def _grainsweep(*args: str, **kw) -> subprocess.Popen:
    kw = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kw}
    return subprocess.Popen([sys.executable, "-m", "launch.cli", *args], cwd=REPO, text=True, **kw)


def test_concurrent_derives_all_register(dataset):
    from core.format import hierarchy as hlib

    groups = [2, 3, 4]
    procs = [_grainsweep("derive", "random", str(dataset), "--groups", str(g)) for g in groups]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(groups), outs
    assert sorted(hlib.load(dataset).derived) == sorted(f"random{g}_seed0" for g in groups)
    assert not Path(str(dataset) + ".lock").exists()


def _wait_for(cond, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert proc.poll() is None, f"the first conversion ended before {what}: {proc.communicate()}"
        assert time.time() < deadline, f"never saw {what}"
        time.sleep(0.05)


def test_concurrent_converts_other_inputs_refused_same_inputs_wait(tmp_path, capsys):
    out = tmp_path / "ds"
    first = [*TINY, "--out", str(out), "--set", "synthetic.train_per_leaf=200"]
    proc = _grainsweep(*first)
    try:
        _wait_for(lambda: (tmp_path / "ds.lock").exists(), proc, "its lock")
        # other inputs into the folder being written: refused at once, one line naming the folder and the owner
        assert cli([*TINY, "--out", str(out), "--set", "synthetic.seed=7"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(out) in err and f"pid {proc.pid}" in err
        # the same conversion waits for the first and finds its result
        assert cli(first) == 0
        assert "up to date" in capsys.readouterr().out
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert json.loads((out / "manifest.json").read_text())["inputs"]["synthetic"]["train_per_leaf"] == 200
    assert not (tmp_path / "ds.lock").exists()


# a killed conversion leaves no worker behind
def _many_images(root: Path, n: int) -> Path:
    """A CSV source of n small distinct PNGs in 4 leaves under 2 classes."""
    import numpy as np
    from PIL import Image

    (root / "im").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["path,leaf,group"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / "im" / f"{i}.png")
        lines.append(f"im/{i}.png,l{i % 4},g{i % 2}")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return root / "train.csv"


@pytest.mark.parametrize("stage", ["pre-pass", "writer"])
def test_sigkill_of_a_conversion_leaves_no_worker_alive(tmp_path, stage):
    import psutil

    out = tmp_path / "ds"
    if stage == "writer":
        args = [*TINY, "--out", str(out), "--set", "synthetic.train_per_leaf=400", "--set", "workers=2"]
        started = lambda: (any(tmp_path.glob(".ds.partial-*/.train.beton.tmp"))  # noqa: E731
                           and len(psutil.Process(proc.pid).children()) >= 2)
    else:
        args = ["convert", "csv", str(_many_images(tmp_path / "src", 3000)), "--out", str(out), "--workers", "2"]
        started = lambda: len(psutil.Process(proc.pid).children()) >= 2  # noqa: E731 - the pool is up
    proc = _grainsweep(*args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(started, proc, f"the {stage}")
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 2
    finally:
        proc.kill()  # SIGKILL to the parent only: its workers must notice by themselves
        proc.wait()
    gone, alive = psutil.wait_procs(children, timeout=10)
    survivors = [(p.pid, p.cmdline()) for p in alive]
    for p in alive:  # not left behind by a failing test either
        p.kill()
    assert not survivors


# environment faults
@pytest.fixture()
def small_disk(tmp_path):
    """A 3 MiB tmpfs (a real file system that fills up: ENOSPC), unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_disk_full_is_one_line_and_leaves_no_folder(small_disk, capsys):
    out = small_disk / "ds"
    assert cli([*TINY, "--out", str(out), "--set", "synthetic.train_per_leaf=200"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "%|" not in ln]  # no progress bars
    assert len(err) == 1 and "no space left" in err[0] and "--out" in err[0], err
    assert sorted(p.name for p in small_disk.iterdir()) == []  # no folder, no partial, no lock


@pytest.fixture()
def unprivileged_copy(tiny_dataset):
    """A copy of the tiny dataset that user 'nobody' can reach (root reads any file, so the reader must not be
    root for a permission to matter), and a runner of `grainsweep` as that user."""
    import tempfile

    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run a command as another user")
    top = Path(tempfile.mkdtemp(prefix="gs-perm-"))
    try:
        top.chmod(0o777)
        shutil.copytree(tiny_dataset, top / "ds")
        for p in [top / "ds", *(top / "ds").rglob("*")]:
            p.chmod(0o777 if p.is_dir() else 0o644)

        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                                   "-m", "launch.cli", *args], cwd=REPO, capture_output=True, text=True,
                                  timeout=300, env={**os.environ, "NUMBA_CACHE_DIR": str(top / "numba")})

        yield top / "ds", run
    finally:
        shutil.rmtree(top)


def test_unreadable_files_are_one_line_in_tree_and_derive(unprivileged_copy):
    ds, run = unprivileged_copy
    (ds / "train.beton").chmod(0o000)
    r = run("derive", "random", str(ds), "--groups", "2")
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(err) == 1 and "train.beton" in err[0] and "ermission" in err[0], r.stderr
    (ds / "hierarchy.json").chmod(0o000)
    r = run("tree", str(ds))
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(err) == 1 and "hierarchy.json" in err[0] and "ermission" in err[0], r.stderr
