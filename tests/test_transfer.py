"""Transfer (core/train/transfer.py, `grainsweep finetune`) on real betons: linear probe freezes everything but the new
head (BatchNorm statistics included), full fine-tuning moves the backbone, resume equals an uninterrupted
transfer, a pretrained probe beats chance, and the source run is recorded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from core.format import run_folder
from core.train import checkpoint
from core.format import config as cfglib
from core.format import hierarchy as hlib
from core.train import run as train_run, transfer
from core.train.run_config import RunConfig
from data_tools import convert_synthetic
from launch.cli import main as cli

MLP = ("model.name=bmlp", "model.kwargs={depth: 2, width: 64}", "optim.name=adamw", "optim.lr=0.003",
       "optim.weight_decay=0.01")


def pretrain(data: Path, out: Path, *sets: str, model=MLP) -> Path:
    cfg = cfglib.load(RunConfig, None, [f"data.path={data}", "data.level=subclass", "data.resolution=16",
                                        "data.batch_size=16", "data.workers=1", *model, "train.epochs=2",
                                        "train.eval_every=100", *sets])
    train_run.run(cfg, out)
    return out


@pytest.fixture(scope="module")
def source(tiny_dataset, tmp_path_factory) -> Path:
    return pretrain(tiny_dataset, tmp_path_factory.mktemp("src") / "run")


def _state(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def test_linear_probe_trains_only_the_head(source, tmp_path):
    out = tmp_path / "probe"
    cfg = transfer.transfer_config(source, None, "superclass", {"train.epochs": 2})
    result = transfer.finetune(source, cfg, out, mode="linear")
    h = hlib.load(cfg.data.path)
    assert result["level"] == "superclass" and "acc1/superclass" in result and "acc1_hard/superclass" in result
    before, after = _state(checkpoint.latest(source / "checkpoints")), _state(checkpoint.latest(out / "checkpoints"))
    assert after["head.weight"].shape == (h.level("superclass").num_classes, 64)
    assert not torch.equal(after["head.weight"][:2], before["head.weight"][:2])
    for k, v in before.items():
        if not k.startswith("head."):
            torch.testing.assert_close(after[k], v, rtol=0, atol=0, msg=k)
    rec = json.loads(run_folder.RunFolder(out).transfer_file.read_text())
    assert rec["source"] == str(source.resolve()) and rec["mode"] == "linear"
    assert rec["source_checkpoint"] == checkpoint.latest(source / "checkpoints").name
    assert (rec["source_level"], rec["target_level"]) == ("subclass", "superclass")
    # outputs as for any run
    assert (out / "config.yaml").is_file() and (out / "metrics.jsonl").is_file() and run_folder.RunFolder(out).is_done()


def test_linear_mode_builds_optimizer_over_the_head_only(source):
    model, _ = transfer.build_transfer_model(source, 2, "linear")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["head.weight", "head.bias"]
    from core.train.optim import build_optimizer

    opt = build_optimizer(model, "adamw", lr=0.1, weight_decay=0.1)
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == transfer.trainable_parameters(model)
    full, _ = transfer.build_transfer_model(source, 2, "full")
    assert all(p.requires_grad for p in full.parameters())


def test_linear_probe_keeps_batchnorm_statistics(tiny_dataset, tmp_path):
    src = pretrain(tiny_dataset, tmp_path / "cnn", "train.epochs=1",
                   model=("model.name=resnet10t", "optim.name=sgd", "optim.lr=0.05"))
    cfg = transfer.transfer_config(src, None, "superclass", {"train.epochs": 1})
    transfer.finetune(src, cfg, tmp_path / "probe", mode="linear")
    before = _state(checkpoint.latest(src / "checkpoints"))
    after = _state(checkpoint.latest(tmp_path / "probe" / "checkpoints"))
    frozen = [k for k in before if not k.startswith("net.fc.")]
    assert any("running_mean" in k for k in frozen)
    for k in frozen:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0, msg=k)


def test_full_finetune_moves_the_backbone_and_resumes_exactly(source, tmp_path):
    out = tmp_path / "full"
    cfg = transfer.transfer_config(source, None, "class", {"train.epochs": 3, "train.keep_checkpoints": 3})
    whole = transfer.finetune(source, cfg, out, mode="full")
    before = _state(checkpoint.latest(source / "checkpoints"))
    after = _state(checkpoint.latest(out / "checkpoints"))
    assert not torch.equal(after["embed.weight"], before["embed.weight"])
    # cut after epoch 2 (as a requeued job finds it), resume: same weights and result as uninterrupted
    cut = tmp_path / "cut"
    shutil.copytree(out, cut)
    (cut / "checkpoints" / "epoch0003.pt").unlink()
    (cut / "result.json").unlink()
    resumed = transfer.finetune(source, cfg, cut, mode="full", resume=True)
    b = _state(checkpoint.latest(cut / "checkpoints"))
    for k in after:
        torch.testing.assert_close(b[k], after[k], rtol=1e-5, atol=1e-6)
    assert resumed["acc1/class"] == pytest.approx(whole["acc1/class"])
    epochs = [json.loads(x)["epoch"] for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_pretrained_linear_probe_beats_chance(tmp_path):
    data = tmp_path / "ds"
    conv = convert_synthetic.load_config(None, None, [
        "synthetic.branching=[2, 2, 2]", "synthetic.image_size=16", "synthetic.train_per_leaf=48",
        "synthetic.val_per_leaf=16", "synthetic.hard_fraction_train=0.0", "synthetic.hard_fraction_val=0.0",
        "synthetic.distractor_prob=0.0", "workers=1"])
    convert_synthetic.convert(data, conv)
    src = pretrain(data, tmp_path / "src", "train.epochs=10", "data.batch_size=32", "data.scale=[0.6, 1.0]")
    cfg = transfer.transfer_config(src, None, "superclass", {"train.epochs": 4})
    result = transfer.finetune(src, cfg, tmp_path / "probe", mode="linear")
    chance = 1 / hlib.load(data).level("superclass").num_classes
    assert result["acc1/superclass"] > chance + 0.5 * (1 - chance), result


def test_finetune_cli(source, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["finetune", "--from", str(source), "--data", str(tiny_dataset), "--level", "superclass",
            "--mode", "linear", "--out", str(out), "--set", "train.epochs=1"]
    assert cli(args) == 0
    assert json.loads((out / "result.json").read_text())["level"] == "superclass"
    capsys.readouterr()
    assert cli(args) == 2  # the folder holds a run: refused without --resume
    assert "--resume" in capsys.readouterr().err
    assert cli([*args, "--resume"]) == 0  # a finished run resumes to its final evaluation
    assert cli([*args[:-2], "--out", str(tmp_path / "x"), "--level", "genus"]) == 2
    assert "genus" in capsys.readouterr().err
    assert cli(["finetune", "--from", str(tmp_path / "nope"), "--level", "class", "--out", str(tmp_path / "y")]) == 2
    assert "nope" in capsys.readouterr().err
    assert cli([*args[:-2], "--out", str(tmp_path / "z"), "--set", "model.name=resnet10t"]) == 2
    assert "model.name" in capsys.readouterr().err
