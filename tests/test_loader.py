"""core.data.loader on tiny betons written here: 2 label levels, `index`, `hard`, 32-40 px raw images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ffcv.fields import IntField, RGBImageField
from ffcv.writer import DatasetWriter

from core.data.augment import GpuAugment
from core.format.beton_file import BetonError
from core.data.loader import build_loader
from core.data.source import GpuBatches

NUM_SAMPLES = 100
NUM_SUBCLASSES = 8
LEVELS = ["subclass", "class"]


class _Tiny:
    """Sample i: a random image of varying height, subclass, class = subclass // 4, index i, hard 0/1."""

    def __init__(self, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.images = [rng.integers(0, 256, (32 + i % 9, 36, 3), dtype=np.uint8) for i in range(n)]
        self.subclass = rng.integers(0, NUM_SUBCLASSES, n)
        self.hard = rng.integers(0, 2, n)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        sub = int(self.subclass[i])
        return self.images[i], sub, sub // 4, i, int(self.hard[i])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("beton") / "train.beton"
    source = _Tiny(NUM_SAMPLES, seed=0)
    fields = {"image": RGBImageField(write_mode="raw"), "subclass": IntField(), "class": IntField(),
              "index": IntField(), "hard": IntField()}
    DatasetWriter(str(path), fields, num_workers=1).from_indexed_dataset(source)
    return path, source


def _loader(path, **kw):
    args = dict(split="val", batch_size=32, num_workers=1, levels=LEVELS, resolution=24, order="sequential",
                os_cache=False, distributed=False, drop_last=None, extra_columns=["index", "hard"], seed=0,
                device="cpu", scale=(0.35, 1.0))
    args.update(kw)
    return build_loader(path, **args)


def _epoch_indices(loader) -> list[int]:
    return torch.cat([b.extras["index"].clone() for b in loader]).tolist()


def test_val_sequential_returns_every_sample_once_with_its_labels(dataset):
    path, source = dataset
    loader = _loader(path)
    seen = {name: [] for name in ["index", "hard", *LEVELS]}
    for batch in loader:
        assert batch.images.dtype == torch.uint8 and batch.images.shape[1:] == (24, 24, 3)
        assert list(batch.labels) == LEVELS and list(batch.extras) == ["index", "hard"]
        for name, values in {**batch.labels, **batch.extras}.items():
            assert values.shape == (batch.images.shape[0],)
            seen[name].append(values.clone())
    got = {name: torch.cat(v).numpy() for name, v in seen.items()}
    np.testing.assert_array_equal(got["index"], np.arange(NUM_SAMPLES))  # every sample once, partial batch kept
    np.testing.assert_array_equal(got["subclass"], source.subclass)
    np.testing.assert_array_equal(got["class"], source.subclass // 4)
    np.testing.assert_array_equal(got["hard"], source.hard)


def test_train_drop_last_gives_full_batches_and_resolution_changes_per_epoch(dataset):
    path, _ = dataset
    loader = _loader(path, split="train", order="random", levels=["class"], extra_columns=[])
    assert len(loader) == NUM_SAMPLES // 32
    for resolution in (24, 32):
        loader.set_resolution(resolution)
        batches = [(b.images.shape, b.labels["class"].shape) for b in loader]
        assert len(batches) == NUM_SAMPLES // 32
        assert all(img == (32, resolution, resolution, 3) and lab == (32,) for img, lab in batches)
    assert loader.epoch == 2


def test_random_order_differs_between_epochs_reproducible_and_resumable(dataset):
    path, _ = dataset
    kw = dict(order="random", levels=["class"], extra_columns=["index"], resolution=16)
    a = _loader(path, seed=3, **kw)
    first, second = _epoch_indices(a), _epoch_indices(a)
    assert sorted(first) == list(range(NUM_SAMPLES)) and first != second

    b = _loader(path, seed=3, **kw)
    assert _epoch_indices(b) == first and _epoch_indices(b) == second

    resumed = _loader(path, seed=3, **kw)
    resumed.set_epoch(1)  # a run resumed at epoch 1 sees epoch 1's order
    assert _epoch_indices(resumed) == second

    other = _loader(path, seed=4, **kw)
    # neither the same order as seed 3 nor seed 3's next epoch (ffcv alone seeds with seed + epoch)
    assert _epoch_indices(other) not in (first, second)


def test_missing_column_is_named(dataset):
    path, _ = dataset
    with pytest.raises(BetonError, match="genus"):
        _loader(path, levels=["subclass", "genus"])
    with pytest.raises(BetonError, match="difficulty"):
        _loader(path, extra_columns=["difficulty"])


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "val.beton"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        _loader(missing)


def test_gpu_batches_augments_and_measures_waiting(dataset):
    path, _ = dataset
    loader = _loader(path, levels=["subclass"], extra_columns=["index"])
    augment = GpuAugment(device="cpu", dtype=torch.float32, compile=False)
    batches = GpuBatches(loader, augment)
    count = 0
    for x, targets, extras in batches:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 24, 24)
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert targets["subclass"].shape == extras["index"].shape == (x.shape[0],)
        count += x.shape[0]
    assert count == NUM_SAMPLES and batches.batches == len(loader)
    assert batches.elapsed_s > 0 and 0.0 < batches.wait_fraction <= 1.0


FINALIZER_SCRIPT = """
import gc, sys
from core.data.loader import build_loader

def epoch(split):
    loader = build_loader(sys.argv[1], split=split, batch_size=16, num_workers=1, levels=["class"], resolution=16,
                          order="random", os_cache=True, distributed=False, drop_last=None, seed=0, device="cpu",
                          scale=(0.35, 1.0))
    for _ in loader:
        pass
    return loader

first = epoch("train")
second = epoch("val")  # before the fix, its memory manager changed a type the first one's decoders were keyed by
del first
gc.collect()  # the first loader's numba dispatchers are finalized here
print("ok")
"""


def test_no_numba_finalizer_traces(tiny_dataset):
    """ffcv's OSCacheManager mutated numba's interned uint8[::1] type, and each collected decoder dispatcher then
    printed "Exception ignored in: <finalize object> ... KeyError" (core/data/ffcv_loader.py)."""
    proc = subprocess.run([sys.executable, "-c", FINALIZER_SCRIPT, str(tiny_dataset / "train.beton")],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    assert "Exception ignored" not in proc.stderr and "KeyError" not in proc.stderr, proc.stderr[-2000:]
