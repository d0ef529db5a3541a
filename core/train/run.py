"""One training run from a RunConfig: builds its parts (core/train/parts.py), then drives core.train.engine epoch by
epoch.

The run folder (core/format/run_folder.py) gets config.yaml + provenance.json (git SHA), dataset.json (the
dataset's absolute path and fingerprint), metrics.jsonl (one line per epoch), TensorBoard events under tb/,
checkpoints under checkpoints/, and result.json once the run has finished (its presence is what makes a run
"done" for reruns of a sweep).

With more processes (WORLD_SIZE > 1, core/train/distributed.py) every rank trains its share of each batch; rank 0
alone holds the folder's lock and writes the folder, and tells the others which checkpoint to resume from.
"""

from __future__ import annotations

import functools
import json
import math
import os
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.data.source import GpuBatches
from core.format import config as cfglib, provenance
from core.format.lock import FolderLock
from core.format.run_folder import RunFolder, dataset_fingerprint
from core.train import checkpoint
from core.train.distributed import World, init_from_env
from core.train.engine import EpochStats, Trainer, evaluate, run_epoch
from core.train.parts import Parts, build_parts, resolution_at
from core.train.run_config import RunConfig, RunConfigError, absolute_data_path
from core.train.run_log import RunLog


def _check_resume_config(folder: RunFolder, cfg: RunConfig) -> None:
    if folder.config_file.is_file():
        old = cfglib.to_dict(absolute_data_path(cfglib.parse(RunConfig, cfglib.read_yaml(folder.config_file))))
        new = cfglib.to_dict(cfg)
        if old != new:
            diff = sorted(k for k in _flatten(new) if _flatten(old).get(k) != _flatten(new)[k])
            raise RunConfigError(f"{folder.path} was started with another config (differs in {diff}); resume "
                                 "with the same settings or use a new run folder")


def _record_or_check_dataset(folder: RunFolder, data: str) -> None:
    record = folder.dataset_record()
    if record is None:
        folder.record_dataset(data)
    elif record.get("fingerprint") != dataset_fingerprint(data):
        raise RunConfigError(f"{data} changed since {folder.path} started on it (fingerprint "
                             f"{record.get('fingerprint')} then, {dataset_fingerprint(data)} now); a resumed run "
                             "must see the same data: use a new run folder")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@dataclass
class Member:
    """One run being trained: its parts, folder, log and step counter. run() trains one; a fused job
    (core/train/fused.py) trains several from one loader, each inside its own random stream `rng`."""

    cfg: RunConfig
    parts: Parts
    folder: RunFolder
    step: int = 0
    start_epoch: int = 0  # epochs done when this process started on it
    log: RunLog | None = None  # rank 0's
    result: dict = field(default_factory=dict)  # the newest evaluation
    rng: AbstractContextManager = field(default_factory=nullcontext)  # entered around its steps and epoch ends
    label: str = ""  # prefix of its summary lines ('' = none)


def run(cfg: RunConfig, run_dir: str | Path, resume: bool = False, parts: Parts | None = None) -> dict:
    """Trains (or resumes) the run in `run_dir`; returns the final evaluation. Writes result.json at the end.

    One writer per run folder (core.format.lock: a second train/resume of the same folder is refused, naming the
    first). config.yaml records data.path as an absolute path, so the run's dataset is found from any working
    directory (`grainsweep eval RUN`). With WORLD_SIZE > 1 in the environment, this process is one rank of the
    run (core/train/distributed.py: the group is created here and destroyed on return)."""
    with init_from_env(cfg.train.device) as world, ExitStack() as held:
        world.on_main(lambda: bool(held.enter_context(FolderLock(run_dir, what="a training run"))))
        return _run(cfg, run_dir, resume, parts, world)


