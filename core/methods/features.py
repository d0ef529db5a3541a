"""Frozen features of a trained model over a beton: the input of clustering evaluation and data selection.

`extract` runs `model.forward_features` (pooled, one vector per image; core/models/build.py) over every batch of a
loader (centre crops, no flip) and returns the features with each sample's labels at the loader's levels and,
where the loader serves it, the sample's `index` column (its row in the beton). `run_model` rebuilds a finished
run's network from its folder (config.yaml + newest checkpoint) on a device, ready for `extract`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from core.data.source import BatchSource


@dataclass(frozen=True)
class Features:
    features: np.ndarray  # float32 (N, D)
    labels: dict[str, np.ndarray]  # level -> int64 (N,)
    index: np.ndarray | None  # int64 (N,) rows in the beton, when the loader serves the `index` column

    def __len__(self) -> int:
        return len(self.features)


@torch.no_grad()
def extract(model: torch.nn.Module, loader: BatchSource, augment, autocast=None,
            desc: str = "features") -> Features:
    """Pooled features of every image `loader` yields. `augment` turns the uint8 batch into model input
    (core.data.augment.GpuAugment without flip); `autocast` is an optional context-manager factory (bf16 on CUDA)."""
    was_training = model.training
    model.eval()
    feats, labels, index = [], {}, []
    try:
        for batch in tqdm(loader, desc=desc, unit="batch", leave=False, dynamic_ncols=True, mininterval=1.0):
            x, _ = augment(batch.images, None)
            if autocast is not None:
                with autocast():
                    f = model.forward_features(x)
            else:
                f = model.forward_features(x)
            feats.append(f.float().cpu())
            # copy=True: on a CPU loader .cpu() would keep views into ffcv's reused ring buffers (core/data/loader.py)
            for lv, y in batch.labels.items():
                labels.setdefault(lv, []).append(y.reshape(-1).to("cpu", copy=True))
            if "index" in batch.extras:
                index.append(batch.extras["index"].reshape(-1).to("cpu", copy=True))
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError(f"{desc}: the loader yielded no batch")
    labels_np = {lv: torch.cat(v).numpy().astype(np.int64) for lv, v in labels.items()}
    return Features(torch.cat(feats).numpy(), labels_np,
                    torch.cat(index).numpy().astype(np.int64) if index else None)


def extract_beton(model: torch.nn.Module, cfg, beton: str | Path, levels: list[str], device: torch.device,
                  extra_columns: tuple[str, ...] = (), seed: int = 0, desc: str = "features",
                  indices: np.ndarray | None = None, resolution: int = 0) -> Features:
    """`extract` over every row of `beton` (or the rows `indices`) in order: centre crops at `resolution` (0 = the
    run's val resolution), no flip, the run's precision, workers and batch size (`cfg` is the run's RunConfig, as
    `run_model` returns it)."""
    from core.data.augment import GpuAugment
    from core.data.loader import build_loader
    from core.device import resolve_precision

    precision = resolve_precision(cfg.train.precision, device)
    loader = build_loader(beton, split="val", batch_size=cfg.data.val_batch_size, num_workers=cfg.data.workers,
                          levels=levels, resolution=resolution or cfg.data.val_resolution or cfg.data.resolution,
                          order="sequential", os_cache=cfg.data.os_cache, distributed=False, drop_last=False,
                          extra_columns=list(extra_columns), seed=seed, device=device, indices=indices)
    augment = GpuAugment(device=device, dtype=precision.dtype or torch.float32, flip=False, compile=False)
    return extract(model, loader, augment, precision.autocast if precision.dtype else None, desc=desc)


def class_means(features: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(means (C, D), counts (C,)): the mean feature of each class; a class without samples gets a zero row."""
    counts = np.bincount(labels, minlength=num_classes)
    sums = np.zeros((num_classes, features.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, features)
    means = sums / np.maximum(counts, 1)[:, None]
    return means.astype(np.float32), counts


def loaded_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, "object", Path]:
    """(model with the run's newest readable weights, in eval mode on `device`; the run's RunConfig; the checkpoint
    loaded). A damaged newest checkpoint is skipped with a warning (core.train.checkpoint.load_newest)."""
    from core.format import config as cfglib
    from core.format.run_folder import RunFolder
    from core.train import checkpoint
    from core.train.parts import check_data
    from core.train.run_config import RunConfig
    from core.train.semantic_softmax import build_run_model

    folder = RunFolder(run_dir)
    cfg = cfglib.load(RunConfig, folder.require_config())
    h, level = check_data(cfg)
    model = build_run_model(cfg, h, level)
    last, _ = checkpoint.load_newest(folder.checkpoint_dir, model=model, restore_rng=False,
                                     ignore=checkpoint.AUXILIARY_HEADS, what=str(folder.path))
    return model.to(device).eval(), cfg, last


def run_model(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, "object"]:
    """(model with the run's newest readable weights, in eval mode on `device`; the run's RunConfig)."""
    model, cfg, _ = loaded_run(run_dir, device)
    return model, cfg
