"""What training consumes: a `BatchSource` yields `Batch`es; `GpuBatches` runs the device stage over one.

The three loaders implement `BatchSource`: core.data.loader.BetonLoader (ffcv decodes on CPU threads),
core.data.resident.ResidentLoader (the decoded set held on the device) and core.methods.select_data.PairedLoader (target
batches with selected pretraining batches appended). core/train/engine.py and `GpuBatches` are typed against it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch


def rank_positions(n: int, batch_size: int, drop_last: bool, rank: int, world: int) -> np.ndarray:
    """Positions (into an epoch's serving order of `n` rows) that rank `rank` of `world` serves, in its order.

    drop_last (training): the epoch is cut into global batches of batch_size x world rows, as one process with
    that batch would cut it, and each rank takes its consecutive batch_size rows of every global batch: the ranks'
    step-i batches together are the one-process step-i batch, every row served at most once, and the rows left
    over are those one process drops. Without drop_last (evaluation): whole batches of batch_size rows, dealt round
    robin (batch j to rank j % world): every row exactly once, no padding, and each batch the one a single process
    with this batch size evaluates."""
    if world <= 1:
        return np.arange(n)
    if drop_last:
        big = batch_size * world
        steps = n // big
        return (np.arange(steps)[:, None] * big + rank * batch_size + np.arange(batch_size)[None, :]).reshape(-1)
    starts = np.arange(rank * batch_size, n, batch_size * world)
    return np.concatenate([np.arange(s, min(s + batch_size, n)) for s in starts]) if len(starts) else \
        np.arange(0)


class Batch(NamedTuple):
    images: torch.Tensor  # uint8 (B, H, W, 3) on the loader's device
    labels: dict[str, torch.Tensor]  # level -> int64 (B,)
    extras: dict[str, torch.Tensor]  # column -> int64 (B,)


@runtime_checkable
class BatchSource(Protocol):
    """Batches of one split, epoch by epoch: iterating serves epoch `epoch` and then advances it by one.

    An epoch's batches are a function of (seed, epoch) alone, so `set_epoch(e)` resumes exactly; `set_resolution`
    takes effect when the next iteration starts (progressive resizing)."""

    levels: list[str]  # the label levels each Batch.labels holds, in this order

    @property
    def resolution(self) -> int: ...  # output side in pixels of the next epoch

    def set_resolution(self, resolution: int) -> None: ...

    @property
    def epoch(self) -> int: ...  # the epoch the next iteration will serve

    def set_epoch(self, epoch: int) -> None: ...

    @property
    def batch_size(self) -> int: ...  # images per (full) batch

    def __len__(self) -> int: ...  # batches per epoch

    def __iter__(self) -> Iterator[Batch]: ...


class GpuBatches:
    """Iterates `loader`, applies `augment(images, labels)` to each batch, and times the waits for data.

    Yields (x, targets, extras): `augment`'s two outputs and the batch's extras. `wait_fraction` is the time
    spent inside next(loader) over the wall time since the epoch started (live, for logging mid-epoch). On CUDA
    the augment work is asynchronous, so the wall time counts the consumer's GPU work only where it syncs.
    """

    def __init__(self, loader: BatchSource, augment: Callable[..., tuple[torch.Tensor, Any]]) -> None:
        self.loader = loader
        self.augment = augment
        self.wait_s = 0.0
        self.start: float | None = None
        self.end: float | None = None
        self.batches = 0

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def elapsed_s(self) -> float:
        if self.start is None:
            return 0.0
        return (self.end if self.end is not None else time.perf_counter()) - self.start

    @property
    def wait_fraction(self) -> float:
        elapsed = self.elapsed_s
        return self.wait_s / elapsed if elapsed > 0 else 0.0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, Any, dict[str, torch.Tensor]]]:
        self.wait_s, self.batches, self.end = 0.0, 0, None
        self.start = time.perf_counter()
        batches = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                self.wait_s += time.perf_counter() - t0
                break
            self.wait_s += time.perf_counter() - t0
            self.batches += 1
            x, targets = self.augment(batch.images, batch.labels)
            yield x, targets, batch.extras
        self.end = time.perf_counter()
