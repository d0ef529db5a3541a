"""Training throughput with the real loader vs the same model on data already on the device.

Both sides are built by `core.train.run.build_parts` from one RunConfig and run `core.train.engine.train_epoch`, so
model, compile, precision, optimizer and device stage are exactly those of `grainsweep train`. The real side
iterates `GpuBatches(train_loader, train_augment)`; the on-device side trains on the batches of the first
(warm-up) epoch, copied and kept on the device, through the same device stage: its throughput is what the
model could do if loading cost nothing (memory: one epoch of uint8 crops, e.g. 9,216 x 192^2 x 3 = 1 GB).
`loader_cost = 1 - real / on_device` is the fraction of throughput lost to data loading.

Epochs alternate real / on-device so that a change of machine load hits both sides alike; the first epoch of
each side (torch.compile, numba, page cache) is not counted. Epochs are timed with CUDA events on CUDA.
On a shared CPU, libgomp's default spin-waiting made the on-device epochs slower than the real ones (both sides
checked alike: float32 channels_last batches of one shape, same step count); `benchmarks.run` sets
GOMP_SPINCOUNT for the cpu profile, see RESULTS.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from benchmarks.measure import device_seconds, load_average, summary, versions


class _CaptureEpoch:
    """A BetonLoader that keeps a device copy of every batch of its first epoch (ffcv reuses its buffers, hence
    the clones): the on-device side then trains on the same real batches, as airbench keeps its data on the GPU.
    (An earlier version replayed one batch; on the 2-core CPU its steps were 1.5-3x slower than real ones. The
    cause was OpenMP spin-waiting on shared cores, not the data: see RESULTS.md.)"""

    def __init__(self, loader) -> None:
        self.loader = loader
        self.batches: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []
        self.done = False

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        for batch in self.loader:
            if not self.done:
                self.batches.append((batch.images.clone(), {k: v.clone() for k, v in batch.labels.items()}))
            yield batch
        self.done = True


class OnDeviceBatches:
    """GpuBatches' interface over batches already on the device, through the same device stage (no loading)."""

    wait_fraction = 0.0

    def __init__(self, batches: list[tuple[torch.Tensor, dict[str, torch.Tensor]]], augment) -> None:
        self.batches, self.augment = batches, augment

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator:
        for images, labels in self.batches:
            x, targets = self.augment(images, labels)
            yield x, targets, {}


def run_config(data: str | Path, *, model: str, res: int, batch_size: int, workers: int, device: str,
               compile: str, epochs: int, model_kwargs: dict | None = None, resident: bool = False):
    from core.format import config as cfglib
    from core.train.run_config import RunConfig

    sets = [f"data.path={data}", f"model.name={model}", f"data.resolution={res}", f"data.batch_size={batch_size}",
            f"data.workers={workers}", f"train.device={device}", f"model.compile={compile}",
            f"train.epochs={epochs}", f"data.resident={str(resident).lower()}"]
    if model_kwargs:
        sets.append("model.kwargs={" + ", ".join(f"{k}: {v}" for k, v in model_kwargs.items()) + "}")
    return cfglib.load(RunConfig, None, sets)


def measure_train_step(data: str | Path, *, model: str, res: int, batch_size: int, workers: int, epochs: int,
                       device: str = "cpu", compile: str = "auto", model_kwargs: dict | None = None,
                       resident: bool = False) -> dict[str, Any]:
    """Images/s of training with the real loader and with on-device data, `epochs` measured epochs each.
    resident: the real loader is data.resident's (the decoded set on the device, crops there: core/data/resident.py)
    instead of ffcv's."""
    from core.train.engine import train_epoch
    from core.data.source import GpuBatches
    from core.train.parts import build_parts

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1 (one more per side is run first as warm-up), got {epochs}")
    cfg = run_config(data, model=model, res=res, batch_size=batch_size, workers=workers, device=device,
                     compile=compile, epochs=2 * (epochs + 1), model_kwargs=model_kwargs, resident=resident)
    p = build_parts(cfg)
    dev = p.device
    source = _CaptureEpoch(p.train_loader)
    step = 0

    def epoch(batches) -> tuple[int, Any]:
        nonlocal step
        step, stats = train_epoch(forward=p.forward, optimizer=p.optimizer, objective=p.objective,
                                  batches=batches, set_lr=lambda s: p.schedule.apply(p.optimizer, s), step=step,
                                  precision=p.precision, desc=f"bench {model}")
        return stats.images, stats

    load_before = load_average()
    real, on_device, wait = [], [], []
    for e in range(epochs + 1):
        # real loader, then the same number of steps on the captured batch
        dt, (n, stats) = device_seconds(lambda: epoch(GpuBatches(source, p.train_augment)), dev)
        if e > 0:
            real.append(n / dt)
            wait.append(stats.wait_fraction)
        dt, (n, _) = device_seconds(lambda: epoch(OnDeviceBatches(source.batches, p.train_augment)), dev)
        if e > 0:
            on_device.append(n / dt)
    r, d = summary(real), summary(on_device)
    return {"benchmark": "train_step", "model": model, "images_per_second": r["median"],
            "real_loader": r, "on_device": d, "real_over_on_device": r["median"] / d["median"],
            "loader_cost": 1.0 - r["median"] / d["median"], "data_wait_fraction": summary(wait),
            "settings": {"data": str(data), "model": model, "model_kwargs": model_kwargs or {}, "res": res,
                         "batch_size": batch_size, "workers": workers, "steps_per_epoch": len(p.train_loader),
                         "epochs": epochs, "warmup_epochs": 1, "device": str(dev),
                         "compiled": p.forward is not p.model,
                         "precision": str(p.precision.dtype) if p.precision.dtype else "fp32",
                         "channels_last": cfg.model.channels_last, "resident": resident},
            "versions": versions(), "load_average": {"before": load_before, "after": load_average()}}
