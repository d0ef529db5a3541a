"""One training run from a RunConfig: builds the objects, then drives core.train.engine epoch by epoch.

The run folder gets config.yaml + provenance.json (git SHA), metrics.jsonl (one line per epoch), TensorBoard
events under tb/, checkpoints under checkpoints/, and result.json once the run has finished (its presence is
what makes a run "done" for reruns of a sweep).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.train import checkpoint
from core.format import config as cfglib, provenance
from core.format import derived as derived_lib
from core.format import hierarchy as hlib
from core.data.augment import GpuAugment
from core.train.engine import evaluate, train_epoch
from core.device import Precision, resolve_device, resolve_precision
from core.format.run_folder import CHECKPOINT_DIR, RESULT_FILE
from core.data.loader import BetonLoader, GpuBatches, beton_columns, build_loader
from core.models.build import to_channels_last
from core.train.optim import build_loss, build_optimizer
from core.data.resident import ResidentLoader, ResidentMemoryError, build_resident_loader
from core.train.run_config import RunConfig, RunConfigError
from core.train.objective import Objective
from core.train.run_log import RunLog
from core.train.schedule import LRSchedule
from core.train.semantic_softmax import SemanticSoftmax, build_objective, build_run_model


def resolution_at(epoch: int, end_res: int, progressive: tuple[int, int, int]) -> int:
    """Linear ramp from progressive[0] px at epoch progressive[1] to end_res at epoch progressive[2], in steps
    of 8 px (few distinct sizes keep recompiles bounded)."""
    start, e0, e1 = progressive
    if start <= 0:
        return end_res
    if epoch <= e0:
        res = start
    elif epoch >= e1:
        res = end_res
    else:
        res = start + (end_res - start) * (epoch - e0) / max(e1 - e0, 1)
    return int(max(8, round(res / 8) * 8))


@dataclass
class Parts:
    """Everything a run needs, built from its config."""

    hierarchy: hlib.Hierarchy
    level: str
    device: torch.device
    precision: Precision
    model: torch.nn.Module
    forward: Any
    train_loader: BetonLoader | ResidentLoader
    val_loader: BetonLoader | ResidentLoader
    train_augment: GpuAugment
    val_augment: GpuAugment
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    loss_fn: Any  # evaluation loss at `level`
    objective: Objective  # what training minimises (core/train/objective.py)


def check_data(cfg: RunConfig) -> tuple[hlib.Hierarchy, str]:
    """The dataset exists and has the level asked for; returns (hierarchy, level name).

    A derived level (core/format/derived.py) gets the hierarchy it is evaluated in: itself, then the levels it nests
    under."""
    data = Path(cfg.data.path)
    if not data.is_dir():
        raise RunConfigError(f"data.path={cfg.data.path!r}: no such dataset folder")
    for name in ("train.beton", "val.beton"):
        if not (data / name).is_file():
            raise RunConfigError(f"data.path={cfg.data.path!r}: missing {name}")
    h = hlib.load(data)
    level = cfg.data.level or h.names[0]
    if level not in h.names and level in h.derived:
        return derived_lib.eval_hierarchy(data, level), level
    if level not in h.names:
        raise RunConfigError(f"data.level={level!r} is not a level of {data}; its levels are {h.names}")
    return h, level


def build_parts(cfg: RunConfig, model: torch.nn.Module | None = None,
                objective: Objective | None = None) -> Parts:
    """The run's objects. `model` / `objective` replace the config's (a transfer's model; a multi-head loss).

    Without them, both follow `train.objective` (core/train/semantic_softmax.py): a single-head model and cross-entropy,
    or one head per level and the semantic softmax."""
    h, level = check_data(cfg)
    torch.manual_seed(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    precision = resolve_precision(cfg.train.precision, device)
    data = Path(cfg.data.path)
    objective_given = objective is not None
    objective = objective or build_objective(cfg, h, level)

    # model
    if cfg.train.progressive[0] > 0 and cfg.model.name.startswith("bmlp"):
        raise RunConfigError("train.progressive needs a model that takes any resolution; the bmlp MLP flattens a "
                             "fixed image size")
    if model is None:
        model = build_run_model(cfg, h, level)
    elif (not objective_given and isinstance(objective, SemanticSoftmax)
          and getattr(model, "level_sizes", None) != objective.sizes):
        raise RunConfigError(f"train.objective=semantic_softmax needs a model with one head per level of "
                             f"{list(objective.levels)} (core.train.semantic_softmax.build_run_model); the model given "
                             "has other heads. A transfer trains one new head: use train.objective=single")
    model = model.to(device)
    if cfg.model.channels_last:
        model = to_channels_last(model)
    use_compile = cfg.model.compile == "always" or (cfg.model.compile == "auto" and device.type == "cuda")
    forward = torch.compile(model) if use_compile else model

    # data
    val_beton = data / derived_lib.eval_beton(data, level)  # val.beton but for a level that labels no val sample
    extras = ["hard"] if "hard" in beton_columns(val_beton) else []
    start_res = resolution_at(0, cfg.data.resolution, cfg.train.progressive)
    train_loader = build_run_loader(cfg, data / "train.beton", split="train", batch_size=cfg.data.batch_size,
                                    levels=list(objective.train_levels), resolution=start_res,
                                    order=cfg.data.order, drop_last=True, scale=cfg.data.scale,
                                    seed=cfg.train.seed, device=device)
    if len(train_loader) == 0:
        raise RunConfigError(f"data.batch_size={cfg.data.batch_size} is larger than the training set "
                             f"({data / 'train.beton'}); with drop_last no step would run")
    val_loader = build_run_loader(cfg, val_beton, split="val", batch_size=cfg.data.val_batch_size,
                                  levels=h.names[h.index(level):], resolution=cfg.data.val_resolution or
                                  cfg.data.resolution, order="sequential", drop_last=False, extra_columns=extras,
                                  seed=cfg.train.seed, device=device)
    act_dtype = precision.dtype or torch.float32
    train_augment = GpuAugment(device=device, dtype=act_dtype, flip=cfg.data.flip,
                               mixup_alpha=cfg.train.mixup_alpha, cutmix_alpha=cfg.train.cutmix_alpha,
                               num_classes={lv: _num_classes(h, data, lv) for lv in objective.train_levels},
                               compile=use_compile)
    val_augment = GpuAugment(device=device, dtype=act_dtype, flip=False, compile=use_compile)

    # optimisation
    optimizer = build_optimizer(model, cfg.optim.name, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                                momentum=cfg.optim.momentum)
    steps_per_epoch = len(train_loader)
    schedule = LRSchedule(base_lr=cfg.optim.lr, warmup_steps=round(cfg.optim.warmup_epochs * steps_per_epoch),
                          total_steps=cfg.train.epochs * steps_per_epoch, kind=cfg.optim.schedule,
                          final_lr_fraction=cfg.optim.final_lr_fraction)
    return Parts(h, level, device, precision, model, forward, train_loader, val_loader, train_augment,
                 val_augment, optimizer, schedule, build_loss(cfg.optim.label_smoothing), objective)


def build_run_loader(cfg: RunConfig, path: Path, **kw: Any) -> BetonLoader | ResidentLoader:
    """A run's training or validation loader: core.data.loader.build_loader, or with data.resident the device-resident
    loader (core/data/resident.py) on the same arguments (ffcv's workers/os_cache/distributed then have no meaning)."""
    if not cfg.data.resident:
        return build_loader(path, num_workers=cfg.data.workers, os_cache=cfg.data.os_cache, distributed=False,
                            **kw)
    try:
        return build_resident_loader(path, max_bytes=int(cfg.data.resident_max_gb * 1e9), **kw)
    except ResidentMemoryError as e:
        raise RunConfigError(f"data.resident=true: {e}; raise data.resident_max_gb if the device has the memory, "
                             "or set data.resident=false (ffcv decodes on the CPU)") from None


def _num_classes(h: hlib.Hierarchy, data: Path, level: str) -> int:
    if level in h.names:
        return h.level(level).num_classes
    return derived_lib.eval_hierarchy(data, level).level(level).num_classes


def _check_resume_config(run_dir: Path, cfg: RunConfig) -> None:
    saved = run_dir / "config.yaml"
    if saved.is_file():
        old = cfglib.to_dict(cfglib.parse(RunConfig, cfglib.read_yaml(saved)))
        new = cfglib.to_dict(cfg)
        if old != new:
            diff = sorted(k for k in _flatten(new) if _flatten(old).get(k) != _flatten(new)[k])
            raise RunConfigError(f"{run_dir} was started with another config (differs in {diff}); resume with "
                                 "the same settings or use a new run folder")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run(cfg: RunConfig, run_dir: str | Path, resume: bool = False, parts: Parts | None = None) -> dict:
    """Trains (or resumes) the run in `run_dir`; returns the final evaluation. Writes result.json at the end."""
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / CHECKPOINT_DIR
    last = checkpoint.latest(ckpt_dir) if resume and ckpt_dir.is_dir() else None
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise RunConfigError(f"{run_dir} already holds a run; pass --resume to continue it, or use a new --out")
    if resume:
        _check_resume_config(run_dir, cfg)
    p = parts or build_parts(cfg)
    start_epoch, step = 0, 0
    if last is not None:
        state = checkpoint.load(last, model=p.model, optimizer=p.optimizer)
        start_epoch, step = int(state["epoch"]), int(state["step"])
    provenance.record(run_dir, cfg, {"level": p.level, "device": str(p.device)})
    log = RunLog(run_dir, start_epoch=start_epoch, purge_step=step if step else None)
    result: dict = {}
    try:
        for epoch in range(start_epoch, cfg.train.epochs):
            res = resolution_at(epoch, cfg.data.resolution, cfg.train.progressive)
            p.train_loader.set_resolution(res)
            p.train_loader.set_epoch(epoch)

            def set_lr(s: int) -> float:
                return p.schedule.apply(p.optimizer, s)

            step, stats = train_epoch(
                forward=p.forward, optimizer=p.optimizer, objective=p.objective,
                batches=GpuBatches(p.train_loader, p.train_augment), set_lr=set_lr, step=step,
                precision=p.precision, desc=f"epoch {epoch + 1}/{cfg.train.epochs} {p.level}")
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
                result = ev
            if not math.isfinite(stats.loss):
                raise FloatingPointError(f"training loss is {stats.loss} at epoch {epoch + 1}; lower optim.lr")
            log.scalars(step, {k: v for k, v in record.items() if k not in ("epoch", "step")})
            log.epoch(record)
            if last_epoch or (epoch + 1) % cfg.train.checkpoint_every == 0:
                checkpoint.save(ckpt_dir / f"epoch{epoch + 1:04d}.pt", model=p.model, optimizer=p.optimizer,
                                step=step, epoch=epoch + 1, extra={"level": p.level})
                _prune(ckpt_dir, cfg.train.keep_checkpoints)
            print(_summary(record, p.level), flush=True)
    finally:
        log.close()
    if not result:  # resumed after the last epoch's checkpoint: evaluate the final weights
        p.model.eval()
        result = evaluate(forward=p.forward, loader=p.val_loader, augment=p.val_augment, hierarchy=p.hierarchy,
                          level=p.level, precision=p.precision, loss_fn=p.loss_fn, objective=p.objective)
    final = {"level": p.level, "epochs": cfg.train.epochs, **result}
    provenance.write_atomic(run_dir / RESULT_FILE, json.dumps(final, indent=1) + "\n")
    return final


def _prune(ckpt_dir: Path, keep: int) -> None:
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
