"""core.data.source.BatchSource: the three loaders implement it, and core/train/engine.py trains and evaluates
from each (real betons of the tiny preset, a linear model on the CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.data.augment import GpuAugment
from core.data.loader import build_loader
from core.methods.select_data import PairedAugment, PairedLoader, selected_augment
from core.data.resident import build_resident_loader
from core.data.source import BatchSource, GpuBatches
from core.device import resolve_precision
from core.format import hierarchy as hlib
from core.methods.select_heads import SELECTED
from core.train.engine import evaluate, train_epoch
from core.train.objective import SingleLevel

RES = 12
COMMON = dict(split="train", batch_size=16, levels=["class"], resolution=RES, order="random", drop_last=None,
              seed=0, device="cpu", scale=(0.35, 1.0))


def _ffcv(path, **kw):
    return build_loader(path, num_workers=1, os_cache=True, distributed=False, **{**COMMON, **kw})


def _resident(path, **kw):
    return build_resident_loader(path, max_bytes=10**9, **{**COMMON, **kw})


def _paired(path):
    # the target rows and, as the selected pretraining data, the rows of classes 0 and 2 (selected classes 0, 1)
    selected = _ffcv(path, batch_size=8, indices=np.arange(48))
    return PairedLoader(_ffcv(path), selected, "class", torch.tensor([0, -1, 1, -1]))


@pytest.mark.parametrize("kind", ["ffcv", "resident", "paired"])
def test_each_loader_is_a_batch_source_the_engine_trains_from(tiny_dataset, kind):
    path = tiny_dataset / "train.beton"
    loader = {"ffcv": _ffcv, "resident": _resident, "paired": _paired}[kind](path)
    assert isinstance(loader, BatchSource)
    assert loader.resolution == RES and loader.epoch == 0 and len(loader) == 96 // 16
    num_classes = hlib.load(tiny_dataset).level("class").num_classes
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * RES * RES, num_classes))
    augment = GpuAugment(device="cpu", dtype=torch.float32, compile=False, flip=True)
    if kind == "paired":  # the selected rows are not scored at 'class': train on the target rows only
        augment = PairedAugment(augment, selected_augment(augment, 2), "class")

        def forward(x: torch.Tensor) -> torch.Tensor:
            return model(x[:16])
    else:
        forward = model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    step, stats = train_epoch(forward=forward, optimizer=optimizer, objective=SingleLevel("class"),
                              batches=GpuBatches(loader, augment), set_lr=lambda s: 0.1, step=0,
                              precision=resolve_precision("fp32", torch.device("cpu")))
    assert step == len(loader) and stats.images == len(loader) * loader.batch_size
    assert np.isfinite(stats.loss) and loader.epoch == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    if kind != "paired":  # evaluation reads any BatchSource too
        h = hlib.load(tiny_dataset)
        val = GpuAugment(device="cpu", dtype=torch.float32, compile=False)
        out = evaluate(forward=model, loader=loader, augment=val, hierarchy=h, level="class",
                       precision=resolve_precision("fp32", torch.device("cpu")))
        assert out["n"] == len(loader) * loader.batch_size and 0.0 <= out["acc1/class"] <= 1.0
    else:
        assert loader.levels == ["class", SELECTED]
