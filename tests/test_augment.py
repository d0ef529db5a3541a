"""core.data.augment: normalisation, layout, dtype, flip, mixup/cutmix targets, compiled == eager, recompiles, and the
CPU path (cpu_stage) == the reference stage (device_stage) value for value."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from core.data.augment import IMAGENET_MEAN, IMAGENET_STD, GpuAugment
from core.data.cpu_stage import cpu_stage
from core.data.device_stage import Draws, device_stage

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


# the CPU path: same values as the reference stage, for every dtype, flip and mix (boxes at the borders included)
MIXES = {"none": dict(), "mixup": dict(lam=0.3), "mixup_lam1": dict(lam=1.0),
         "cutmix": dict(lam=0.55, cutmix=True, centre=(0.4, 0.7)),
         "cutmix_corner": dict(lam=0.2, cutmix=True, centre=(0.95, 0.02)),
         "cutmix_empty": dict(lam=1.0, cutmix=True)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("mix", sorted(MIXES))
def test_cpu_stage_equals_reference_stage(dtype, flip, mix):
    batch = 7
    images = _images(batch, 13)  # 13 x 17: odd sizes, the flip has a middle column
    targets = [torch.nn.functional.one_hot(torch.arange(batch) % NUM_CLASSES, NUM_CLASSES).float()]
    draws = _draws(batch, flip=torch.tensor([1, 0, 1, 1, 0, 0, 1], dtype=torch.bool), **MIXES[mix])
    aug = GpuAugment(device="cpu", dtype=dtype, compile=False)
    kw = dict(dtype=dtype, flip=flip, mixing=mix != "none")
    want, want_t = device_stage(images, targets, draws, aug.mean255, aug.inv_std255, **kw)
    got, got_t = cpu_stage(images, targets, draws, aug.mean255, aug.inv_std255, **kw)
    assert got.dtype == want.dtype and got.shape == want.shape and got.stride() == want.stride()
    assert torch.equal(got, want)
    assert len(got_t) == len(want_t) and all(torch.equal(a, b) for a, b in zip(got_t, want_t))


def test_eager_cpu_augment_uses_the_cpu_path_and_matches_the_reference_on_random_draws():
    kw = dict(device="cpu", dtype=torch.float32, flip=True, mixup_alpha=0.4, cutmix_alpha=1.0, mix_prob=0.8,
              num_classes={"subclass": NUM_CLASSES})
    aug = GpuAugment(compile=False, **kw)
    assert aug.stage is cpu_stage and GpuAugment(compile=True, **kw).stage is not cpu_stage
    torch.manual_seed(0)
    labels = {"subclass": torch.arange(16) % NUM_CLASSES}
    for step in range(12):
        images = _images(16, 20 + 4 * (step % 3), seed=step)
        draws = aug.draw(16)
        x, targets = aug(images, labels, draws)
        soft = [aug._soft("subclass", labels["subclass"])]
        want, want_t = device_stage(images, soft, draws, aug.mean255, aug.inv_std255, dtype=torch.float32,
                                    flip=True, mixing=True)
        assert torch.equal(x, want) and torch.equal(targets["subclass"], want_t[0])


def test_cpu_output_buffers_are_reused_only_when_nobody_holds_them():
    aug = GpuAugment(device="cpu", dtype=torch.float32, compile=False, flip=True)
    kept = []
    for step in range(4):  # every output kept: each is a new buffer, none is overwritten
        images = _images(4, 8, seed=step)
        x, _ = aug(images, None, _draws(4))
        kept.append((x, x.clone()))
    assert len({x.data_ptr() for x, _ in kept}) == 4
    assert all(torch.equal(x, copy) for x, copy in kept)
    kept.clear()
    if not hasattr(torch._C, "_storage_Use_Count"):
        return  # torch does not say who holds a storage: every output is a new buffer, checked above
    # dropped outputs come back; a live view keeps its buffer out of use (pooled buffers are alive, so a
    # data pointer among theirs is a reuse, never a fresh allocation at a recycled address)
    pooled = [buf.data_ptr() for buf, _ in aug._buffers]
    x, _ = aug(_images(4, 8), None, _draws(4))
    assert x.data_ptr() in pooled
    view = x[:, :1]
    busy, x = x.data_ptr(), None
    y, _ = aug(_images(4, 8, seed=1), None, _draws(4))
    assert y.data_ptr() in pooled and y.data_ptr() != busy
    z, _ = aug(_images(4, 8, seed=2), None, _draws(4))
    assert z.data_ptr() not in pooled  # both pooled buffers held (view, y): a new one
    assert view.shape == (4, 1, 8, 12)
