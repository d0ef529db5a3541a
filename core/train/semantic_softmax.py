"""Multi-level pretraining with the semantic softmax of ImageNet-21K-P (Ridnik et al., "ImageNet-21K Pretraining for
the Masses", arXiv 2104.10972): one linear head per hierarchy level on a shared backbone, one softmax
cross-entropy per level, and the levels' losses summed with weights from the levels' sizes.

    MultiLevelModel  - backbone (core.models.build.build_model without classifier) + one Linear head per level; its
                       output is every head's logits concatenated in level order, finest first (one tensor, so
                       torch.compile sees a plain classifier). reset_head(n) swaps all heads for one new head: the
                       wrapper then behaves as a plain single-head model.
    with_new_head    - what a transfer starts from: a MultiLevelModel's backbone given a new classifier, which has
                       exactly the layout of core.models.build.build_model's model, so the transfer run (its config says
                       train.objective=single) reloads wherever a plain run does (eval, features, a further
                       transfer); any other model gets reset_head in place.
    SemanticSoftmax  - the Objective (core/train/objective.py): loss = sum_k w_k * CE_k, logits = the finest level's slice
    level_weights    - w_k from the class counts n_k of the trained levels
    build_run_model / build_objective - what a RunConfig asks for (`train.objective`); every place that rebuilds
                       a run's network from its folder (training, `grainsweep eval`, transfer, features) calls
                       build_run_model, so a multi-level run loads wherever a single-level one does.

Weights. Ridnik et al.'s code (Alibaba-MIIL/ImageNet21K, `ImageNet21kSemanticSoftmax`) groups the tree's classes by
depth, n_d classes at depth d (0 = coarsest), and multiplies level d's loss (a batch mean in which images without a
target at depth d count 0) by min(20, N / sum_{d' >= d} n_d'), N = sum_d n_d: 1 for the coarsest level, more for
deeper ones. sum_{d' >= d} n_d' is proportional to the number of images that have a target at depth d, so the
factor undoes the rarity of deep targets. Here, levels finest first (k = 0 the finest trained level):

    "ridnik"   (default) w_k = min(20, N / sum_{j <= k} n_j), N = sum_j n_j over the trained levels, then / sum_k w_k
    "classes"  w_k = n_k / N (the level's share of all classes)
    "uniform"  w_k = 1 / L for L trained levels

Normalising to sum 1 is our choice (Ridnik et al. keep the coarsest at 1): the loss is then a convex combination
of cross-entropies, on the scale of a single-level run, so learning rates carry over. Every sample of our betons is
labelled at every level, so there is no rarity to undo: "ridnik" then just weights finer levels somewhat more
(64/16/4 classes: 0.39/0.31/0.30), "classes" much more (0.76/0.19/0.05); "uniform" is what inverse occurrence
gives for fully labelled data. Each level's cross-entropy uses the run's label smoothing over that level's classes
(as theirs: eps / n_k), and takes class indices or mixup's soft targets (B, n_k).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.format import hierarchy as hlib
from core.format.config import ConfigError
from core.models.build import build_model
from core.train.objective import Objective, SingleLevel
from core.train.run_config import RunConfig

WEIGHTINGS = ("ridnik", "classes", "uniform")
RIDNIK_MAX_WEIGHT = 20.0  # their max_normalization_factor (2e1), applied before normalising


def level_weights(sizes: Sequence[int], kind: str = "ridnik") -> tuple[float, ...]:
    """Loss weights (summing to 1) of levels with `sizes` classes, finest first; see the module docstring."""
    if not sizes or min(sizes) < 1:
        raise ValueError(f"level sizes must be >= 1, got {list(sizes)}")
    if kind == "ridnik":
        total = sum(sizes)
        raw = [min(RIDNIK_MAX_WEIGHT, total / sum(sizes[:k + 1])) for k in range(len(sizes))]
    elif kind == "classes":
        raw = [float(n) for n in sizes]
    elif kind == "uniform":
        raw = [1.0] * len(sizes)
    else:
        raise ValueError(f"unknown weighting {kind!r}; choose from {list(WEIGHTINGS)}")
    s = sum(raw)
    return tuple(w / s for w in raw)


class MultiLevelModel(nn.Module):
    """A backbone with one linear head per level; forward -> (B, sum(level_sizes)) logits, finest level first.

    Has the interface of core/models/build.py: forward, forward_features (the backbone's pooled features), feature_dim,
    reset_head."""

    def __init__(self, backbone: nn.Module, level_sizes: Sequence[int]):
        super().__init__()
        if not level_sizes or min(level_sizes) < 1:
            raise ValueError(f"level sizes must be >= 1, got {list(level_sizes)}")
        self.backbone = backbone
        self.feature_dim = int(backbone.feature_dim)
        self.level_sizes = tuple(int(n) for n in level_sizes)
        self.heads = nn.ModuleList(nn.Linear(self.feature_dim, n) for n in self.level_sizes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.forward_features(x)
        if len(self.heads) == 1:
            return self.heads[0](f)
        return torch.cat([head(f) for head in self.heads], dim=1)

    def reset_head(self, num_classes: int) -> None:
        """One new head with `num_classes` outputs instead of all the level heads: a plain single-head model."""
        p = next(self.backbone.parameters())
        self.heads = nn.ModuleList([nn.Linear(self.feature_dim, num_classes).to(device=p.device, dtype=p.dtype)])
        self.level_sizes = (int(num_classes),)


class SemanticSoftmax:
    """sum_k w_k * cross-entropy at level k on the k-th slice of a MultiLevelModel's output (core/train/objective.py)."""

    def __init__(self, levels: Sequence[str], sizes: Sequence[int], weights: Sequence[float],
                 label_smoothing: float = 0.0) -> None:
        if not (len(levels) == len(sizes) == len(weights) >= 1):
            raise ValueError(f"one size and weight per level: levels {list(levels)}, sizes {list(sizes)}, "
                             f"weights {list(weights)}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.levels = tuple(levels)
        self.sizes = tuple(int(n) for n in sizes)
        self.weights = tuple(float(w) for w in weights)
        self.label_smoothing = label_smoothing
        self.level = self.levels[0]  # the finest trained level: the run's level
        self.train_levels = self.levels

    def split(self, output: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The output's per-level logits, in `levels` order."""
        if output.shape[-1] != sum(self.sizes):
            raise ValueError(f"output has {output.shape[-1]} logits; levels {list(self.levels)} have "
                             f"{list(self.sizes)} classes (sum {sum(self.sizes)})")
        return torch.split(output, list(self.sizes), dim=-1)

    def level_losses(self, output: torch.Tensor, targets: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Each level's (unweighted) mean cross-entropy; targets are indices (B,) or probabilities (B, n_k)."""
        return [F.cross_entropy(logits.float(), targets[lv], label_smoothing=self.label_smoothing)
                for lv, logits in zip(self.levels, self.split(output))]

    def loss(self, output: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        losses = self.level_losses(output, targets)
        total = losses[0] * self.weights[0]
        for w, l in zip(self.weights[1:], losses[1:]):
            total = total + w * l
        return total

    def logits(self, output: torch.Tensor) -> torch.Tensor:
        return output[..., :self.sizes[0]]


def with_new_head(model: nn.Module, num_classes: int) -> nn.Module:
    """`model` with one new, randomly initialised `num_classes` head: a MultiLevelModel's backbone with a new
    classifier (the layout build_model gives: a checkpoint of it loads into a train.objective=single run's model),
    any other model reset in place. The returned model holds the same backbone parameter objects."""
    if isinstance(model, MultiLevelModel):
        model = model.backbone
    model.reset_head(num_classes)
    return model


# what a run's config asks for
def objective_levels(cfg: RunConfig, level: str) -> tuple[str, ...]:
    """The levels a semantic_softmax run trains, finest first: `train.objective_levels`, or () = `level` and
    every coarser level. Only levels of the dataset's hierarchy (not derived ones); `level` must be the finest."""
    base = hlib.load(Path(cfg.data.path))
    if level not in base.names:
        raise ConfigError(f"train.objective=semantic_softmax trains hierarchy levels {base.names}; data.level="
                          f"{level!r} is a derived level, which it does not support (use train.objective=single)")
    asked = cfg.train.objective_levels or tuple(base.names[base.index(level):])
    bad = [lv for lv in asked if lv not in base.names]
    if bad:
        raise ConfigError(f"train.objective_levels: {bad} are not levels of {cfg.data.path}; its levels are "
                          f"{base.names} (derived levels are not supported)")
    if len(set(asked)) != len(asked):
        raise ConfigError(f"train.objective_levels={list(asked)} names a level twice")
    if level not in asked or any(base.index(lv) < base.index(level) for lv in asked):
        raise ConfigError(f"train.objective_levels={list(asked)} must hold data.level={level!r} and only levels "
                          f"at or above it (coarser: {base.names[base.index(level):]}); data.level is the finest "
                          "trained level, the one evaluated")
    return tuple(sorted(asked, key=base.index))


def build_run_model(cfg: RunConfig, hierarchy: hlib.Hierarchy, level: str) -> nn.Module:
    """The freshly initialised network of a run with config `cfg` at `level` (as core.train.parts.check_data gives
    them): a single-head model for train.objective=single, a MultiLevelModel for semantic_softmax."""
    if cfg.train.objective == "single":
        return build_model(cfg.model.name, hierarchy.level(level).num_classes, cfg.data.resolution,
                           **cfg.model.kwargs)
    levels = objective_levels(cfg, level)
    backbone = build_model(cfg.model.name, 0, cfg.data.resolution, **cfg.model.kwargs)  # 0 = no classifier
    return MultiLevelModel(backbone, [hierarchy.level(lv).num_classes for lv in levels])


def build_objective(cfg: RunConfig, hierarchy: hlib.Hierarchy, level: str) -> Objective:
    """What a run with config `cfg` at `level` minimises (train.objective); matches build_run_model's output."""
    if cfg.train.objective == "single":
        return SingleLevel(level, cfg.optim.label_smoothing)
    levels = objective_levels(cfg, level)
    sizes = [hierarchy.level(lv).num_classes for lv in levels]
    return SemanticSoftmax(levels, sizes, level_weights(sizes, cfg.train.objective_weights),
                           cfg.optim.label_smoothing)
