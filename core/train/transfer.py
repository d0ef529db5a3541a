"""Transfer: start a run on a (coarser) target level from another run's newest checkpoint.

Two modes, as in Hong et al. (arXiv 2303.16887) and the linear-probe literature:
    full   - every weight trains from the pretrained values; only the classifier is new.
    linear - the pretrained network is frozen (weights, and normalisation statistics: frozen norm layers stay
             in eval mode), only a new linear head on its features trains.

The model is built from the source run's config (its name, kwargs and resolution), loaded from the source's
newest checkpoint, given a new head for the target's classes (`reset_head`), then handed to
core.train.run.run through `parts`, so the run folder (config.yaml, metrics.jsonl, tb/, checkpoints/,
result.json) and resume behave exactly as for `grainsweep train`. `transfer.json` in the run folder records
the source run, the checkpoint it started from (the newest readable one) and the mode.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.format import config as cfglib, provenance
from core.format.lock import FolderLock
from core.format.run_folder import RunFolder, RunFolderError
from core.train import checkpoint
from core.train.distributed import World, init_from_env
from core.train.parts import Parts, build_parts, check_data
from core.train.run import run
from core.train.run_config import SINGLE_HEAD, TRANSFER_MODES, RunConfig, RunConfigError, TransferMode
from core.train.semantic_softmax import build_run_model, with_new_head



def source_config(source: str | Path) -> RunConfig:
    """The resolved RunConfig the source run was trained with."""
    return cfglib.load(RunConfig, RunFolder(source).require_config("--from"))


def source_checkpoint(source: str | Path) -> Path:
    """The source's newest checkpoint file (not opened: build_transfer_model loads the newest readable one)."""
    folder = RunFolder(source)
    last = folder.newest_checkpoint()
    if last is None:
        raise RunFolderError(f"--from {source}: no checkpoint under {folder.checkpoint_dir}")
    return last


def transfer_config(source: str | Path, data: str | None, level: str,
                    changes: dict[str, Any] | None = None) -> RunConfig:
    """The source run's settings, retargeted: data.path (default: the source's dataset, which must still hold
    what the source trained on), data.level, then `changes` (typed values at dotted keys)."""
    src = source_config(source)
    if data is None:
        RunFolder(source).check_dataset(src.data.path, explicit=False)
    # a transfer trains one new head: a multi-level source's objective is not inherited
    values: dict[str, Any] = {"data.level": level, **SINGLE_HEAD}
    if data is not None:
        values["data.path"] = str(data)
    return cfglib.with_values(src, {**values, **(changes or {})})


def build_transfer_model(source: str | Path, num_classes: int, mode: TransferMode,
                         seed: int = 0) -> tuple[nn.Module, Path]:
    """The source's network with its newest readable weights and a new `num_classes` head (initialised from
    `seed`: the same in any process, whatever ran in it before); frozen but the head if linear. Returns (model,
    the checkpoint loaded)."""
    if mode not in TRANSFER_MODES:
        raise RunConfigError(f"mode={mode!r}; choose from {list(TRANSFER_MODES)}")
    src = source_config(source)
    src_h, src_level = check_data(src)
    torch.manual_seed(seed)
    model = build_run_model(src, src_h, src_level)
    last, _ = checkpoint.load_newest(RunFolder(source).checkpoint_dir, model=model, restore_rng=False,
                                     ignore=checkpoint.AUXILIARY_HEADS, what=f"--from {source}")
    before = {id(p) for p in model.parameters()}
    model = with_new_head(model, num_classes)  # reset_head; a multi-level source's backbone with a new head
    if mode == "linear":
        # the head is whatever reset_head created: every parameter that was not there before
        for p in model.parameters():
            p.requires_grad_(id(p) not in before)
        if not any(p.requires_grad for p in model.parameters()):
            raise RunConfigError(f"{src.model.name}: reset_head created no new parameters to train")
        _freeze_norm_statistics(model)
    return model, last


def _freeze_norm_statistics(model: nn.Module) -> None:
    # BatchNorm in train mode would normalise with batch statistics and update its running ones, so the
    # "frozen" features would still change; a frozen module with running stats stays in eval mode instead
    for m in model.modules():
        frozen = not any(p.requires_grad for p in m.parameters(recurse=False))
        if frozen and getattr(m, "track_running_stats", False):
            m.train = types.MethodType(lambda self, mode=True: nn.Module.train(self, False), m)
            m.eval()


def finetune(source: str | Path, cfg: RunConfig, out: str | Path, mode: TransferMode = "full",
             resume: bool = False, make_parts: Callable[[RunConfig, nn.Module], Parts] | None = None) -> dict:
    """Trains `cfg` (see transfer_config) in `out`, starting from `source`; returns the final evaluation.

    make_parts(cfg, model) builds the run's parts from the transfer model instead of build_parts (a transfer
    with more heads and data: core/methods/select_transfer.py). With WORLD_SIZE > 1 this process is one rank
    (core/train/distributed.py); rank 0 holds the lock and writes transfer.json."""
    with init_from_env(cfg.train.device) as world, ExitStack() as held:
        # transfer.json is written before run() takes the same lock
        world.on_main(lambda: bool(held.enter_context(FolderLock(out, what="a transfer"))))
        return _finetune(source, cfg, out, mode, resume, make_parts, world)


def _finetune(source: str | Path, cfg: RunConfig, out: str | Path, mode: TransferMode, resume: bool,
              make_parts: Callable[[RunConfig, nn.Module], Parts] | None, world: World) -> dict:
    source, folder = Path(source).resolve(), RunFolder(out)
    world.on_main(lambda: folder.refuse_unless_resume(resume))
    out = folder.path
    h, level = check_data(cfg)
    model, last = build_transfer_model(source, h.level(level).num_classes, mode, cfg.train.seed)
    src_cfg = source_config(source)
    if (src_cfg.model.name, src_cfg.model.kwargs) != (cfg.model.name, cfg.model.kwargs):
        raise RunConfigError(f"model.name/model.kwargs must stay those of the source run "
                             f"({src_cfg.model.name} {src_cfg.model.kwargs})")
    record = {"source": str(source), "source_checkpoint": last.name, "mode": mode,
              "source_level": check_data(src_cfg)[1], "target_level": level}

    def write_record() -> None:
        old = folder.transfer_record()
        if old is not None:
            if {k: old.get(k) for k in ("source", "mode")} != {k: record[k] for k in ("source", "mode")}:
                raise RunConfigError(f"{out} was started from {old.get('source')} ({old.get('mode')}); resume it "
                                     "with the same --from and --mode, or use a new --out")
        else:
            out.mkdir(parents=True, exist_ok=True)
            provenance.write_atomic(folder.transfer_file, json.dumps(record, indent=1) + "\n")

    world.on_main(write_record)
    parts = build_parts(cfg, model=model) if make_parts is None else make_parts(cfg, model)
    # the folder now holds transfer.json, so run() is always told to resume: with no checkpoint yet it starts
    # from epoch 0 (from the source weights); with one it continues from it
    result = run(cfg, out, resume=True, parts=parts)
    return result


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["build_transfer_model", "finetune", "source_config", "transfer_config",
           "trainable_parameters"]
