"""What a run is made of, built from its RunConfig: the dataset check, model, loaders, augmentations, optimizer,
schedule and objective (`Parts`). The run driver (core/train/run.py), transfers, evaluation and the data-selection
method build their runs here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from core.data.augment import GpuAugment, RngStream
from core.format.beton_file import beton_columns, open_beton
from core.data.loader import build_loader
from core.data.resident import ResidentMemoryError, build_resident_loader
from core.data.source import BatchSource
from core.device import Precision, resolve_device, resolve_precision
from core.format import derived as derived_lib
from core.format import hierarchy as hlib
from core.models.build import to_channels_last
from core.train.distributed import World, current
from core.train.objective import Objective
from core.train.optim import build_loss, build_optimizer
from core.train.run_config import RunConfig, RunConfigError
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
    train_loader: BatchSource
    val_loader: BatchSource
    train_augment: GpuAugment
    val_augment: GpuAugment
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    loss_fn: Any  # evaluation loss at `level`
    objective: Objective  # what training minimises (core/train/objective.py)
    train_forward: Any = None  # the training step's forward (DistributedDataParallel over `forward` when there are
    # more processes); None = `forward`. Evaluation uses `forward`: each rank scores its own batches, no collective
    train_rng: RngStream | None = None  # the training device stage's draws: restarted each epoch (set_epoch)

    @property
    def step_forward(self) -> Any:
        return self.train_forward if self.train_forward is not None else self.forward


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
    _check_labels(data, h)
    level = cfg.data.level or h.names[0]
    if level not in h.names and level in h.derived:
        return derived_lib.eval_hierarchy(data, level), level
    if level not in h.names:
        raise RunConfigError(f"data.level={level!r} is not a level of {data}; its levels are {h.names}")
    return h, level


_LABELS_CHECKED: set[tuple] = set()  # (dataset folder, its files' mtimes): a run checks its data once, not per part


def _check_labels(data: Path, h: hlib.Hierarchy) -> None:
    """The betons' label columns fit the hierarchy: every label inside its level's classes, and every coarse label
    the one the hierarchy gives the sample's leaf. A hierarchy.json edited after conversion would otherwise give
    an IndexError mid-run or silently wrong coarse accuracy (coarse scores come from the hierarchy's maps)."""
    key = (str(data.resolve()), *((data / n).stat().st_mtime_ns for n in ("hierarchy.json", "train.beton",
                                                                            "val.beton")))
    if key in _LABELS_CHECKED:
        return
    leaf = h.names[0]
    for name in ("train.beton", "val.beton"):
        reader = open_beton(data / name)
        fields = list(reader.field_names)
        columns = {lv: reader.metadata[f"f{fields.index(lv)}"].astype(np.int64) for lv in h.names if lv in fields}
        for lv, values in columns.items():
            top = int(values.max()) if len(values) else -1
            if top >= h.level(lv).num_classes:
                raise RunConfigError(f"{data / name}: level {lv!r} has label {top}, but {data / 'hierarchy.json'} "
                                     f"gives it {h.level(lv).num_classes} classes; the hierarchy no longer matches "
                                     "the betons (re-convert the dataset, or restore its hierarchy.json)")
        if leaf not in columns:
            continue
        leaves = columns[leaf]
        for lv, values in columns.items():
            known = (leaves >= 0) & (values >= 0)
            expected = h.leaf_map(lv)[leaves[known]]
            wrong = np.flatnonzero(expected != values[known])
            if len(wrong):
                row = int(np.flatnonzero(known)[wrong[0]])
                raise RunConfigError(f"{data / name}: row {row} has {lv!r} label {int(values[row])}, but "
                                     f"{data / 'hierarchy.json'} puts its leaf {int(leaves[row])} in class "
                                     f"{int(expected[wrong[0]])}; the hierarchy no longer matches the betons "
                                     "(re-convert the dataset, or restore its hierarchy.json)")
    _LABELS_CHECKED.add(key)


class TrainData(NamedTuple):
    """A run's training batches and their device stage; one can serve several runs (core/train/fused.py)."""

    loader: BatchSource
    augment: GpuAugment
    rng: RngStream  # the augment's draws


def _device_of(cfg: RunConfig) -> tuple[torch.device, Precision, bool]:
    """(device, precision, compile?) of a run in this process."""
    device = current().device or resolve_device(cfg.train.device)
    use_compile = cfg.model.compile == "always" or (cfg.model.compile == "auto" and device.type == "cuda")
    return device, resolve_precision(cfg.train.precision, device), use_compile


def build_train_data(cfg: RunConfig, levels: list[str]) -> TrainData:
    """The training loader serving label columns `levels` (this rank's share) and the device stage, whose draws
    come from a stream of their own seeded by train.seed and the epoch."""
    data = Path(cfg.data.path)
    device, precision, use_compile = _device_of(cfg)
    start_res = resolution_at(0, cfg.data.resolution, cfg.train.progressive)
    train_loader = build_run_loader(cfg, data / "train.beton", split="train",
                                    batch_size=_per_rank_batch(cfg, current()), levels=levels, resolution=start_res,
                                    order=cfg.data.order, drop_last=True, scale=cfg.data.scale,
                                    seed=cfg.train.seed, device=device)
    if len(train_loader) == 0:
        raise RunConfigError(f"data.batch_size={cfg.data.batch_size} is larger than the training set "
                             f"({data / 'train.beton'}); with drop_last no step would run")
    h = hlib.load(data)
    rng = RngStream(device, seed=cfg.train.seed)
    augment = GpuAugment(device=device, dtype=precision.dtype or torch.float32, flip=cfg.data.flip,
                         mixup_alpha=cfg.train.mixup_alpha, cutmix_alpha=cfg.train.cutmix_alpha,
                         num_classes={lv: _num_classes(h, data, lv) for lv in levels},
                         compile=use_compile, augment=cfg.data.augment, rng=rng)
    return TrainData(train_loader, augment, rng)


def build_val_loader(cfg: RunConfig, level: str, levels: list[str]) -> BatchSource:
    """The validation loader of a run at `level` (the whole set, in order), serving label columns `levels`."""
    data = Path(cfg.data.path)
    val_beton = data / derived_lib.eval_beton(data, level)  # val.beton but for a level that labels no val sample
    extras = ["hard"] if "hard" in beton_columns(val_beton) else []
    return build_run_loader(cfg, val_beton, split="val", batch_size=cfg.data.val_batch_size, levels=levels,
                            resolution=cfg.data.val_resolution or cfg.data.resolution, order="sequential",
                            drop_last=False, extra_columns=extras, seed=cfg.train.seed, device=_device_of(cfg)[0])


def build_parts(cfg: RunConfig, model: torch.nn.Module | None = None, objective: Objective | None = None,
                train_data: TrainData | None = None, val_loader: BatchSource | None = None) -> Parts:
    """The run's objects. `model` / `objective` replace the config's (a transfer's model; a multi-head loss);
    `train_data` and `val_loader` replace the loaders and the training device stage (the ones a fused job's runs
    share: core/train/fused.py).

    Without them, both follow `train.objective` (core/train/semantic_softmax.py): a single-head model and cross-entropy,
    or one head per level and the semantic softmax."""
    h, level = check_data(cfg)
    world = current()
    _per_rank_batch(cfg, world)  # refused before anything is built
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
    device, precision, use_compile = _device_of(cfg)
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
    if cfg.model.sync_bn and world.distributed:  # batch statistics over the global batch, as one process has them
        model = _sync_batchnorm(model)
    model = model.to(device)
    if cfg.model.channels_last:
        model = to_channels_last(model)
    forward = torch.compile(model) if use_compile else model
    train_forward = None
    if world.distributed:  # gradients averaged over ranks: each rank's mean over an equal share = the global mean
        train_forward = torch.nn.parallel.DistributedDataParallel(
            forward, device_ids=[device.index] if device.type == "cuda" else None)

    # data
    if train_data is None:
        train_data = build_train_data(cfg, list(objective.train_levels))
    elif missing := [lv for lv in objective.train_levels if lv not in train_data.loader.levels]:
        raise ValueError(f"the shared training loader serves {train_data.loader.levels}, not {missing}")
    val_levels = h.names[h.index(level):]  # the level and every coarser one
    if val_loader is None:
        val_loader = build_val_loader(cfg, level, val_levels)
    elif missing := [lv for lv in val_levels if lv not in val_loader.levels]:
        raise ValueError(f"the shared validation loader serves {val_loader.levels}, not {missing}")
    val_augment = GpuAugment(device=device, dtype=precision.dtype or torch.float32, flip=False, compile=use_compile,
                             rng=RngStream(device, seed=cfg.train.seed))  # draws unused: kept off the global ones

    # optimisation
    optimizer = build_optimizer(model, cfg.optim.name, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                                momentum=cfg.optim.momentum)
    steps_per_epoch = len(train_data.loader)
    schedule = LRSchedule(base_lr=cfg.optim.lr, warmup_steps=round(cfg.optim.warmup_epochs * steps_per_epoch),
                          total_steps=cfg.train.epochs * steps_per_epoch, kind=cfg.optim.schedule,
                          final_lr_fraction=cfg.optim.final_lr_fraction)
    return Parts(h, level, device, precision, model, forward, train_data.loader, val_loader, train_data.augment,
                 val_augment, optimizer, schedule, build_loss(cfg.optim.label_smoothing), objective, train_forward,
                 train_data.rng)


def _sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """torch's convert_sync_batchnorm, except for norm layers a linear transfer froze in eval mode (an instance-level
    `train`, core.train.transfer): they normalise with running statistics, and a new module would lose the freeze."""
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        return module if "train" in vars(module) else torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        new = _sync_batchnorm(child)
        if new is not child:
            module.add_module(name, new)
    return module


def _per_rank_batch(cfg: RunConfig, world: World) -> int:
    """data.batch_size is the global batch: each of the world's processes takes an equal share of every step."""
    if not world.distributed:
        return cfg.data.batch_size
    if cfg.data.order == "quasi_random":
        raise RunConfigError(f"data.order=quasi_random cannot run on {world.size} processes (ffcv 1.0.2 has no "
                             "distributed quasi_random order); use data.order=random")
    if cfg.data.batch_size % world.size:
        raise RunConfigError(f"data.batch_size={cfg.data.batch_size} (the global batch) does not divide over "
                             f"WORLD_SIZE={world.size} processes; use a multiple of {world.size}")
    return cfg.data.batch_size // world.size


def build_run_loader(cfg: RunConfig, path: Path, **kw: Any) -> BatchSource:
    """A run's training or validation loader: core.data.loader.build_loader, or with data.resident the device-resident
    loader (core/data/resident.py) on the same arguments (ffcv's workers/os_cache then have no meaning). With more
    processes (core.train.distributed) each serves its rank's share."""
    world = current()
    shard = (world.rank, world.size)
    if not cfg.data.resident:
        return build_loader(path, num_workers=cfg.data.workers, os_cache=cfg.data.os_cache,
                            distributed=shard if world.distributed else False, **kw)
    try:
        return build_resident_loader(path, max_bytes=int(cfg.data.resident_max_gb * 1e9), shard=shard, **kw)
    except ResidentMemoryError as e:
        raise RunConfigError(f"data.resident=true: {e}; raise data.resident_max_gb if the device has the memory, "
                             "or set data.resident=false (ffcv decodes on the CPU)") from None


def _num_classes(h: hlib.Hierarchy, data: Path, level: str) -> int:
    if level in h.names:
        return h.level(level).num_classes
    return derived_lib.eval_hierarchy(data, level).level(level).num_classes
