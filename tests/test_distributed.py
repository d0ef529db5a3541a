"""One run over two processes (gloo on the CPU, real processes started as torchrun starts them, real betons): the
same steps as one process with the whole batch, every row once, evaluation equal to one process's, exact resume
after a kill, and a dead rank named by the survivor."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data.loader import build_loader
from core.data.resident import build_resident_loader
from core.format import config as cfglib
from core.train import checkpoint
from core.train.distributed import World
from core.train.parts import _per_rank_batch
from core.train.run import run
from core.train.run_config import RunConfig, RunConfigError

REPO = Path(__file__).resolve().parent.parent
DEAD_RANK_S = 60  # a survivor must stop this soon after its peer dies (gloo sees the closed socket at once)

# what each rank runs: a run (and optionally an evaluation of another run folder) inside one process group
WORKER = """
import json, sys
from core.format import config as cfglib
from core.train.distributed import init_from_env
from core.train.evaluate import evaluate_run
from core.train.run import run
from core.train.run_config import RunConfig
sets, out, resume, evaluate = json.loads(sys.argv[1])
with init_from_env("cpu"):
    run(cfglib.load(RunConfig, None, sets), out, resume=resume)
    if evaluate:
        evaluate_run(evaluate)
"""


def settings(data: Path, *more: str) -> list[str]:
    # no batch statistics (bmlp: LayerNorm), whole-image crops (scale 1 at the stored 16 px) and no flip: a rank's
    # share of a batch then goes through exactly what one process does with it
    return [f"data.path={data}", "data.resolution=16", "data.batch_size=32", "data.val_batch_size=10",
            "data.workers=1", "data.scale=[1.0, 1.0]", "data.flip=false", "model.name=bmlp",
            "model.kwargs={depth: 2, width: 64}", "optim.name=adamw", "optim.lr=0.003", "optim.warmup_epochs=0.5",
            "train.epochs=6", "train.seed=5", *more]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp: Path, name: str, sets: list[str], out: Path, resume: bool = False,
           evaluate: Path | None = None) -> list[subprocess.Popen]:
    """Two ranks with torchrun's environment; their output goes to tmp/name.<rank>.log."""
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "GRAINSWEEP_DIST_TIMEOUT_S": "120"}
        log = open(tmp / f"{name}.{rank}.log", "w")
        args = json.dumps([sets, str(out), resume, str(evaluate) if evaluate else None])
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, args], cwd=REPO, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))
        log.close()
    return procs


def finish(tmp: Path, name: str, procs: list[subprocess.Popen], timeout: float = 600) -> None:
    for rank, p in enumerate(procs):
        try:
            code = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                os.killpg(q.pid, signal.SIGKILL)
            raise
        assert code == 0, f"rank {rank} exited {code}:\n{(tmp / f'{name}.{rank}.log').read_text()[-3000:]}"


def weights(run_dir: Path) -> dict:
    return torch.load(checkpoint.latest(run_dir / "checkpoints"), weights_only=True)


def files(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if "tb" not in p.parts}


