"""What a training run minimises, and how its model output is read as class scores.

The engine (core/train/engine.py) only knows this interface; a run picks one in core.train.parts.build_parts:
    train_levels  - the label columns the training loader must deliver (and mixup must make soft)
    loss(output, targets) - the scalar to minimise; `targets` maps level -> labels (indices or soft)
    logits(output) - class scores at the run's level, for training accuracy and evaluation

`SingleLevel` is plain (label-smoothed) cross-entropy at one level. Objectives with more heads (multi-level
pretraining, a second head for selected pretraining data) implement the same three members.
"""

from __future__ import annotations

from typing import Protocol

import torch

from core.train.optim import build_loss


class Objective(Protocol):
    level: str
    train_levels: tuple[str, ...]

    def loss(self, output: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def logits(self, output: torch.Tensor) -> torch.Tensor: ...


class SingleLevel:
    """Cross-entropy on the model's output at `level` (targets may be indices or probabilities)."""

    def __init__(self, level: str, label_smoothing: float = 0.0) -> None:
        self.level = level
        self.train_levels = (level,)
        self._ce = build_loss(label_smoothing)

    def loss(self, output: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._ce(output.float(), targets[self.level])

    def logits(self, output: torch.Tensor) -> torch.Tensor:
        return output
