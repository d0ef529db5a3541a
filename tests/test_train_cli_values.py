"""Values given to `grainsweep train / eval / finetune` reach the run as typed, whole values: a level named `on`
(YAML 1.1 reads it as true) stays a string, a dataset folder whose path holds ' #' (YAML starts a comment there)
stays whole. Real CLI, real betons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from core.format import config as cfglib
from core.format import hierarchy as hlib
from core.format.run_folder import RunFolder
from data_tools import convert_synthetic
from launch.cli import main as cli

SETS = [f"--set={s}" for s in ("data.resolution=16", "data.batch_size=16", "data.workers=1", "model.name=bmlp",
                               "model.kwargs={depth: 1, width: 32}", "model.compile=never", "optim.name=adamw",
                               "optim.lr=0.003", "train.epochs=1", "train.device=cpu")]


@pytest.fixture(scope="module")
def on_dataset(tmp_path_factory) -> Path:
    """The tiny preset with its middle level named 'on', in a folder whose path holds ' #'."""
    out = tmp_path_factory.mktemp("values") / "data #1" / "tiny"
    cfg = convert_synthetic.load_config("tiny", None, ["workers=1"])
    cfg = cfglib.with_values(cfg, {"synthetic.level_names": ("subclass", "on", "superclass")})
    convert_synthetic.convert(out, cfg)
    assert hlib.load(out).names == ["subclass", "on", "superclass"]
    return out


@pytest.fixture(scope="module")
def on_run(on_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("values-run") / "run"
    assert cli(["train", "--data", str(on_dataset), "--level", "on", "--out", str(out), *SETS]) == 0
    return out


def test_train_with_level_on_and_hash_in_path(on_run, on_dataset):
    cfg = cfglib.read_yaml(RunFolder(on_run).config_file)
    assert cfg["data"]["level"] == "on" and cfg["data"]["path"] == str(on_dataset)
    result = RunFolder(on_run).result()
    assert result["level"] == "on" and "acc1/on" in result and "acc1/superclass" in result


def test_print_config_keeps_the_values(on_dataset, tmp_path, capsys):
    assert cli(["train", "--data", str(on_dataset), "--level", "on", "--model", "null", "--out",
                str(tmp_path / "r"), "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert (cfg["data"]["level"], cfg["data"]["path"], cfg["model"]["name"]) == ("on", str(on_dataset), "null")


def test_eval_with_level_on_and_hash_in_path(on_run, on_dataset):
    assert cli(["eval", str(on_run)]) == 0
    ev = json.loads(RunFolder(on_run).eval_file().read_text())
    assert ev["level"] == "on" and ev["data"] == str(on_dataset)
    assert ev["acc1/on"] == pytest.approx(RunFolder(on_run).result()["acc1/on"])
    assert cli(["eval", str(on_run), "--data", str(on_dataset), "--set", "data.val_batch_size=7"]) == 0
    other = json.loads(RunFolder(on_run).eval_file(on_dataset).read_text())
    assert other["data"] == str(on_dataset) and other["acc1/on"] == pytest.approx(ev["acc1/on"])


def test_finetune_with_level_on_and_hash_in_path(on_run, on_dataset, tmp_path):
    out = tmp_path / "ft #2"
    assert cli(["finetune", "--from", str(on_run), "--data", str(on_dataset), "--level", "on", "--mode", "linear",
                "--out", str(out), "--set", "train.epochs=1"]) == 0
    cfg = cfglib.read_yaml(RunFolder(out).config_file)
    assert cfg["data"]["level"] == "on" and cfg["data"]["path"] == str(on_dataset)
    assert RunFolder(out).result()["level"] == "on"
    # the source's dataset by default, to the coarsest level
    assert cli(["finetune", "--from", str(on_run), "--level", "superclass", "--out", str(tmp_path / "coarse"),
                "--set", "train.epochs=1"]) == 0
    assert RunFolder(tmp_path / "coarse").result()["level"] == "superclass"
