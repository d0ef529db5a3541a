"""Training engine end to end on real betons: a tiny model fits, resume equals an uninterrupted run, outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.train import checkpoint
from core.format import config as cfglib
from core.format import hierarchy as hlib
from core.train.run_config import RunConfig
from core.train import parts, run as train_run
from launch.cli import main as cli

REPO = Path(__file__).resolve().parent.parent

MLP = ("model.name=bmlp", "model.kwargs={depth: 2, width: 128}", "optim.name=adamw", "optim.lr=0.003",
       "optim.weight_decay=0.01")
CNN = ("model.name=resnet10t", "optim.name=sgd", "optim.lr=0.2", "optim.weight_decay=5e-5")


def run_cfg(data: Path, *sets: str, model: tuple[str, ...] = MLP) -> RunConfig:
    return cfglib.load(RunConfig, None, [
        f"data.path={data}", "data.resolution=16", "data.batch_size=32", "data.workers=1",
        "data.scale=[0.6, 1.0]", *model, "optim.warmup_epochs=0.5", "train.epochs=12", "train.eval_every=12",
        *sets])


@pytest.mark.parametrize("level", ["subclass", "superclass"])
def test_tiny_model_fits_fine_and_coarse(learnable, tmp_path, level):
    h = hlib.load(learnable)
    result = train_run.run(run_cfg(learnable, f"data.level={level}", model=CNN), tmp_path / "run")
    chance = 1.0 / h.level(level).num_classes
    acc = result[f"acc1/{level}"]
    assert acc > chance + 0.5 * (1 - chance), (level, acc, chance)  # far above chance
    # coarser levels are evaluated too, from the fine probabilities
    for coarser in h.names[h.index(level):]:
        assert f"acc1/{coarser}" in result and f"acc5/{coarser}" in result
    assert result["n"] == 8 * 16


def test_outputs_metrics_tensorboard_checkpoint(tiny_dataset, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    train_run.run(run_cfg(tiny_dataset, "train.epochs=2", "train.eval_every=1"), run_dir)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    for r in lines:
        assert r["images_per_second"] > 0 and 0 <= r["data_wait_fraction"] <= 1
        assert "val/acc1/subclass" in r and "val/acc1_hard/subclass" in r and "val/acc1/superclass" in r
    ea = EventAccumulator(str(run_dir / "tb"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    for tag in ("train_loss", "lr", "images_per_second", "data_wait_fraction", "memory_mb",
                "val/acc1/subclass"):
        assert tag in tags, tags
    assert (run_dir / "config.yaml").is_file() and "git_sha" in (run_dir / "provenance.json").read_text()
    assert json.loads((run_dir / "result.json").read_text())["level"] == "subclass"
    ckpt = checkpoint.latest(run_dir / "checkpoints")
    state = torch.load(ckpt, weights_only=True)
    keys = list(state["model"]) if "model" in state else []
    assert keys and not any(k.startswith("_orig_mod") for k in keys)
    # eval of the finished run reproduces the final evaluation
    assert cli(["eval", str(run_dir)]) == 0
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["acc1/subclass"] == pytest.approx(lines[-1]["val/acc1/subclass"])


def test_resume_after_kill_equals_uninterrupted(tiny_dataset, tmp_path):
    sets = [f"--set={s}" for s in ("data.resolution=16", "data.batch_size=16", "data.workers=1",
                                   "model.name=bmlp", "model.kwargs={depth: 2, width: 64}", "train.epochs=4",
                                   "train.eval_every=4", "data.scale=[0.3, 1.0]", "train.seed=3")]
    base = [sys.executable, "-m", "launch.cli", "train", "--data", str(tiny_dataset)]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    subprocess.run([*base, "--out", str(whole), *sets], cwd=REPO, check=True, capture_output=True)
    # the same run, killed once its first checkpoint is on disk, then resumed
    proc = subprocess.Popen([*base, "--out", str(cut), *sets], cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not list((cut / "checkpoints").glob("epoch*.pt")) and time.time() < deadline:
            assert proc.poll() is None, "run ended before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (cut / "result.json").exists()
    subprocess.run([*base, "--out", str(cut), *sets, "--resume"], cwd=REPO, check=True, capture_output=True)
    a = torch.load(checkpoint.latest(whole / "checkpoints"), weights_only=True)
    b = torch.load(checkpoint.latest(cut / "checkpoints"), weights_only=True)
    assert a["epoch"] == b["epoch"] == 4 and a["step"] == b["step"]
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-6)
    ra = json.loads((whole / "result.json").read_text())
    rb = json.loads((cut / "result.json").read_text())
    assert ra["acc1/subclass"] == pytest.approx(rb["acc1/subclass"])
    epochs = [json.loads(x)["epoch"] for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]  # no epoch logged twice


def test_bad_run_configs_name_the_culprit(learnable, tmp_path, capsys):
    out = str(tmp_path / "r")
    assert cli(["train", "--data", str(learnable), "--level", "genus", "--out", out]) == 2
    assert "genus" in capsys.readouterr().err
    assert cli(["train", "--data", str(tmp_path / "none"), "--out", out]) == 2
    assert "none" in capsys.readouterr().err
    assert cli(["train", "--data", str(learnable), "--out", out, "--set", "optim.name=adam"]) == 2
    assert "optim.name" in capsys.readouterr().err
    assert cli(["train", "--data", str(learnable), "--out", out, "--set", "data.batch_size=100000"]) == 2
    assert "batch_size" in capsys.readouterr().err


def test_progressive_resizing_ramps_resolution(tiny_dataset, tmp_path):
    """Also the compiled path (model and device stage under torch.compile) with one size change per epoch."""
    run_dir = tmp_path / "run"
    cfg = run_cfg(tiny_dataset, "train.epochs=3", "train.progressive=[8, 0, 2]", "data.batch_size=16",
                  "model.compile=always", model=CNN)
    train_run.run(cfg, run_dir)
    res = [json.loads(x)["resolution"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert res == [parts.resolution_at(e, 16, (8, 0, 2)) for e in range(3)]
    assert res[0] == 8 and res[-1] == 16 and res == sorted(res)
    with pytest.raises(cfglib.ConfigError, match="progressive"):
        parts.build_parts(run_cfg(tiny_dataset, "train.progressive=[8, 0, 2]"))
