"""The schema of one training run (`grainsweep train`): every default in one place, with its unit."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from core.data.batch_augment import AugmentName
from core.format.config import ConfigError, with_values

# the names each setting accepts, listed once (core/train/optim.py and core/train/schedule.py check against these)
Optimizer = Literal["sgd", "adamw"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
Schedule = Literal["cosine", "linear", "constant"]  # the decay after warm-up
SCHEDULES: tuple[str, ...] = get_args(Schedule)
TransferMode = Literal["full", "linear"]  # full: every weight trains; linear: a new head on frozen features
TRANSFER_MODES: tuple[str, ...] = get_args(TransferMode)
# what a transfer or scratch run trains, whatever objective its source used: one head (TrainConfig's defaults)
SINGLE_HEAD = {"train.objective": "single", "train.objective_levels": (), "train.objective_weights": "ridnik"}


class RunConfigError(ConfigError):
    """A run that cannot start as configured (unknown level, missing data, changed config on resume)."""


@dataclass(frozen=True)
class DataConfig:
    path: str = "data/synthetic"  # dataset folder: train.beton, val.beton, hierarchy.json
    level: str = ""  # label level to train on; '' = the finest level
    resolution: int = 32  # training crop side in pixels (the end resolution when progressive)
    val_resolution: int = 0  # validation crop side; 0 = same as `resolution`
    batch_size: int = 128  # training images per step
    val_batch_size: int = 256
    workers: int = 2  # ffcv decode threads
    order: Literal["random", "quasi_random"] = "random"  # quasi_random for data larger than RAM
    os_cache: bool = True  # page cache (True) or ffcv's own process cache (False, for data > RAM)
    scale: tuple[float, float] = (0.35, 1.0)  # RandomResizedCrop area range
    flip: bool = True  # random horizontal flip (done in the device stage)
    # extra batch augmentations after flip + mixup/cutmix, training only: registered name -> its parameters, in
    # order, e.g. {random_erasing: {p: 0.25}} (core/data/batch_augment/__init__.py lists the names)
    augment: dict[AugmentName, dict[str, Any]] = field(default_factory=dict)
    # keep the decoded data set on the training device and crop there (core/data/resident.py): for small betons
    # (CIFAR, the synthetic presets), where ffcv's per-epoch CPU decode is the bottleneck; workers and os_cache
    # are then unused, quasi_random is served as random
    resident: bool = False
    resident_max_gb: float = 8.0  # cap per split on N x H x W x 3 bytes (H, W the largest stored size), GB = 1e9

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.batch_size < 1 or self.val_batch_size < 1 or self.workers < 1:
            raise ValueError("resolution >= 8, batch sizes >= 1 and workers >= 1 are required")
        if self.resident_max_gb <= 0:
            raise ValueError(f"resident_max_gb must be > 0, got {self.resident_max_gb}")
        if not self.path:
            raise RunConfigError("data.path must name a dataset folder, got ''")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise RunConfigError(f"data.scale must be (low, high) with 0 < low <= high <= 1, got {list(self.scale)}")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "resnet10t"  # any timm model name, or 'bmlp' (Scaling-MLPs bottleneck MLP)
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the model builder (e.g. depth, width)
    compile: Literal["auto", "always", "never"] = "auto"  # torch.compile: auto = on CUDA only (CPU compiles are slow)
    channels_last: bool = True
    sync_bn: bool = False  # with more than one process: BatchNorm statistics over the global batch (SyncBatchNorm)


@dataclass(frozen=True)
class OptimConfig:
    name: Optimizer = "sgd"
    lr: float = 0.2  # peak learning rate for `batch_size` images per step
    weight_decay: float = 5e-5  # on weights with ndim >= 2 only
    momentum: float = 0.9  # SGD momentum (AdamW: beta1)
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0  # linear warm-up from 0, in epochs (per-iteration schedule)
    schedule: Schedule = "cosine"  # decay after warm-up (constant: none)
    final_lr_fraction: float = 0.0  # LR at the end as a fraction of the peak

    def __post_init__(self) -> None:
        for key in ("lr", "weight_decay", "momentum", "warmup_epochs"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):  # NaN fails every comparison: caught here
                raise RunConfigError(f"optim.{key} must be a finite number >= 0, got {value}")
        if not 0 <= self.label_smoothing < 1:
            raise RunConfigError(f"optim.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.final_lr_fraction <= 1:
            raise RunConfigError(f"optim.final_lr_fraction must be in [0, 1], got {self.final_lr_fraction}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    seed: int = 0
    device: str = "auto"  # 'auto' = cuda if available else cpu; or 'cpu', 'cuda', 'cuda:1'
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) mixup; 0 = off
    cutmix_alpha: float = 0.0  # Beta(alpha, alpha) cutmix; 0 = off
    progressive: tuple[int, int, int] = (0, 0, 0)  # (start resolution, first epoch, last epoch) of a linear
    # ramp up to data.resolution, in multiples of 8 px; (0, 0, 0) = off
    eval_every: int = 1  # epochs between evaluations (the last epoch is always evaluated)
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch always)
    keep_checkpoints: int = 2  # newest checkpoints kept: more than one, so a damaged newest one has a fallback
    # what training minimises (core/train/semantic_softmax.py): 'single' = cross-entropy at data.level; 'semantic_softmax'
    # = one head per level and sum_k w_k * cross-entropy_k over objective_levels (ImageNet-21K-P's multi-level
    # pretraining); evaluation, transfer and features use data.level's head / the shared backbone either way
    objective: Literal["single", "semantic_softmax"] = "single"
    objective_levels: tuple[str, ...] = ()  # semantic_softmax levels; () = data.level and every coarser level
    objective_weights: Literal["ridnik", "classes", "uniform"] = "ridnik"  # per-level loss weights, summing to 1:
    # ridnik = Ridnik et al.'s min(20, N / classes at this level and finer), classes = by class count, uniform

    def __post_init__(self) -> None:
        for key in ("epochs", "eval_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, key) < 1:
                raise RunConfigError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("mixup_alpha", "cutmix_alpha"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise RunConfigError(f"train.{key} must be a finite number >= 0 (0 = off), got {value}")
        if self.objective == "single" and (self.objective_levels or self.objective_weights != "ridnik"):
            raise ValueError("train.objective_levels / train.objective_weights apply to "
                             "train.objective=semantic_softmax only")


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        # the schedule needs warm-up inside training (core.train.schedule: warmup_steps <= total_steps)
        if self.optim.warmup_epochs > self.train.epochs:
            raise RunConfigError(f"optim.warmup_epochs={self.optim.warmup_epochs} is longer than training "
                                 f"(train.epochs={self.train.epochs})")


def absolute_data_path(cfg: RunConfig) -> RunConfig:
    """`cfg` with data.path made absolute (against the working directory; symbolic links are kept as written),
    so the run's config names its dataset from anywhere. An absolute path (a sweep's) is left as it is."""
    if os.path.isabs(cfg.data.path):
        return cfg
    return with_values(cfg, {"data.path": os.path.abspath(cfg.data.path)})
