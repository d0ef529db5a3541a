"""core.format.run_folder (a run folder's files and state, without torch) and the RunConfig checks made at load
(core/train/run_config.py): values that cannot work fail naming the key, from a file or the command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from core.format import config as cfglib
from core.format.run_folder import RunFolder, RunFolderError, dataset_fingerprint, numbered_checkpoints
from core.train.run_config import OPTIMIZERS, SCHEDULES, RunConfig

REPO = Path(__file__).resolve().parent.parent


def test_run_folder_imports_no_torch():
    code = ("import sys, core.format.run_folder, core.train.run_config; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_state_of_a_run_folder(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert not folder.holds_run() and not folder.is_done() and folder.newest_checkpoint() is None
    folder.refuse_unless_resume(resume=False)  # nothing there yet: a new run may start
    with pytest.raises(RunFolderError, match="no config.yaml") as e:
        folder.require_config("--from")
    assert str(e.value).startswith(f"--from {folder.path}:")
    with pytest.raises(RunFolderError, match="not finished"):
        folder.result()

    folder.checkpoint_dir.mkdir(parents=True)
    for name in ("epoch0009.pt", "epoch0010.pt", "epoch0002.pt", ".epoch0011.pt.tmp-1", "notes.txt"):
        (folder.checkpoint_dir / name).write_bytes(b"x")
    assert [p.name for p in folder.checkpoints()] == ["epoch0010.pt", "epoch0009.pt", "epoch0002.pt"]
    assert folder.newest_checkpoint() == folder.checkpoint_dir / "epoch0010.pt"
    assert numbered_checkpoints(tmp_path / "missing") == []
    assert folder.holds_run()
    with pytest.raises(RunFolderError, match="already holds a run; pass --resume"):
        folder.refuse_unless_resume(resume=False)
    folder.refuse_unless_resume(resume=True)

    folder.config_file.write_text("train: {epochs: 1}\n")
    assert folder.require_config() == folder.config_file
    folder.result_file.write_text(json.dumps({"acc1/x": 0.5}))
    assert folder.is_done() and folder.result() == {"acc1/x": 0.5}
    assert folder.eval_file() == folder.path / "eval.json"
    assert folder.eval_file(tmp_path / "other" / "cifar") == folder.path / "eval-cifar.json"


def test_dataset_fingerprint_and_check(tmp_path):
    data = tmp_path / "ds"
    data.mkdir()
    (data / "train.beton").write_bytes(b"123")
    assert dataset_fingerprint(data) == "sizes:3,-"  # no manifest (a dataset made by hand): the betons' sizes
    (data / "manifest.json").write_text(json.dumps({"inputs_hash": "abc"}))
    assert dataset_fingerprint(data) == "inputs:abc"
    folder = RunFolder(tmp_path / "run")
    folder.check_dataset(data, explicit=False)  # a run from before dataset.json: nothing to compare
    folder.record_dataset(data)
    assert folder.dataset_record() == {"path": str(data), "fingerprint": "inputs:abc"}
    folder.check_dataset(data, explicit=False)
    (data / "manifest.json").write_text(json.dumps({"inputs_hash": "def"}))  # re-converted with other inputs
    with pytest.raises(RunFolderError, match="pass --data") as e:
        folder.check_dataset(data, explicit=False)
    assert "inputs:abc" in str(e.value) and "inputs:def" in str(e.value)
    folder.check_dataset(data, explicit=True)  # named by --data: the user's choice


@pytest.mark.parametrize("key, value", [
    ("train.epochs", 0), ("train.epochs", -3), ("train.eval_every", 0), ("train.checkpoint_every", 0),
    ("train.keep_checkpoints", 0), ("optim.lr", math.nan), ("optim.lr", -0.1), ("optim.lr", math.inf),
    ("optim.weight_decay", -1.0), ("optim.warmup_epochs", 11.0), ("optim.label_smoothing", 1.0),
    ("train.mixup_alpha", -1.0), ("data.scale", (0.8, 0.2)),
])
def test_config_values_that_cannot_work_fail_naming_the_key(key, value):
    cfg = cfglib.load(RunConfig)  # defaults: 10 epochs
    with pytest.raises(cfglib.ConfigError, match=key.split(".")[1]) as e:
        cfglib.with_values(cfg, {key: value})
    assert "\n" not in str(e.value)


def test_config_checks_from_a_file_and_the_command_line(tmp_path, capsys):
    from launch.cli import main as cli

    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: 2}\noptim: {warmup_epochs: 3}\n")
    with pytest.raises(cfglib.ConfigError, match="warmup_epochs"):
        cfglib.load(RunConfig, bad)
    assert cfglib.load(RunConfig, None, ["train.epochs=2", "optim.warmup_epochs=2"]).optim.warmup_epochs == 2
    for sets, key in ((["train.epochs=0"], "train.epochs"), (["optim.lr=.nan"], "optim.lr"),
                      (["train.eval_every=0"], "train.eval_every"), (["train.epochs=2"], "warmup_epochs")):
        config = ["--config", str(bad)] if key == "warmup_epochs" else []
        args = ["train", *config, "--out", str(tmp_path / "r"), *[f"--set={s}" for s in sets], "--print-config"]
        assert cli(args) == 2
        err = capsys.readouterr().err.strip()
        assert key in err and "\n" not in err, err
    assert not (tmp_path / "r").exists()


def test_names_listed_once():
    assert OPTIMIZERS == ("sgd", "adamw") and SCHEDULES == ("cosine", "linear", "constant")
    for schedule in SCHEDULES:  # every schedule the LR code knows is a valid config value, and no other
        assert cfglib.with_values(cfglib.load(RunConfig), {"optim.schedule": schedule}).optim.schedule == schedule
    with pytest.raises(cfglib.ConfigError, match="optim.schedule"):
        cfglib.with_values(cfglib.load(RunConfig), {"optim.schedule": "step"})
    assert cfglib.load(RunConfig).train.keep_checkpoints == 2  # a damaged newest checkpoint has a fallback
