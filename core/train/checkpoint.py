"""Checkpoints: model, optimizer, step/epoch, every global RNG and the caller's extra state, written atomically.

The model is saved from the uncompiled, unwrapped module so keys never carry `_orig_mod.` (torch.compile) or
`module.` (DDP) prefixes, and a checkpoint loads into compiled and eager models alike. A file is written to a
temporary name beside its target and renamed with os.replace, so a job killed mid-save (SLURM preemption)
leaves the previous checkpoint intact and never a truncated one under the real name.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.format.run_folder import RunFolderError, numbered_checkpoints

FORMAT = 1  # bump when the layout below changes


AUXILIARY_HEADS = ("selected_head.",)  # training-only heads (core/methods/select_heads.py): not part of the network a
# run leaves for evaluation, features and transfer

def path_for(run_dir: str | os.PathLike, step: int) -> Path:
    """The conventional file name for the checkpoint taken at `step`; latest() orders by the number."""
    return Path(run_dir) / f"ckpt_{step:09d}.pt"


def latest(run_dir: str | os.PathLike) -> Path | None:
    """The `*<number>.pt` file with the highest number in `run_dir` (core.format.run_folder.numbered_checkpoints)."""
    found = numbered_checkpoints(run_dir)
    return found[0] if found else None


def unwrap(model: nn.Module) -> nn.Module:
    """The module under torch.compile (`_orig_mod`) and DDP/FSDP-style (`module`) wrappers."""
    while True:
        if isinstance(model, torch._dynamo.eval_frame.OptimizedModule):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def save(path: str | os.PathLike, *, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
         step: int, epoch: int, extra: dict | None = None) -> Path:
    """Writes the checkpoint atomically and returns its path. `extra`: plain data (e.g. the loader's state)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": int(step),
        "epoch": int(epoch),
        "rng": rng_state(),
        "extra": extra if extra is not None else {},
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except RuntimeError as e:  # torch's zip writer reports a failed write (full disk) as a RuntimeError
        cause = e.__cause__ or e.__context__
        if isinstance(cause, OSError):
            raise OSError(cause.errno, cause.strerror, str(path)) from e
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def load(path: str | os.PathLike, *, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
         restore_rng: bool = True, map_location: str | torch.device = "cpu", weights_only: bool = True,
         ignore: tuple[str, ...] = ()) -> dict:
    """Restores model, optimizer and RNGs in place; returns {'step', 'epoch', 'extra'}.

    ignore: key prefixes of the saved model to leave out (the rest must match exactly), e.g. AUXILIARY_HEADS
    when a run's network is loaded for inference or transfer without its training-only heads.

    weights_only=True (torch's safe unpickler) works for everything save() writes as long as `extra` holds
    plain Python values and tensors; pass False only for trusted files whose extra holds other objects.
    """
    state = torch.load(path, map_location=map_location, weights_only=weights_only)
    return _apply(path, state, model=model, optimizer=optimizer, restore_rng=restore_rng, ignore=ignore)


def load_newest(folder: str | os.PathLike, *, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                restore_rng: bool = True, ignore: tuple[str, ...] = (), what: str = "") -> tuple[Path, dict]:
    """`load` of the newest checkpoint in `folder` that can be read; returns (its path, load's result).

    A file that cannot be read (empty or truncated: a full disk, a copy cut short) is skipped with a warning
    naming it, and the next older one is tried; save() keeps more than one (train.keep_checkpoints) for this.
    Only reading falls back: a readable checkpoint that does not fit the model is an error. None readable (or
    none at all): a RunFolderError naming `folder` (`what` says whose checkpoints, e.g. '--from RUN')."""
    where = what or str(folder)
    found = numbered_checkpoints(folder)
    if not found:
        raise RunFolderError(f"{where}: no checkpoint under {folder}")
    for path in found:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises EOFError, RuntimeError, UnpicklingError... for a damaged file
            print(f"warning: skipping unreadable checkpoint {path} ({type(e).__name__}: "
                  f"{str(e).splitlines()[0] if str(e) else 'empty or truncated'})", file=sys.stderr, flush=True)
            continue
        return path, _apply(path, state, model=model, optimizer=optimizer, restore_rng=restore_rng,
                            ignore=ignore)
    names = ", ".join(p.name for p in found)
    raise RunFolderError(f"{where}: no checkpoint under {folder} can be read ({names} are empty or truncated)")


def _apply(path: str | os.PathLike, state: dict, *, model: nn.Module, optimizer: torch.optim.Optimizer | None,
           restore_rng: bool, ignore: tuple[str, ...]) -> dict:
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: checkpoint format {found!r}, this code reads {FORMAT}")
    weights = {k: v for k, v in state["model"].items() if not k.startswith(ignore)} if ignore else state["model"]
    unwrap(model).load_state_dict(weights)
    if optimizer is not None:
        if state["optimizer"] is None:
            raise ValueError(f"{path}: no optimizer state was saved")
        _load_optimizer(optimizer, state["optimizer"])
    if restore_rng:
        set_rng_state(state["rng"])
    return {"step": state["step"], "epoch": state["epoch"], "extra": state["extra"]}


def _load_optimizer(optimizer: torch.optim.Optimizer, sd: dict) -> None:
    # load_state_dict replaces each group's lr with a deep copy of the saved one; a compiled step and the
    # schedule hold the original tensors, so copy the saved values into those and put them back
    before = [g["lr"] for g in optimizer.param_groups]
    optimizer.load_state_dict(sd)
    for g, old in zip(optimizer.param_groups, before):
        if isinstance(old, torch.Tensor):
            old.fill_(float(g["lr"]))
            g["lr"] = old


def rng_state() -> dict:
    """Every global generator's state, as tensors and plain values (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    # restore CUDA generators only onto the same number of devices; otherwise the streams cannot match anyway
    if state["cuda"] is not None and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    # random.setstate needs tuples; a round trip through some serialisers turns them into lists
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def _fsync_dir(d: Path) -> None:
    # makes the rename itself durable; some filesystems refuse to open a directory, which is harmless
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
