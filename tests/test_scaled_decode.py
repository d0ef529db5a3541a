"""core.data.seeded_crop's reduced-scale JPEG decoding, on a JPEG beton written here (smooth images, quality 95)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ffcv.fields import IntField, RGBImageField
from ffcv.fields.rgb_image import CenterCropRGBImageDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.transforms import ToTensor
from ffcv.writer import DatasetWriter

from core.data.loader import VAL_CROP_RATIO, build_loader
from core.data.seeded_crop import DCT_EIGHTHS, ScaledCenterCrop, dct_eighths

NUM_SAMPLES = 24


class _Smooth:
    """Sample i: a smooth colour image (sums of low-frequency waves) of 96-111 x 128 px, as photos are."""

    def __init__(self, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.images = []
        for i in range(n):
            h, w = 96 + i % 16, 128
            y, x = np.mgrid[0:h, 0:w].astype(np.float64)
            img = np.zeros((h, w, 3))
            for c in range(3):
                for _ in range(3):
                    fy, fx, phase = rng.uniform(0.01, 0.08, 2).tolist() + [rng.uniform(0, 6.3)]
                    img[..., c] += np.sin(fy * y + fx * x + phase)
            self.images.append(np.clip(128 + 40 * img, 0, 255).astype(np.uint8))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], i


@pytest.fixture(scope="module")
def jpeg_beton(tmp_path_factory):
    path = tmp_path_factory.mktemp("jpeg") / "train.beton"
    fields = {"image": RGBImageField(write_mode="jpg", jpeg_quality=95), "label": IntField()}
    DatasetWriter(str(path), fields, num_workers=1).from_indexed_dataset(_Smooth(NUM_SAMPLES, seed=0))
    return path


def _centre_crops(path, decoder) -> torch.Tensor:
    pipelines = {"image": [decoder, ToTensor()], "label": None}
    loader = Loader(str(path), batch_size=8, num_workers=1, order=OrderOption.SEQUENTIAL, pipelines=pipelines)
    return torch.cat([images.clone() for (images,) in loader])


@pytest.mark.parametrize("crop", [7, 56, 84, 111, 256])
@pytest.mark.parametrize("out", [8, 16, 32, 64, 224])
def test_dct_eighths_is_the_smallest_scale_that_covers_the_output(crop, out):
    k = dct_eighths(crop, crop + 3, out, out)
    assert k in (1, 2, 4, DCT_EIGHTHS)  # libjpeg-turbo's fast scales (see dct_eighths)
    if k < DCT_EIGHTHS:
        assert crop * k >= DCT_EIGHTHS * out and (crop + 3) * k >= DCT_EIGHTHS * out
    if k > 1:  # the next smaller fast scale would not cover the output
        assert crop * (k // 2) < DCT_EIGHTHS * out or (crop + 3) * (k // 2) < DCT_EIGHTHS * out


def test_full_scale_decode_equals_ffcv(jpeg_beton):
    # output as large as the centre crop (84-97 px): k = 8, the same decode and resize as ffcv's own decoder
    ours = _centre_crops(jpeg_beton, ScaledCenterCrop((96, 96), ratio=VAL_CROP_RATIO))
    ffcv = _centre_crops(jpeg_beton, CenterCropRGBImageDecoder((96, 96), ratio=VAL_CROP_RATIO))
    assert torch.equal(ours, ffcv)


@pytest.mark.parametrize("out", [12, 24, 40])
def test_reduced_scale_decode_is_close_to_a_full_decode(jpeg_beton, out):
    # k < 8 here: another antialiased reduction of the same crop, its edges at most half a scaled pixel (under
    # half an output pixel) off: closer to ffcv's full decode + INTER_AREA than ffcv's own output shifted by one
    # output pixel is to itself
    ours = _centre_crops(jpeg_beton, ScaledCenterCrop((out, out), ratio=VAL_CROP_RATIO)).float()
    ffcv = _centre_crops(jpeg_beton, CenterCropRGBImageDecoder((out, out), ratio=VAL_CROP_RATIO)).float()
    one_pixel = min((ffcv[:, 1:] - ffcv[:, :-1]).abs().mean(), (ffcv[:, :, 1:] - ffcv[:, :, :-1]).abs().mean())
    error = (ours - ffcv).abs().mean()
    print(f"{out} px: mean |ours - ffcv| {error:.2f}, one-pixel shift {one_pixel:.2f}")
    assert error < one_pixel


def test_train_and_val_loaders_serve_jpeg_betons_at_reduced_scale(jpeg_beton):
    common = dict(batch_size=8, num_workers=2, levels=["label"], os_cache=False, distributed=False, seed=3,
                  device="cpu")
    train = build_loader(jpeg_beton, split="train", resolution=16, order="random", drop_last=True, scale=(0.08, 1.0),
                         **common)
    first = [b.images.clone() for b in train]
    train.set_epoch(0)
    again = [b.images.clone() for b in train]
    assert len(first) == NUM_SAMPLES // 8 and all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(a.shape == (8, 16, 16, 3) for a in first)
    val = build_loader(jpeg_beton, split="val", resolution=16, order="sequential", drop_last=False, **common)
    labels = torch.cat([b.labels["label"].clone() for b in val])
    assert labels.tolist() == list(range(NUM_SAMPLES))
