"""The training batches of fine-tuning with selected pretraining data: each target batch followed by a batch of
the selected pretraining images (core/methods/select_heads.py says how the rows are scored).

The selected images are rows of the pretraining beton, served by an ordinary loader given those rows (ffcv's
`indices`, nothing is copied; core.format.beton_file.rows_with_labels finds them). `PairedLoader` stands in for
the run's training loader in core.train.run.run: an epoch is one pass of the target loader; the selected loader
cycles. For exact resume the selected stream of target epoch e is a function of e alone: it starts selected
epoch e * cycles (cycles = selected epochs one target epoch can use up) and moves to the next selected epoch
when one runs out; what a target epoch leaves of its last selected epoch is skipped.
`PairedAugment` runs the device stage (core.data.augment.GpuAugment) on the two parts separately, so flips and
mixup/cutmix stay within the target rows and within the selected rows.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import torch

from core.data.augment import GpuAugment
from core.data.source import Batch, BatchSource
from core.methods.select_heads import SELECTED


class PairedLoader:
    """A core.data.source.BatchSource of target batches with a selected batch appended: images concatenated
    (target rows first), labels {target levels..., SELECTED: selected class 0..K-1}, extras those of the target
    batch. Target and selected loaders are any BatchSource (ffcv's or the resident one)."""

    def __init__(self, target: BatchSource, selected: BatchSource, source_level: str,
                 class_map: torch.Tensor) -> None:
        if len(selected) == 0:
            raise ValueError("the selected loader yields no batch (fewer selected images than its batch size)")
        if SELECTED in target.levels:
            raise ValueError(f"the target loader serves a level named {SELECTED!r}, the key of the selected labels")
        self.target, self.selected = target, selected
        self.source_level = source_level
        self.class_map = class_map  # pretraining class index -> selected class 0..K-1 (-1: not selected)
        self.cycles = math.ceil(len(target) / len(selected))
        self.levels = [*target.levels, SELECTED]

    @property
    def resolution(self) -> int:
        return self.target.resolution

    def set_resolution(self, resolution: int) -> None:
        self.target.set_resolution(resolution)
        self.selected.set_resolution(resolution)

    @property
    def epoch(self) -> int:
        return self.target.epoch

    def set_epoch(self, epoch: int) -> None:
        self.target.set_epoch(epoch)

    @property
    def batch_size(self) -> int:
        return self.target.batch_size + self.selected.batch_size

    def __len__(self) -> int:
        return len(self.target)

    def selected_epochs(self, epoch: int) -> range:
        """The selected loader's epochs that target epoch `epoch` may draw from, in order."""
        return range(epoch * self.cycles, (epoch + 1) * self.cycles)

    def __iter__(self) -> Iterator[Batch]:
        sel_epochs = iter(self.selected_epochs(self.target.epoch))
        stream = None
        try:
            for tb in self.target:
                sb = next(stream, None) if stream is not None else None
                if sb is None:
                    if stream is not None:
                        stream.close()
                    self.selected.set_epoch(next(sel_epochs))
                    stream = iter(self.selected)
                    sb = next(stream)
                labels = {**tb.labels, SELECTED: self.class_map[sb.labels[self.source_level]]}
                yield Batch(torch.cat([tb.images, sb.images]), labels, dict(tb.extras))
        finally:
            if stream is not None:
                stream.close()  # ends ffcv's epoch thread of a selected epoch left unfinished


class PairedAugment:
    """`augment` on the target rows, `selected` on the selected rows (split by the target labels' length);
    returns the concatenated input and {target levels..., SELECTED: ...} targets."""

    def __init__(self, augment: GpuAugment, selected: GpuAugment, level: str) -> None:
        self.augment, self.selected, self.level = augment, selected, level

    def __call__(self, images: torch.Tensor, labels: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        n = len(labels[self.level])
        x_t, t = self.augment(images[:n], {k: v for k, v in labels.items() if k != SELECTED})
        x_s, s = self.selected(images[n:], {SELECTED: labels[SELECTED]})
        x = torch.cat([x_t, x_s]).contiguous(memory_format=torch.channels_last)
        return x, {**t, **s}


def selected_augment(augment: GpuAugment, num_selected: int) -> GpuAugment:
    """The same device stage (shared compiled function, constants, mixing settings) for the selected labels."""
    out = copy.copy(augment)
    out.num_classes = {SELECTED: num_selected}
    return out


__all__ = ["PairedAugment", "PairedLoader", "selected_augment"]
