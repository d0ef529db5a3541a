"""Per-iteration learning rate: linear warm-up, then cosine, linear or constant decay to a floor.

`step` is the 0-based index of the optimizer step about to be taken. Warm-up steps 0..W-1 take base*(s+1)/W,
so the first step is not wasted at lr 0 and step W-1 reaches base. Decay runs from step W (base) to step
`total_steps` (floor = final_lr_fraction * base); steps past the end stay at the floor. The last step taken,
total_steps - 1, is therefore just above the floor: with a floor of 0 no step is wasted at lr 0 either.
(ffcv-imagenet: linear warm-up then linear decay to 0 per iteration; timm: cosine with warm-up.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from core.train.run_config import SCHEDULES


def lr_at(step: int, *, base_lr: float, warmup_steps: int, total_steps: int, kind: str = "cosine",
          final_lr_fraction: float = 0.0) -> float:
    """The learning rate for optimizer step `step` (a pure function of its arguments)."""
    _check(base_lr, warmup_steps, total_steps, kind, final_lr_fraction)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if kind == "constant":
        return base_lr
    floor = final_lr_fraction * base_lr
    # progress through the decay phase, 0 at the end of warm-up, 1 at total_steps
    span = total_steps - warmup_steps
    p = min(1.0, (step - warmup_steps) / span) if span > 0 else 1.0
    shape = 0.5 * (1.0 + math.cos(math.pi * p)) if kind == "cosine" else 1.0 - p
    return floor + (base_lr - floor) * shape


def _check(base_lr: float, warmup_steps: int, total_steps: int, kind: str, final_lr_fraction: float) -> None:
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule kind {kind!r}; choose from {SCHEDULES}")
    if base_lr < 0:
        raise ValueError(f"base_lr must be >= 0, got {base_lr}")
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"need total_steps >= 1 and 0 <= warmup_steps <= total_steps, "
                         f"got warmup_steps={warmup_steps} total_steps={total_steps}")
    if not 0.0 <= final_lr_fraction <= 1.0:
        raise ValueError(f"final_lr_fraction must be in [0, 1], got {final_lr_fraction}")


@dataclass(frozen=True)
class LRSchedule:
    base_lr: float  # peak lr, reached at the end of warm-up
    warmup_steps: int  # optimizer steps of linear warm-up
    total_steps: int  # optimizer steps of the whole run
    kind: str = "cosine"  # cosine | linear | constant (after warm-up)
    final_lr_fraction: float = 0.0  # floor as a fraction of base_lr

    def __post_init__(self) -> None:
        _check(self.base_lr, self.warmup_steps, self.total_steps, self.kind, self.final_lr_fraction)

    def lr_at(self, step: int) -> float:
        return lr_at(step, base_lr=self.base_lr, warmup_steps=self.warmup_steps, total_steps=self.total_steps,
                     kind=self.kind, final_lr_fraction=self.final_lr_fraction)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Writes lr_at(step) into every group's tensor lr in place and returns it.

        In place (fill_) so a compiled optimizer step keeps the same tensor and is not recompiled.
        """
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            t = group["lr"]
            if not isinstance(t, torch.Tensor):
                raise TypeError("optimizer lr is a float; build it with core.train.optim.build_optimizer")
            t.fill_(lr)
        return lr