def test_two_ranks_equal_one_process_and_resume_exactly(tiny_dataset, tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    cfg = cfglib.load(RunConfig, None, settings(tiny_dataset, "train.eval_every=6"))
    run(cfg, one)  # this process, WORLD_SIZE unset
    finish(tmp_path, "two", launch(tmp_path, "two", settings(tiny_dataset, "train.eval_every=6"), two,
                                   evaluate=one))

    # 2 x 16 images per step take the steps of 1 x 32: same losses, same weights
    lines = [[json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()] for d in (one, two)]
    assert [r["step"] for r in lines[0]] == [r["step"] for r in lines[1]] == [3 * e for e in range(1, 7)]
    for a, b in zip(*lines):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
    a, b = weights(one), weights(two)
    assert b["extra"]["world_size"] == 2 and a["extra"]["world_size"] == 1
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=1e-4, atol=1e-5)
    # rank 0 alone wrote, the same files as one process
    assert files(two) == files(one) - {"eval.json"}  # eval.json: the two-rank evaluation below

    # evaluation over two ranks (each its own batches) counts every val image once: one process's figures exactly
    ev = json.loads((one / "eval.json").read_text())
    result = json.loads((one / "result.json").read_text())
    assert ev["n"] == 48
    for k, v in result.items():
        if k not in ("level", "epochs"):
            assert ev[k] == v, k

    # a checkpoint of two ranks resumes in one process (here: nothing left to train, only the evaluation), and
    # says that the world size changed
    again = run(cfg, two, resume=True)
    assert "written by 2" in capsys.readouterr().out
    assert again == json.loads((two / "result.json").read_text())

    # killed mid-run: rank 1 dies, rank 0 stops naming it; resumed on two ranks = an uninterrupted two-rank run
    # flip: random draws per rank, restored per rank; resident data: no ffcv pipelines to compile in 6 processes
    flip = ["data.flip=true", "data.resident=true", "data.scale=[0.5, 1.0]"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    finish(tmp_path, "whole", launch(tmp_path, "whole", settings(tiny_dataset, *flip), whole))
    procs = launch(tmp_path, "cut", settings(tiny_dataset, *flip), cut)
    try:
        deadline = time.time() + 300
        while not list((cut / "checkpoints").glob("epoch*.pt")) and time.time() < deadline:
            assert all(p.poll() is None for p in procs), (tmp_path / "cut.0.log").read_text()[-3000:]
            time.sleep(0.02)
        os.killpg(procs[1].pid, signal.SIGKILL)
        procs[1].wait()
        t0 = time.time()
        code = procs[0].wait(timeout=DEAD_RANK_S)
        stopped_s = time.time() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    log = (tmp_path / "cut.0.log").read_text()
    assert not (cut / "result.json").exists(), "the run ended before it could be killed"
    assert code != 0 and "rank 1" in log and "died" in log, log[-3000:]
    assert stopped_s < DEAD_RANK_S
    finish(tmp_path, "resume", launch(tmp_path, "resume", settings(tiny_dataset, *flip), cut, resume=True))
    a, b = weights(whole), weights(cut)
    assert a["epoch"] == b["epoch"] == 6 and a["step"] == b["step"]
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=0, atol=0)
    epochs = [json.loads(x)["epoch"] for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, 5, 6]


def _rows(loader, epoch: int) -> list[np.ndarray]:
    loader.set_epoch(epoch)
    return [b.extras["index"].cpu().numpy().copy() for b in loader]


@pytest.mark.parametrize("resident", [False, True])
def test_rank_shares_cover_every_row_once(tiny_dataset, resident):
    def make(split: str, batch_size: int, rank: int, world: int):
        common = dict(split=split, batch_size=batch_size, levels=["subclass"], resolution=16,
                      order="random" if split == "train" else "sequential", drop_last=None, extra_columns=["index"],
                      seed=3, device="cpu", scale=(0.5, 1.0) if split == "train" else None)
        if resident:
            return build_resident_loader(tiny_dataset / f"{split}.beton", max_bytes=10**9, shard=(rank, world),
                                         **common)
        return build_loader(tiny_dataset / f"{split}.beton", num_workers=1, os_cache=True,
                            distributed=(rank, world) if world > 1 else False, **common)

    # training: 96 rows, global batch 40 -> 2 steps; rank r takes its 20 rows of every global batch
    whole = make("train", 40, 0, 1)
    ranks = [make("train", 20, r, 2) for r in range(2)]
    assert len(whole) == len(ranks[0]) == len(ranks[1]) == 2
    for epoch in (0, 1):
        one, shares = _rows(whole, epoch), [_rows(x, epoch) for x in ranks]
        for step, rows in enumerate(one):
            assert sorted(np.concatenate([s[step] for s in shares])) == sorted(rows)  # the one-process step
        seen = np.concatenate([np.concatenate(s) for s in shares])
        assert len(seen) == len(set(seen)) == 80  # each row at most once; the 16 left over, as one process
    # evaluation: 48 rows in batches of 10 dealt to 2 ranks: every row once, the one-process batches
    whole = _rows(make("val", 10, 0, 1), 0)
    shares = [_rows(make("val", 10, r, 2), 0) for r in range(2)]
    assert [len(s) for s in shares] == [3, 2]
    dealt = [b for pair in zip(shares[0], shares[1] + [None]) for b in pair if b is not None]
    assert [list(b) for b in dealt] == [list(b) for b in whole]


def test_global_batch_must_divide(tiny_dataset):
    cfg = cfglib.load(RunConfig, None, settings(tiny_dataset))
    world = World(rank=0, size=3, local_rank=0, device=torch.device("cpu"))
    with pytest.raises(RunConfigError, match=r"data.batch_size=32 .* WORLD_SIZE=3"):
        _per_rank_batch(cfg, world)
    with pytest.raises(RunConfigError, match="data.order=quasi_random"):
        _per_rank_batch(cfglib.with_values(cfg, {"data.order": "quasi_random"}), world)
    assert _per_rank_batch(cfg, World(size=2, device=torch.device("cpu"))) == 16
