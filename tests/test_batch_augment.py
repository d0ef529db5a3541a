"""The registry of extra batch augmentations (core/data/batch_augment) and random erasing: names checked at config
load, parameters where built, draws deterministic by seed, boxes as specified, eager == compiled, a run trains."""

from __future__ import annotations

import pytest
import torch
import yaml
from torch._dynamo.utils import counters

from core.data import batch_augment
from core.data.augment import GpuAugment
from core.data.batch_augment.random_erasing import ATTEMPTS, RandomErasing
from core.format import config as cfglib
from core.format import hierarchy as hlib
from core.train import parts
from core.train import run as train_run
from core.train.run_config import RunConfig


def _batch(batch: int = 6, size: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=g).contiguous(memory_format=torch.channels_last)


def _box(mask: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(top, left, height, width) of the True pixels of an (H, W) mask when they form one filled rectangle."""
    rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
    if len(rows) == 0:
        return None
    top, left = int(rows[0]), int(cols[0])
    height, width = int(rows[-1]) - top + 1, int(cols[-1]) - left + 1
    assert int(mask.sum()) == height * width, "erased pixels are not one rectangle"
    return top, left, height, width


# the registry
def test_unknown_name_fails_at_config_load_listing_the_registered_names():
    with pytest.raises(cfglib.ConfigError, match=r"data\.augment\.bogus.*random_erasing"):
        cfglib.load(RunConfig, None, ["data.augment={bogus: {}}"])
    with pytest.raises(cfglib.ConfigError, match=r"data\.augment\.bogus"):
        cfglib.load(RunConfig, None, ["data.augment.bogus.p=0.5"])
    cfg = cfglib.load(RunConfig, None, ["data.augment.random_erasing.p=0.5"])
    assert cfg.data.augment == {"random_erasing": {"p": 0.5}}
    assert RunConfig().data.augment == {}


def test_bad_parameters_fail_where_the_augment_is_built_naming_the_key():
    with pytest.raises(cfglib.ConfigError, match=r"data\.augment\.random_erasing\.q"):
        GpuAugment(device="cpu", compile=False, augment={"random_erasing": {"q": 1}})
    with pytest.raises(cfglib.ConfigError, match=r"data\.augment\.random_erasing.*p must be in"):
        GpuAugment(device="cpu", compile=False, augment={"random_erasing": {"p": 1.5}})
    with pytest.raises(cfglib.ConfigError, match=r"data\.augment\.nope.*registered"):
        batch_augment.build("nope", {})


@pytest.mark.parametrize("name", sorted(batch_augment.AUGMENTS))
def test_every_registered_augment_builds_with_defaults_and_keeps_the_batch_shape(name):
    augment = batch_augment.build(name, {})
    x = _batch()
    targets = [torch.arange(6), torch.full((6, 4), 0.25)]
    out, out_targets = augment.apply(x, targets, augment.draw(x.shape, "cpu", torch.Generator().manual_seed(0)))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert [t.shape for t in out_targets] == [t.shape for t in targets]


# random erasing
def test_random_erasing_is_deterministic_by_seed():
    augment = RandomErasing(p=0.5)
    x = _batch(batch=16)

    def erased(seed: int) -> torch.Tensor:
        return augment.apply(x, [], augment.draw(x.shape, "cpu", torch.Generator().manual_seed(seed)))[0]

    assert torch.equal(erased(3), erased(3))
    assert not torch.equal(erased(3), erased(4))


@pytest.mark.parametrize("mode", ["const", "pixel"])
def test_random_erasing_fills_one_box_per_image_within_the_area_and_ratio(mode):
    augment = RandomErasing(p=1.0, area=(0.05, 0.2), ratio=(0.5, 2.0), mode=mode)
    size, batch = 32, 64
    x = _batch(batch=batch, size=size)
    drawn = augment.draw(x.shape, "cpu", torch.Generator().manual_seed(1))
    out, _ = augment.apply(x, [], drawn)
    for i in range(batch):
        changed = (out[i] != x[i]).any(0)
        box = _box(changed)
        assert box == (int(drawn.top[i]), int(drawn.left[i]), int(drawn.height[i]), int(drawn.width[i])), i
        top, left, height, width = box
        assert top + height <= size and left + width <= size
        # area and ratio were drawn in range, then each side rounded to whole pixels (sides >= 5 px here, so the
        # ratio moves by a factor of at most 1.22)
        assert 0.05 * size * size - (height + width) <= height * width <= 0.2 * size * size + (height + width)
        assert 0.5 * 0.7 <= height / width <= 2.0 / 0.7
        inside = out[i, :, top:top + height, left:left + width]
        want = torch.zeros_like(inside) if mode == "const" else drawn.fill[i, :, top:top + height, left:left + width]
        assert torch.equal(inside, want)
        assert torch.equal(out[i][:, ~changed], x[i][:, ~changed])  # the rest untouched


def test_random_erasing_probability_and_boxes_larger_than_the_image():
    x = _batch(batch=4000, size=8)
    drawn = RandomErasing(p=0.3).draw(x.shape, "cpu", torch.Generator().manual_seed(2))
    assert abs(drawn.erase.float().mean().item() - 0.3) < 0.03
    assert torch.equal(RandomErasing(p=0.0).apply(x, [], RandomErasing(p=0.0).draw(x.shape, "cpu"))[0], x)
    # a box can never fit a 2 px image (sides >= 2 px or 0 px): nothing is erased, as in timm after ATTEMPTS tries
    tiny = _batch(batch=64, size=2)
    whole = RandomErasing(p=1.0, area=(0.9, 1.0), ratio=(1.0, 1.0))
    assert ATTEMPTS >= 1 and not whole.draw(tiny.shape, "cpu").erase.any()


# through GpuAugment: after the fused stage, eager and compiled alike, training batches only
def test_gpu_augment_applies_the_extras_after_the_fused_stage_eager_and_compiled():
    images = torch.randint(0, 256, (8, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = {"subclass": torch.arange(8) % 4}
    kw = dict(device="cpu", dtype=torch.float32, flip=True, mixup_alpha=0.4, num_classes={"subclass": 4})
    plain = GpuAugment(compile=False, **kw)
    eager = GpuAugment(compile=False, augment={"random_erasing": {"p": 1.0}}, **kw)
    compiled = GpuAugment(compile=True, augment={"random_erasing": {"p": 1.0}}, **kw)
    torch.manual_seed(0)
    draws = plain.draw(8)
    extra = eager.draw_extras((8, 3, 16, 16))
    want, want_t = plain(images, labels, draws)
    got, got_t = eager(images, labels, draws, extra)
    erasing = eager.augments[0]
    torch.testing.assert_close(got, erasing.apply(want, [], extra[0])[0], rtol=0, atol=0)
    torch.testing.assert_close(got_t["subclass"], want_t["subclass"], rtol=0, atol=0)  # erasing keeps targets
    assert not torch.equal(got, want)
    torch._dynamo.reset()
    counters.clear()
    xc, tc = compiled(images, labels, draws, extra)
    torch.testing.assert_close(xc, got, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(tc["subclass"], got_t["subclass"], rtol=1e-5, atol=1e-5)
    assert xc.is_contiguous(memory_format=torch.channels_last)
    # one graph with H and W symbolic, the pixel noise included: another resolution compiles nothing new
    bigger = torch.randint(0, 256, (8, 24, 24, 3), dtype=torch.uint8)
    assert compiled(bigger, labels)[0].shape == (8, 3, 24, 24)
    assert counters["stats"]["unique_graphs"] == 1
    # without mixing, the extras see the labels as given and return them
    _, targets = GpuAugment(device="cpu", compile=False, augment={"random_erasing": {}})(images, labels)
    assert torch.equal(targets["subclass"], labels["subclass"])


def test_a_run_trains_with_random_erasing(learnable, tmp_path):
    cfg = cfglib.load(RunConfig, None, [
        f"data.path={learnable}", "data.resolution=16", "data.batch_size=32", "data.workers=1",
        "data.scale=[0.6, 1.0]", "data.augment.random_erasing.p=0.25", "model.name=bmlp",
        "model.kwargs={depth: 2, width: 128}", "optim.name=adamw", "optim.lr=0.003", "optim.weight_decay=0.01",
        "optim.warmup_epochs=0.5", "train.epochs=12", "train.eval_every=12", "data.level=superclass"])
    built = parts.build_parts(cfg)
    assert [type(a).__name__ for a in built.train_augment.augments] == ["RandomErasing"]
    assert built.val_augment.augments == ()  # evaluation batches are never erased
    result = train_run.run(cfg, tmp_path / "run", parts=built)
    chance = 1.0 / hlib.load(learnable).level("superclass").num_classes
    assert result["acc1/superclass"] > chance + 0.5 * (1 - chance), result
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["augment"] == {"random_erasing": {"p": 0.25}}
