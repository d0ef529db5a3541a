"""The training and evaluation loops. They receive built objects (model, loaders, optimizer, ...), never the config."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from tqdm import tqdm

from core.device import Precision
from core.format.hierarchy import Hierarchy
from core.data.source import BatchSource, GpuBatches
from core.train.distributed import current, sum_over_ranks
from core.train.metrics import LevelAccuracy
from core.train.objective import Objective


@dataclass
class EpochStats:
    loss: float
    acc1: float
    images: int
    seconds: float
    wait_fraction: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


class Trainer:
    """One model's training steps (`trainer(x, targets)`) and its running statistics over an epoch.

    `objective` gives the loss from the model output and the targets of every level it trains on, and the logits
    at its level (for the training accuracy). `set_lr(step)` writes the step's learning rate into the optimizer
    (a tensor, so compiled code is not re-specialised) and returns it. Loss and accuracy are summed on the
    device and read once per epoch: a `.item()` per step would wait for the device every step. `rng`: a context
    entered around each step (a fused job's member's own random stream, core/train/fused.py), or None.
    """

    def __init__(self, *, forward: Callable[[torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer,
                 objective: Objective, set_lr: Callable[[int], float], step: int, precision: Precision,
                 on_step: Callable[[int, dict], None] | None = None, rng: AbstractContextManager | None = None
                 ) -> None:
        self.forward, self.optimizer, self.objective = forward, optimizer, objective
        self.set_lr, self.step, self.precision, self.on_step = set_lr, step, precision, on_step
        self.rng = rng or nullcontext()
        self.loss_sum = torch.zeros((), dtype=torch.float64)
        self.correct = torch.zeros((), dtype=torch.int64)
        self.seen, self.scored = 0, 0  # images through the model; rows with a label at the objective's level

    def __call__(self, x: torch.Tensor, targets: dict[str, torch.Tensor]) -> None:
        with self.rng:
            self._step(x, targets)

    def _step(self, x: torch.Tensor, targets: dict[str, torch.Tensor]) -> None:
        objective = self.objective
        target = targets[objective.level]
        lr = self.set_lr(self.step)
        with self.precision.autocast():
            output = self.forward(x)
        loss = objective.loss(output, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            hard = target.argmax(1) if target.is_floating_point() else target
            self.loss_sum = self.loss_sum.to(loss.device) + loss.detach().double() * x.shape[0]
            self.correct = self.correct.to(loss.device) + (objective.logits(output).argmax(1) == hard).sum()
        self.seen += x.shape[0]
        self.scored += hard.shape[0]  # fewer than seen when the batch also holds other rows
        # (core/methods/select_heads.py)
        self.step += 1
        if self.on_step is not None:
            self.on_step(self.step, {"lr": lr})

    def stats(self, seconds: float, wait_fraction: float) -> EpochStats:
        """The epoch's statistics, summed over ranks with more processes (every rank gets the same)."""
        loss_sum, correct, seen, scored = self.loss_sum, self.correct, self.seen, self.scored
        if current().distributed:
            loss_sum, correct, n_seen, n_scored = sum_over_ranks(loss_sum, correct, torch.tensor(seen),
                                                                 torch.tensor(scored))
            seen, scored = int(n_seen), int(n_scored)
        return EpochStats(loss=float(loss_sum) / max(seen, 1), acc1=float(correct) / max(scored, 1), images=seen,
                          seconds=seconds, wait_fraction=wait_fraction)


def run_epoch(trainers: Sequence[Trainer], batches: GpuBatches, desc: str = "train") -> list[EpochStats]:
    """One pass over `batches`: every batch goes through the device stage once, then through each trainer in
    turn. Returns each trainer's statistics. With more processes only rank 0 shows the bar."""
    seen = 0
    t0 = time.perf_counter()
    bar = tqdm(batches, desc=desc, unit="batch", leave=False, dynamic_ncols=True, mininterval=1.0,
               disable=not current().is_main)
    for x, targets, _extras in bar:
        for trainer in trainers:
            trainer(x, targets)
        seen += x.shape[0]
        elapsed = time.perf_counter() - t0
        bar.set_postfix_str(f"{seen / max(elapsed, 1e-9):,.0f} img/s", refresh=False)
    bar.close()
    seconds = time.perf_counter() - t0
    return [t.stats(seconds, batches.wait_fraction) for t in trainers]


def train_epoch(*, forward: Callable[[torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer,
                objective: Objective, batches: GpuBatches, set_lr: Callable[[int], float], step: int,
                precision: Precision, desc: str = "train", on_step: Callable[[int, dict], None] | None = None
                ) -> tuple[int, EpochStats]:
    """One pass over `batches` with one model (`Trainer`); returns the next global step and the epoch's
    statistics."""
    trainer = Trainer(forward=forward, optimizer=optimizer, objective=objective, set_lr=set_lr, step=step,
                      precision=precision, on_step=on_step)
    [stats] = run_epoch([trainer], batches, desc)
    return trainer.step, stats


@torch.no_grad()
def evaluate(*, forward: Callable[[torch.Tensor], torch.Tensor], loader: BatchSource,
             augment: Callable, hierarchy: Hierarchy, level: str, precision: Precision,
             loss_fn: Callable | None = None, objective: Objective | None = None,
             desc: str = "eval") -> dict[str, float]:
    """Top-1/top-5 at `level` and at every coarser level (fine probabilities summed into coarse classes),
    on all samples and, where the data marks them (`hard` column), on hard samples. With an `objective`, its
    `logits(output)` are scored (a multi-head model's head at `level`); else the output itself. With more processes
    each rank scores its own batches (the loader's share, every image once over all ranks) and the counts are
    summed: every rank returns the whole set's metrics."""
    acc = LevelAccuracy(hierarchy, level)
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False, dynamic_ncols=True, mininterval=1.0,
                      disable=not current().is_main):
        x, _ = augment(batch.images, None)
        with precision.autocast():
            output = forward(x)
        logits = (objective.logits(output) if objective is not None else output).float()
        loss = loss_fn(logits, batch.labels[level]) if loss_fn is not None else None
        acc.update(logits, batch.labels, hard=batch.extras.get("hard"), loss=loss)
    acc.all_reduce()
    return acc.compute()