def _run(cfg: RunConfig, run_dir: str | Path, resume: bool, parts: Parts | None, world: World) -> dict:
    folder = RunFolder(run_dir)
    cfg = absolute_data_path(cfg)
    from_checkpoint = world.on_main(lambda: check_folder(folder, cfg, resume))
    m = Member(cfg, parts or build_parts(cfg), folder)
    if from_checkpoint:
        m.start_epoch, m.step = _resume(m.parts, folder.checkpoint_dir, world, str(folder.path))
    open_member(m, world, purge_step=m.step if m.step else None)
    try:
        for epoch in range(m.start_epoch, cfg.train.epochs):
            res = start_epoch(m, epoch)
            [stats] = train_members([m], f"epoch {epoch + 1}/{cfg.train.epochs} {m.parts.level}")
            end_epoch(m, epoch, res, stats, world)
    finally:
        if m.log is not None:
            m.log.close()
    return finish(m, world)


def check_folder(folder: RunFolder, cfg: RunConfig, resume: bool) -> bool:
    """Rank 0, before anything is built: the folder may take this run. True = there is a checkpoint to resume
    from."""
    folder.refuse_unless_resume(resume)
    if resume:
        _check_resume_config(folder, cfg)
    return bool(resume and folder.checkpoints())


def open_member(m: Member, world: World, purge_step: int | None) -> None:
    """Rank 0, before anything in the folder is rewritten: dataset.json, config and provenance; then the log
    (records after `m.start_epoch` dropped: they are redone)."""
    p = m.parts

    def record() -> None:
        _record_or_check_dataset(m.folder, m.cfg.data.path)
        provenance.record(m.folder.path, m.cfg, {"level": p.level, "device": str(p.device), **(
            {"world_size": world.size} if world.distributed else {})})

    world.on_main(record)
    if world.is_main:
        m.log = RunLog(m.folder.path, start_epoch=m.start_epoch, purge_step=purge_step)


def start_epoch(m: Member, epoch: int) -> int:
    """Sets the training loader and the device stage's draws to `epoch`; returns the epoch's resolution."""
    p, cfg = m.parts, m.cfg
    res = resolution_at(epoch, cfg.data.resolution, cfg.train.progressive)
    p.train_loader.set_resolution(res)
    p.train_loader.set_epoch(epoch)
    if p.train_rng is not None:
        p.train_rng.set_epoch(epoch)
    return res


def train_members(members: list[Member], desc: str) -> list[EpochStats]:
    """One epoch of the members' shared training loader (the first member's), each batch through the device stage
    once and then through every member's model; each member's step counter advances."""
    trainers = []
    for m in members:
        p = m.parts
        trainers.append(Trainer(forward=p.step_forward, optimizer=p.optimizer, objective=p.objective,
                                set_lr=functools.partial(p.schedule.apply, p.optimizer), step=m.step,
                                precision=p.precision, rng=m.rng))
    p0 = members[0].parts
    stats = run_epoch(trainers, GpuBatches(p0.train_loader, p0.train_augment), desc=desc)
    for m, t in zip(members, trainers):
        m.step = t.step
    return stats


def end_epoch(m: Member, epoch: int, res: int, stats: EpochStats, world: World, prune: bool = True) -> bool:
    """The member's epoch record, evaluation when due, log line, checkpoint when due (pruned to the newest
    train.keep_checkpoints unless `prune` is False) and summary line. Returns whether it saved a checkpoint."""
    p, cfg, step = m.parts, m.cfg, m.step
    with m.rng:
        record: dict[str, Any] = {"epoch": epoch + 1, "step": step, "resolution": res,
                                  "lr": p.schedule.lr_at(max(step - 1, 0)), "train_loss": stats.loss,
                                  "train_acc1": stats.acc1, "images_per_second": stats.images_per_second,
                                  "data_wait_fraction": stats.wait_fraction,
                                  "epoch_seconds": stats.seconds, "memory_mb": _memory_mb(p.device)}
        last_epoch = epoch + 1 == cfg.train.epochs
        if last_epoch or (epoch + 1) % cfg.train.eval_every == 0:
            p.model.eval()
            ev = evaluate(forward=p.forward, loader=p.val_loader, augment=p.val_augment, hierarchy=p.hierarchy,
                          level=p.level, precision=p.precision, loss_fn=p.loss_fn, objective=p.objective,
                          desc="eval")
            p.model.train()
            record.update({f"val/{k}": v for k, v in ev.items()})
            m.result = ev
        if not math.isfinite(stats.loss):
            raise FloatingPointError(f"training loss is {stats.loss} at epoch {epoch + 1}"
                                     f"{f' of {m.folder.path}' if m.label else ''}; lower optim.lr")
        if m.log is not None:
            m.log.scalars(step, {k: v for k, v in record.items() if k not in ("epoch", "step")})
            m.log.epoch(record)
        save = last_epoch or (epoch + 1) % cfg.train.checkpoint_every == 0
        if save:
            _save(p, m.folder.checkpoint_dir / f"epoch{epoch + 1:04d}.pt", step, epoch + 1,
                  cfg.train.keep_checkpoints if prune else 0, world)
    if world.is_main:
        print(f"{m.label}{_summary(record, p.level)}", flush=True)
    return save


