"""A fused job (core/train/fused.py) on real betons: the same weights, metrics and folders as separate runs of the
same seed (exactly, on the CPU), a rerun skips finished members, a kill + resume (a real process, SIGKILL) ends as
an uninterrupted job, members resume from a common epoch, and groups that cannot be fused are refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.format import config as cfglib
from core.format import hierarchy as hlib
from core.train import checkpoint
from core.train.fused import estimate_bytes, run_fused
from core.train.run import run
from core.train.run_config import RunConfig, RunConfigError
from core.train.semantic_softmax import build_run_model

REPO = Path(__file__).resolve().parent.parent
TIMING = {"images_per_second", "data_wait_fraction", "epoch_seconds", "memory_mb"}  # differ between any two runs
EPOCHS = 2

# the job in a process of its own (killed with SIGKILL by the resume test)
WORKER = """
import json, sys
from core.format import config as cfglib
from core.train.fused import run_fused
from core.train.run_config import RunConfig
sets, levels, outs, resume = json.loads(sys.argv[1])
run_fused([cfglib.load(RunConfig, None, [*sets, f"data.level={lv}"]) for lv in levels], outs, resume=resume)
"""


def settings(data: Path) -> list[str]:
    # random draws of both kinds: flip and mixup in the device stage, dropout in each model's forward
    return [f"data.path={data}", "data.resolution=16", "data.batch_size=16", "data.workers=1",
            "model.name=resnet10t", "model.kwargs={drop_rate: 0.3}", "model.compile=never", "optim.name=adamw",
            "optim.lr=0.003", "optim.warmup_epochs=0.5", f"train.epochs={EPOCHS}", "data.flip=true",
            "train.mixup_alpha=0.4", "train.keep_checkpoints=2", "train.seed=3"]


def cfg_at(data: Path, level: str, *more: str) -> RunConfig:
    return cfglib.load(RunConfig, None, [*settings(data), f"data.level={level}", *more])


@pytest.fixture(scope="module")
def jobs(tiny_dataset, tmp_path_factory) -> tuple[Path, list[str], list[dict], list[dict]]:
    """The 3 levels trained as 3 separate runs and as one fused job."""
    tmp = tmp_path_factory.mktemp("fused")
    levels = hlib.load(tiny_dataset).names
    separate = [run(cfg_at(tiny_dataset, lv), tmp / f"separate-{lv}") for lv in levels]
    fused = run_fused([cfg_at(tiny_dataset, lv) for lv in levels], [tmp / f"fused-{lv}" for lv in levels])
    return tmp, levels, separate, fused


def metrics(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING}
            for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(a: Path, b: Path) -> None:
    """Same checkpoint (weights and optimizer state, bit for bit), metrics and result."""
    sa = torch.load(checkpoint.latest(a / "checkpoints"), weights_only=True)
    sb = torch.load(checkpoint.latest(b / "checkpoints"), weights_only=True)
    assert (sa["epoch"], sa["step"]) == (sb["epoch"], sb["step"])
    assert sa["model"].keys() == sb["model"].keys()
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), (a, b, k)
    for pa, pb in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert all(torch.equal(pa[k], pb[k]) for k in pa if isinstance(pa[k], torch.Tensor))
    assert metrics(a) == metrics(b)
    assert json.loads((a / "result.json").read_text()) == json.loads((b / "result.json").read_text())


def test_fused_job_equals_separate_runs(jobs):
    tmp, levels, separate, fused = jobs
    assert fused == separate
    for lv in levels:
        a, b = tmp / f"separate-{lv}", tmp / f"fused-{lv}"
        assert_same_run(a, b)
        # an ordinary run folder: the same files, the same config
        names = {p.name for p in a.iterdir()}
        assert names == {p.name for p in b.iterdir()}
        assert {"config.yaml", "provenance.json", "dataset.json", "metrics.jsonl", "tb", "checkpoints",
                "result.json"} <= names
        assert (a / "config.yaml").read_text() == (b / "config.yaml").read_text()
        kept = sorted(p.name for p in (b / "checkpoints").iterdir())
        assert kept == [f"epoch{e:04d}.pt" for e in (EPOCHS - 1, EPOCHS)]  # train.keep_checkpoints=2
    assert len({json.dumps(r, sort_keys=True) for r in fused}) == len(levels)  # the members did differ


def test_rerun_skips_finished_members(jobs, tiny_dataset):
    tmp, levels, _, fused = jobs
    before = {lv: (tmp / f"fused-{lv}" / "metrics.jsonl").stat().st_mtime_ns for lv in levels}
    assert run_fused([cfg_at(tiny_dataset, lv) for lv in levels], [tmp / f"fused-{lv}" for lv in levels]) == fused
    assert before == {lv: (tmp / f"fused-{lv}" / "metrics.jsonl").stat().st_mtime_ns for lv in levels}


def test_kill_and_resume_equals_uninterrupted(jobs, tiny_dataset):
    tmp, levels, _, fused = jobs
    outs = [str(tmp / f"cut-{lv}") for lv in levels]
    proc = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps([settings(tiny_dataset), levels, outs, False])],
                            cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # killed once a first checkpoint is on disk: the other members' may be missing
        deadline = time.time() + 300
        while not any(list(Path(o, "checkpoints").glob("epoch*.pt")) for o in outs) and time.time() < deadline:
            assert proc.poll() is None, "the job ended before it could be killed"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not any(Path(o, "result.json").exists() for o in outs)
    assert run_fused([cfg_at(tiny_dataset, lv) for lv in levels], outs, resume=True) == fused
    for lv, out in zip(levels, outs):
        assert_same_run(tmp / f"fused-{lv}", Path(out))
        assert [r["epoch"] for r in metrics(Path(out))] == list(range(1, EPOCHS + 1))  # no epoch logged twice


def test_members_resume_from_the_epoch_all_of_them_reached(tiny_dataset, tmp_path):
    """A job stopped between two members' checkpoints: one member is an epoch ahead. All resume from the epoch
    every member has (the newer checkpoint is removed and its epoch redone) and end as the uninterrupted job.
    (Data on the device, data.resident: the same job, built in a fraction of ffcv's time.)"""
    levels = hlib.load(tiny_dataset).names
    cfgs = [cfg_at(tiny_dataset, lv, "data.resident=true") for lv in levels]
    whole, cut = [tmp_path / f"whole-{lv}" for lv in levels], [tmp_path / f"cut-{lv}" for lv in levels]
    results = run_fused(cfgs, whole)
    for i, (a, b) in enumerate(zip(whole, cut)):
        shutil.copytree(a, b)
        (b / "result.json").unlink()
        if i > 0:  # only the first member saved the last epoch
            (b / "checkpoints" / f"epoch{EPOCHS:04d}.pt").unlink()
    assert run_fused(cfgs, cut, resume=True) == results
    for a, b in zip(whole, cut):
        assert_same_run(a, b)
        assert [r["epoch"] for r in metrics(b)] == list(range(1, EPOCHS + 1))

    # a group whose first member is done: the others train (from their common epoch), the done one is untouched
    part = [tmp_path / f"part-{lv}" for lv in levels]
    for i, (a, b) in enumerate(zip(whole, part)):
        shutil.copytree(a, b)
        if i > 0:
            (b / "result.json").unlink()
            (b / "checkpoints" / f"epoch{EPOCHS:04d}.pt").unlink()
    done_before = {p: p.stat().st_mtime_ns for p in part[0].rglob("*")}
    assert run_fused(cfgs, part, resume=True) == results
    assert done_before == {p: p.stat().st_mtime_ns for p in part[0].rglob("*")}
    for a, b in zip(whole[1:], part[1:]):
        assert_same_run(a, b)


def test_groups_that_cannot_be_fused_are_refused(tiny_dataset, tmp_path):
    levels = hlib.load(tiny_dataset).names
    dirs = [tmp_path / lv for lv in levels[:2]]
    with pytest.raises(RunConfigError, match="train.seed"):
        run_fused([cfg_at(tiny_dataset, levels[0]), cfg_at(tiny_dataset, levels[1], "train.seed=4")], dirs)
    with pytest.raises(RunConfigError, match=r"optim\.lr"):
        run_fused([cfg_at(tiny_dataset, levels[0]), cfg_at(tiny_dataset, levels[1], "optim.lr=0.1")], dirs)
    with pytest.raises(RunConfigError, match="repeat"):
        run_fused([cfg_at(tiny_dataset, levels[0])] * 2, dirs)
    with pytest.raises(RunConfigError, match="distinct folders"):
        run_fused([cfg_at(tiny_dataset, lv) for lv in levels[:2]], [dirs[0], dirs[0]])
    with pytest.raises(ValueError, match="one run folder per config"):
        run_fused([cfg_at(tiny_dataset, lv) for lv in levels], dirs)
    assert not any(d.exists() for d in dirs)


def test_estimate_counts_each_model_and_the_shared_batch_once(tiny_dataset):
    levels = hlib.load(tiny_dataset).names
    cfgs = [cfg_at(tiny_dataset, lv) for lv in levels]
    one, all_ = estimate_bytes(cfgs[:1]), estimate_bytes(cfgs)
    h = hlib.load(tiny_dataset)
    weights = [sum(p.numel() * 4 for p in build_run_model(c, h, lv).parameters()) for c, lv in zip(cfgs, levels)]
    assert one >= 4 * weights[0]  # weights, gradients and AdamW's two states
    assert all_ - one >= 4 * sum(weights[1:])  # each further model adds its own
    assert all_ - one < 4 * sum(weights[1:]) + one  # but not another batch
    bigger = estimate_bytes([cfg_at(tiny_dataset, lv, "data.batch_size=64") for lv in levels])
    assert bigger > all_


def test_two_ranks_train_every_member_on_their_shares(tiny_dataset, tmp_path):
    """WORLD_SIZE=2 (gloo, real processes as torchrun starts them): each rank serves its half of every batch to
    all members (DistributedDataParallel per member); rank 0 writes the folders. Same steps as one process (the
    settings of tests/test_distributed.py: a rank's share goes through what one process does with it)."""
    from tests.test_distributed import _free_port, finish

    sets = [f"data.path={tiny_dataset}", "data.resolution=16", "data.batch_size=32", "data.workers=1",
            "data.scale=[1.0, 1.0]", "data.flip=false", "data.resident=true", "model.name=bmlp",
            "model.kwargs={depth: 2, width: 64}", "optim.name=adamw", "optim.lr=0.003", "optim.warmup_epochs=0.5",
            "train.epochs=2", "train.seed=5"]
    levels = hlib.load(tiny_dataset).names[:2]
    one = [run(cfglib.load(RunConfig, None, [*sets, f"data.level={lv}"]), tmp_path / f"one-{lv}") for lv in levels]
    outs = [str(tmp_path / f"two-{lv}") for lv in levels]
    port, procs = _free_port(), []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "GRAINSWEEP_DIST_TIMEOUT_S": "120"}
        with open(tmp_path / f"two.{rank}.log", "w") as log:
            procs.append(subprocess.Popen([sys.executable, "-c", WORKER, json.dumps([sets, levels, outs, False])],
                                          cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    finish(tmp_path, "two", procs)
    for lv, expected, out in zip(levels, one, outs):
        a = torch.load(checkpoint.latest(tmp_path / f"one-{lv}" / "checkpoints"), weights_only=True)
        b = torch.load(checkpoint.latest(Path(out) / "checkpoints"), weights_only=True)
        assert b["extra"]["world_size"] == 2 and (a["step"], a["epoch"]) == (b["step"], b["epoch"])
        for k in a["model"]:
            torch.testing.assert_close(b["model"][k], a["model"][k], rtol=1e-4, atol=1e-5)
        got = json.loads(Path(out, "result.json").read_text())
        assert got.keys() == expected.keys() and got["n"] == expected["n"]
        assert got[f"acc1/{lv}"] == pytest.approx(expected[f"acc1/{lv}"], abs=1 / expected["n"])
