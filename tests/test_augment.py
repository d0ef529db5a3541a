"""core.augment: normalisation, layout, dtype, flip, mixup/cutmix targets, compiled == eager, recompiles."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from core.augment import IMAGENET_MEAN, IMAGENET_STD, Draws, GpuAugment

NUM_CLASSES = 5


def _images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, size, size + 4, 3), dtype=torch.uint8, generator=g)


def _reference(images: torch.Tensor) -> torch.Tensor:
    """Direct computation: float NCHW in [0, 1], minus mean, over std."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images.permute(0, 3, 1, 2).double() / 255 - mean) / std


def _draws(batch: int, *, flip=None, lam=1.0, cutmix=False, centre=(0.5, 0.5), seed=0) -> Draws:
    g = torch.Generator().manual_seed(seed)
    flip = torch.zeros(batch, dtype=torch.bool) if flip is None else flip
    return Draws(flip, torch.randperm(batch, generator=g), torch.tensor(lam), torch.tensor(cutmix),
                 torch.tensor(centre))


def test_normalisation_matches_direct_computation():
    images = _images(6, 16)
    x, _ = GpuAugment(device="cpu", dtype=torch.float32, compile=False)(images)
    torch.testing.assert_close(x.double(), _reference(images), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_output_is_channels_last_in_requested_dtype(dtype):
    images = _images(4, 12)
    x, _ = GpuAugment(device="cpu", dtype=dtype, compile=False, flip=True)(images)
    assert x.dtype == dtype and x.shape == (4, 3, 12, 16)
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_flip_mirrors_exactly_the_masked_samples():
    images = _images(8, 10)
    mask = torch.tensor([True, False, False, True, True, False, True, False])
    x, _ = GpuAugment(device="cpu", dtype=torch.float32, compile=False, flip=True)(images, None,
                                                                                  _draws(8, flip=mask))
    plain, _ = GpuAugment(device="cpu", dtype=torch.float32, compile=False)(images)
    for i in range(8):
        expected = plain[i].flip(2) if mask[i] else plain[i]
        assert torch.equal(x[i], expected)
    assert not torch.equal(x[0], plain[0])  # the images are not mirror-symmetric


@pytest.mark.parametrize("cutmix", [False, True])
def test_mixed_targets_are_distributions_matching_the_pixels(cutmix):
    batch = 8
    images = _images(batch, 16)
    labels = {"subclass": torch.arange(batch) % NUM_CLASSES}
    augment = GpuAugment(device="cpu", dtype=torch.float32, compile=False, mixup_alpha=0.0 if cutmix else 0.4,
                         cutmix_alpha=1.0 if cutmix else 0.0, num_classes={"subclass": NUM_CLASSES})
    draws = _draws(batch, lam=0.7, cutmix=cutmix, centre=(0.3, 0.6))
    x, targets = augment(images, labels, draws)
    soft = targets["subclass"]
    assert soft.shape == (batch, NUM_CLASSES) and soft.dtype == torch.float32
    torch.testing.assert_close(soft.sum(1), torch.ones(batch))
    # weight of the sample's own label = fraction of its own pixels
    plain, _ = GpuAugment(device="cpu", dtype=torch.float32, compile=False)(images)
    partner = plain[draws.perm]
    for i in range(batch):
        if draws.perm[i] == i:
            continue
        own = (x[i] - partner[i]).abs().sum(0) > 1e-4 if cutmix else None
        weight = own.float().mean() if cutmix else torch.tensor(0.7)
        if not cutmix:
            torch.testing.assert_close(x[i], 0.7 * plain[i] + 0.3 * partner[i])
        hot = torch.nn.functional.one_hot(labels["subclass"], NUM_CLASSES).float()
        expected = weight * hot[i] + (1 - weight) * hot[draws.perm[i]]
        torch.testing.assert_close(soft[i], expected, rtol=0, atol=1e-5)
    # random draws also give distributions
    _, targets = augment(images, labels)
    torch.testing.assert_close(targets["subclass"].sum(1), torch.ones(batch))


def test_compiled_matches_eager_and_resizing_recompiles_boundedly():
    kw = dict(device="cpu", dtype=torch.float32, flip=True, mixup_alpha=0.4, cutmix_alpha=1.0,
              num_classes={"subclass": NUM_CLASSES})
    eager, compiled = GpuAugment(compile=False, **kw), GpuAugment(compile=True, **kw)
    torch._dynamo.reset()
    counters.clear()
    batch = 8
    labels = {"subclass": torch.arange(batch) % NUM_CLASSES}
    graphs = []
    for step, size in enumerate([16, 24, 16, 24]):
        images = _images(batch, size, seed=step)
        draws = _draws(batch, flip=torch.arange(batch) % 3 == 0, lam=0.6, cutmix=step % 2 == 1, seed=step)
        xe, te = eager(images, labels, draws)
        xc, tc = compiled(images, labels, draws)
        torch.testing.assert_close(xc, xe, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(tc["subclass"], te["subclass"], rtol=1e-5, atol=1e-5)
        assert xc.is_contiguous(memory_format=torch.channels_last)
        graphs.append(counters["stats"]["unique_graphs"])
    assert 1 <= graphs[-1] <= 2  # two resolutions: at most one graph each
    assert graphs[2] == graphs[3] == graphs[1]  # sizes seen before never compile again
