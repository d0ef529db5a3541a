"""The baseline: a plain torchvision DataLoader over an ImageFolder of JPEGs (the PyTorch ImageNet example).

PIL decode + RandomResizedCrop(res, scale=SCALE) + RandomHorizontalFlip + ToTensor + Normalize in `workers`
worker processes, batches of `batch_size` with drop_last, copied to the device (pinned memory on CUDA). Workers
persist across epochs (`persistent_workers=True`) so that their start-up is not charged to measured epochs,
which favours the baseline; the first epoch is dropped as for the project's loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.loader import SCALE
from benchmarks.measure import check_epochs, load_average, time_epochs, versions
from core.data.augment import IMAGENET_MEAN, IMAGENET_STD


def measure_torchvision(folder: str | Path, *, res: int, workers: int, batch_size: int, epochs: int,
                        device: str = "cpu", seed: int = 0) -> dict[str, Any]:
    """Images/s of the ImageFolder DataLoader; the first of `epochs` epochs is not counted."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    check_epochs(epochs)
    dev = torch.device(device)
    tf = transforms.Compose([transforms.RandomResizedCrop(res, scale=SCALE), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    dataset = datasets.ImageFolder(str(folder), transform=tf)
    torch.manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=dev.type == "cuda", persistent_workers=workers > 0)
    load_before = load_average()

    def epoch() -> int:
        n = 0
        for x, y in loader:
            x = x.to(dev, non_blocking=True)
            y = y.to(dev, non_blocking=True)
            n += x.shape[0]
        return n

    timing = time_epochs(epoch, dev, epochs)
    del loader  # stops the persistent workers
    return {"benchmark": "torchvision_loader", **timing,
            "settings": {"folder": str(folder), "res": res, "workers": workers, "batch_size": batch_size,
                         "epochs": epochs, "warmup_epochs": 1, "device": str(dev), "scale": list(SCALE),
                         "persistent_workers": workers > 0},
            "versions": versions(), "load_average": {"before": load_before, "after": load_average()}}