def finish(m: Member, world: World) -> dict:
    """The final evaluation (the last epoch's, or of the final weights when resumed after the last checkpoint);
    rank 0 writes result.json."""
    p = m.parts
    result = m.result
    if not result:
        with m.rng:
            p.model.eval()
            result = evaluate(forward=p.forward, loader=p.val_loader, augment=p.val_augment, hierarchy=p.hierarchy,
                              level=p.level, precision=p.precision, loss_fn=p.loss_fn, objective=p.objective)
    final = {"level": p.level, "epochs": m.cfg.train.epochs, **result}
    world.on_main(lambda: provenance.write_atomic(m.folder.result_file, json.dumps(final, indent=1) + "\n"))
    return final


def _resume(p: Parts, ckpt_dir: Path, world: World, what: str) -> tuple[int, int]:
    """Loads the newest readable checkpoint (a damaged newest one, killed mid-copy or on a full disk, is skipped)
    on every rank: rank 0 picks it. Returns (epochs done, step)."""
    path, state = world.on_main(lambda: checkpoint.load_newest(ckpt_dir, model=p.model, optimizer=p.optimizer,
                                                                what=what))
    if not world.is_main:
        checkpoint.load(path, model=p.model, optimizer=p.optimizer)
    saved_world = int(state["extra"].get("world_size", 1))
    if saved_world == world.size and world.distributed:
        checkpoint.set_rng_state(state["extra"]["rng_ranks"][world.rank])  # each rank's own draws continue
    elif saved_world != world.size and world.is_main:
        print(f"resuming {what} on {world.size} process(es) from {path.name}, written by {saved_world}: training "
              f"continues from its epoch {state['epoch']}, but does not replay what a run on {saved_world} would "
              "have done (other batch shares and random draws per process)", flush=True)
    return int(state["epoch"]), int(state["step"])


def _save(p: Parts, path: Path, step: int, epoch: int, keep: int, world: World) -> None:
    """Rank 0 writes the checkpoint (the unwrapped model), with every rank's RNG state for an exact resume at this
    world size, and prunes old ones to the newest `keep` (0: none pruned)."""
    extra: dict[str, Any] = {"level": p.level, "world_size": world.size}
    if world.distributed:
        import torch.distributed as dist

        states: list = [None] * world.size
        dist.all_gather_object(states, checkpoint.rng_state())
        extra["rng_ranks"] = states

    def write() -> None:
        checkpoint.save(path, model=p.model, optimizer=p.optimizer, step=step, epoch=epoch, extra=extra)
        if keep:
            prune(path.parent, keep)

    world.on_main(write)


def prune(ckpt_dir: Path, keep: int) -> None:
    files = sorted(ckpt_dir.glob("epoch*.pt"))
    for f in files[:-max(keep, 1)]:
        f.unlink(missing_ok=True)


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def _summary(record: dict, level: str) -> str:
    parts = [f"epoch {record['epoch']}", f"loss {record['train_loss']:.3f}",
             f"train acc {record['train_acc1']:.3f}", f"{record['images_per_second']:,.0f} img/s",
             f"data wait {record['data_wait_fraction']:.0%}"]
    for k, v in record.items():
        if k.startswith("val/acc1"):
            parts.append(f"{k[4:]} {v:.3f}")
    return " | ".join(parts)
