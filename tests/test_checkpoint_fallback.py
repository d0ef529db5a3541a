"""A damaged newest checkpoint (empty, or cut short) is skipped with a warning naming it and the newest readable
one is used, by `train --resume`, `eval`, `finetune --from` and `cluster`; with none readable each fails with one
line naming the run. Real runs through the real CLI; the damage is what a full disk or a cut copy leaves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from core.format.run_folder import RunFolder, RunFolderError
from core.train import checkpoint
from launch.cli import main as cli

SETS = [f"--set={s}" for s in ("data.resolution=16", "data.batch_size=16", "data.workers=1", "model.name=bmlp",
                               "model.kwargs={depth: 1, width: 32}", "model.compile=never", "optim.name=adamw",
                               "optim.lr=0.003", "train.epochs=2", "train.eval_every=2", "train.device=cpu")]


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {"empty": _empty, "truncated": _cut}


@pytest.fixture(scope="module")
def run2(tiny_dataset, tmp_path_factory) -> Path:
    """A finished 2-epoch run; by default it keeps both epochs' checkpoints."""
    out = tmp_path_factory.mktemp("fallback") / "run"
    assert cli(["train", "--data", str(tiny_dataset), "--level", "subclass", "--out", str(out), *SETS]) == 0
    assert [p.name for p in RunFolder(out).checkpoints()] == ["epoch0002.pt", "epoch0001.pt"]
    return out


def damaged_copy(run: Path, dest: Path, how: str, names=("epoch0002.pt",)) -> Path:
    shutil.copytree(run, dest)
    for name in names:
        DAMAGE[how](RunFolder(dest).checkpoint_dir / name)
    return dest


def test_load_newest_skips_unreadable_files(tmp_path, capsys):
    model = nn.Linear(3, 2)
    for epoch in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(epoch)
        checkpoint.save(tmp_path / f"epoch{epoch:04d}.pt", model=model, step=epoch, epoch=epoch)
    _cut(tmp_path / "epoch0003.pt")
    _empty(tmp_path / "epoch0002.pt")
    path, state = checkpoint.load_newest(tmp_path, model=model, restore_rng=False)
    assert path.name == "epoch0001.pt" and state["epoch"] == 1 and float(model.weight.detach()[0, 0]) == 1.0
    err = capsys.readouterr().err
    assert "epoch0003.pt" in err and "epoch0002.pt" in err and err.count("warning:") == 2
    _empty(tmp_path / "epoch0001.pt")
    with pytest.raises(RunFolderError, match="no checkpoint under .* can be read") as e:
        checkpoint.load_newest(tmp_path, model=model, what="RUN")
    assert str(e.value).startswith("RUN:") and "\n" not in str(e.value)
    with pytest.raises(RunFolderError, match="no checkpoint under"):
        checkpoint.load_newest(tmp_path / "none", model=model)
    # a readable checkpoint of another model is an error, not a reason to fall back
    checkpoint.save(tmp_path / "epoch0004.pt", model=nn.Linear(5, 2), step=4, epoch=4)
    with pytest.raises(RuntimeError, match="size mismatch"):
        checkpoint.load_newest(tmp_path, model=model)


@pytest.mark.parametrize("how", list(DAMAGE))
def test_eval_falls_back(run2, tmp_path, capsys, how):
    run = damaged_copy(run2, tmp_path / "run", how)
    capsys.readouterr()
    assert cli(["eval", str(run)]) == 0
    assert "epoch0002.pt" in capsys.readouterr().err
    ev = json.loads(RunFolder(run).eval_file().read_text())
    assert ev["checkpoint"] == "epoch0001.pt" and 0.0 <= ev["acc1/subclass"] <= 1.0


def test_resume_falls_back_and_redoes_the_epoch(run2, tiny_dataset, tmp_path, capsys):
    run = damaged_copy(run2, tmp_path / "run", "truncated")
    RunFolder(run).result_file.unlink()  # killed while writing its last checkpoint
    capsys.readouterr()
    assert cli(["train", "--data", str(tiny_dataset), "--level", "subclass", "--out", str(run), *SETS,
                "--resume"]) == 0
    assert "epoch0002.pt" in capsys.readouterr().err
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]  # epoch 2 redone from epoch 1's checkpoint, logged once
    state = torch.load(RunFolder(run).newest_checkpoint(), weights_only=True)  # rewritten, readable
    assert state["epoch"] == 2 and RunFolder(run).result()["epochs"] == 2


def test_finetune_and_cluster_fall_back(run2, tmp_path, capsys):
    source = damaged_copy(run2, tmp_path / "src", "empty")
    capsys.readouterr()
    out = tmp_path / "probe"
    assert cli(["finetune", "--from", str(source), "--level", "superclass", "--mode", "linear", "--out", str(out),
                "--set", "train.epochs=1"]) == 0
    assert "epoch0002.pt" in capsys.readouterr().err
    assert RunFolder(out).transfer_record()["source_checkpoint"] == "epoch0001.pt"
    assert cli(["cluster", str(source), "--device", "cpu"]) == 0
    assert "epoch0002.pt" in capsys.readouterr().err
    assert json.loads((source / "clustering.json").read_text())["checkpoint"] == "epoch0001.pt"


def test_no_readable_checkpoint_is_one_line(run2, tiny_dataset, tmp_path, capsys):
    run = damaged_copy(run2, tmp_path / "run", "empty", names=("epoch0001.pt", "epoch0002.pt"))
    commands = {
        "eval": ["eval", str(run)],
        "finetune": ["finetune", "--from", str(run), "--level", "class", "--out", str(tmp_path / "ft")],
        "cluster": ["cluster", str(run), "--device", "cpu"],
        "train": ["train", "--data", str(tiny_dataset), "--level", "subclass", "--out", str(run), *SETS, "--resume"],
    }
    for name, args in commands.items():
        capsys.readouterr()
        assert cli(args) == 2, name
        lines = [x for x in capsys.readouterr().err.splitlines() if not x.startswith("warning:")]
        assert len(lines) == 1 and lines[0].startswith(f"grainsweep {name}: error:"), (name, lines)
        assert "can be read" in lines[0] and str(run) in lines[0], (name, lines)
