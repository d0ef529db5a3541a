"""core.data.beton_images and core.data.resident (data.resident) on real betons: pixels and labels as ffcv serves them,
crop boxes drawn as ffcv draws them, reproducible epochs, training and resume through the CLI."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ffcv.fields import IntField, RGBImageField
from ffcv.fields.basics import IntDecoder
from ffcv.fields.rgb_image import SimpleRGBImageDecoder, get_center_crop
from ffcv.loader import Loader, OrderOption
from ffcv.reader import Reader
from ffcv.writer import DatasetWriter

from core.train import run_config
from core.train import checkpoint
from core.format import config as cfglib
from core.format import hierarchy as hlib
from core.train import parts, run as train_run
from core.data.beton_images import read_images
from core.format.beton_file import BetonError, column_values
from core.data.loader import VAL_CROP_RATIO, build_loader
from core.data.resident import (ResidentMemoryError, build_resident_loader, center_crop_boxes, crop_boxes, crop_resize,
                           draw_crop_boxes)
from core.train.run_config import RunConfig
from data_tools import convert_synthetic, derive
from launch.cli import main as cli

CNN = ("model.name=resnet10t", "optim.name=sgd", "optim.lr=0.2", "optim.weight_decay=5e-5")
MLP = ("model.name=bmlp", "model.kwargs={depth: 2, width: 64}")


@pytest.fixture(scope="module")
def jpg_dataset(tmp_path_factory) -> Path:
    """The tiny preset stored as JPEG (write.write_mode=jpg), through the real converter."""
    out = tmp_path_factory.mktemp("jpg") / "tiny"
    cfg = convert_synthetic.load_config("tiny", None, ["workers=1", "write.write_mode=jpg"])
    convert_synthetic.convert(out, cfg)
    return out


@pytest.fixture(scope="module")
def varied(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """A raw beton of images of 12 different sizes (5 to 40 px, both orientations), written by ffcv's writer."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (5 + (7 * i) % 36, 40 - (5 * i) % 33, 3), dtype=np.uint8) for i in range(12)]

    class Source:
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int):
            return images[i], i % 3, i

    path = tmp_path_factory.mktemp("varied") / "train.beton"
    fields = {"image": RGBImageField(write_mode="raw"), "subclass": IntField(), "index": IntField()}
    DatasetWriter(str(path), fields, num_workers=1).from_indexed_dataset(Source())
    return path, images


def ffcv_images(path: Path) -> np.ndarray:
    """Every image of a beton of one image size, in row order, as ffcv's own Loader decodes it."""
    names = Reader(str(path)).field_names
    pipelines = {c: None for c in names}
    pipelines["image"] = [SimpleRGBImageDecoder()]
    pipelines[names[1]] = [IntDecoder()]  # ffcv wants a second field to batch; any int column
    loader = Loader(str(path), batch_size=32, num_workers=1, order=OrderOption.SEQUENTIAL, drop_last=False,
                    pipelines=pipelines)
    return np.concatenate([np.asarray(b[0]).copy() for b in loader])


def resident(path: Path, **kw) -> object:
    args = dict(split="train", batch_size=32, levels=["subclass"], resolution=16, order="random", drop_last=None,
                extra_columns=["index"], seed=0, device="cpu", scale=(0.35, 1.0), max_bytes=10**9)
    args.update(kw)
    return build_resident_loader(path, **args)


def epoch(loader) -> list[tuple[torch.Tensor, ...]]:
    return [(b.images, *b.labels.values(), *b.extras.values()) for b in loader]


def same(a: list[tuple[torch.Tensor, ...]], b: list[tuple[torch.Tensor, ...]]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for p, q in zip(a, b) for x, y in zip(p, q))


# core.data.beton_images
@pytest.mark.parametrize("kind", ["raw", "jpg"])
@pytest.mark.parametrize("split", ["train", "val"])
def test_pixels_and_labels_equal_what_ffcv_serves(tiny_dataset, jpg_dataset, kind, split):
    path = (tiny_dataset if kind == "raw" else jpg_dataset) / f"{split}.beton"
    h = hlib.load(path.parent)
    columns = [*h.names, "index", "hard"]
    data = read_images(path, columns)
    modes = Reader(str(path)).metadata["f0"]["mode"]
    assert (modes == (1 if kind == "raw" else 0)).all()  # the beton holds what the test is about
    np.testing.assert_array_equal(data.pixels, ffcv_images(path))  # JPEGs: the same decoder call, bit-equal
    assert list(data.columns) == columns
    for c in columns:
        np.testing.assert_array_equal(data.columns[c], column_values(path, c))


def test_images_of_many_sizes_are_padded(varied):
    path, images = varied
    rows = [3, 0, 11]
    data = read_images(path, ["index"], rows=rows)  # padded to the largest of these rows
    assert data.pixels.shape == (3, max(images[r].shape[0] for r in rows), max(images[r].shape[1] for r in rows), 3)
    for n, row in enumerate(rows):
        h, w, _ = images[row].shape
        assert (data.heights[n], data.widths[n]) == (h, w) and data.columns["index"][n] == row
        np.testing.assert_array_equal(data.pixels[n, :h, :w], images[row])
        assert not data.pixels[n, h:].any() and not data.pixels[n, :, w:].any()


def test_missing_beton_and_column_are_named(tiny_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_images(tmp_path / "nowhere" / "train.beton")
    with pytest.raises(BetonError, match=r"train\.beton.*genus"):
        read_images(tiny_dataset / "train.beton", ["subclass", "genus"])
    with pytest.raises(BetonError, match=r"train\.beton.*genus"):
        resident(tiny_dataset / "train.beton", levels=["genus"])
    with pytest.raises(BetonError, match="difficulty"):
        resident(tiny_dataset / "train.beton", extra_columns=["difficulty"])


# crop boxes and the batched crop
def ffcv_random_crop(height, width, scale, ratio, area_u, aspect_u, position_u):
    """ffcv's get_random_crop (fields/rgb_image.py) line for line, with its np.random.uniform(a, b) draws
    replaced by a + (b - a) * u for given u."""
    area = height * width
    log_ratio = np.log(ratio)
    for t in range(10):
        target_area = area * (scale[0] + (scale[1] - scale[0]) * area_u[t])
        aspect_ratio = np.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * aspect_u[t])
        w = int(round(np.sqrt(target_area * aspect_ratio)))
        h = int(round(np.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            return int((height - h + 1) * position_u[0]), int((width - w + 1) * position_u[1]), h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.35, 1.0), (0.9, 1.0)])
def test_crop_boxes_are_ffcvs_and_lie_inside(scale):
    g = torch.Generator().manual_seed(0)
    n = 4000
    heights = torch.randint(1, 80, (n,), generator=g)
    widths = torch.randint(1, 80, (n,), generator=g)
    heights[:50], widths[:50] = 3, 70  # elongated: every try fails, the fallback decides
    area_u, aspect_u, position_u = (torch.rand(n, 10, generator=g, dtype=torch.float64),
                                    torch.rand(n, 10, generator=g, dtype=torch.float64),
                                    torch.rand(n, 2, generator=g, dtype=torch.float64))
    boxes = crop_boxes(heights, widths, area_u, aspect_u, position_u, scale)
    ratio = np.array([3 / 4, 4 / 3])
    expected = [ffcv_random_crop(int(heights[k]), int(widths[k]), scale, ratio, area_u[k].numpy(),
                                 aspect_u[k].numpy(), position_u[k].numpy()) for k in range(n)]
    assert boxes.tolist() == [list(e) for e in expected]
    i, j, h, w = boxes.unbind(1)
    assert (i >= 0).all() and (j >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (i + h <= heights).all() and (j + w <= widths).all()


def test_crop_boxes_have_the_asked_area_and_aspect():
    # large images, so that rounding w and h to whole pixels moves area and aspect by well under 2%
    n = 5000
    g = torch.Generator().manual_seed(1)
    heights, widths = torch.randint(300, 400, (n,), generator=g), torch.randint(300, 400, (n,), generator=g)
    for scale in [(0.08, 1.0), (0.35, 0.6)]:
        i, j, h, w = draw_crop_boxes(heights, widths, scale, g).double().unbind(1)
        area = h * w / (heights * widths)
        aspect = w / h
        assert area.min() >= scale[0] * 0.98 and area.max() <= scale[1] * 1.02
        assert aspect.min() >= 0.75 * 0.98 and aspect.max() <= 4 / 3 * 1.02
        # the whole ranges are used (log-uniform aspect: both ends are reached)
        assert area.min() < scale[0] + 0.05 * (scale[1] - scale[0]) and aspect.min() < 0.8 and aspect.max() > 1.25


def test_full_image_crop_at_stored_size_is_the_image(tiny_dataset, varied):
    data = read_images(tiny_dataset / "train.beton")
    images = torch.from_numpy(data.pixels)
    rows = torch.arange(len(images))
    boxes = torch.tensor([[0, 0, 16, 16]] * len(images))
    assert torch.equal(crop_resize(images, rows, boxes, 16), images)
    # padded images of other sizes: each square one, whole, at its own size
    path, originals = varied
    data = read_images(path)
    images = torch.from_numpy(data.pixels)
    for n, x in enumerate(originals):
        side = min(x.shape[:2])
        box = torch.tensor([[0, 0, side, side]])
        got = crop_resize(images, torch.tensor([n]), box, side)[0]
        assert torch.equal(got, torch.from_numpy(x[:side, :side]))


def test_crop_is_a_bilinear_resize_of_the_box(varied):
    """Each output equals F.interpolate(bilinear, align_corners=False) of its box cut out of the image: nothing
    outside the box (neighbours, padding) is read."""
    path, originals = varied
    images = torch.from_numpy(read_images(path).pixels)
    g = torch.Generator().manual_seed(2)
    heights = torch.tensor([x.shape[0] for x in originals])
    widths = torch.tensor([x.shape[1] for x in originals])
    rows = torch.arange(len(originals)).repeat(20)
    boxes = draw_crop_boxes(heights[rows], widths[rows], (0.08, 1.0), g)
    for size in (7, 24):
        got = crop_resize(images, rows, boxes, size)
        for k, (i, j, h, w) in enumerate(boxes.tolist()):
            crop = torch.from_numpy(originals[int(rows[k])][i:i + h, j:j + w]).permute(2, 0, 1)[None].float()
            ref = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)
            ref = ref.round().clamp(0, 255)[0].permute(1, 2, 0)
            assert (got[k].float() - ref).abs().max() <= 1  # float rounding of the grid: ties at .5 only


# the loader
def test_same_seed_same_batches_other_seed_differs_set_epoch_resumes(tiny_dataset):
    path = tiny_dataset / "train.beton"
    a = resident(path, seed=3)
    first, second = epoch(a), epoch(a)
    assert a.epoch == 2 and len(first) == len(a) == 96 // 32
    assert not same(first, second)  # a new order and new crops every epoch
    b = resident(path, seed=3)
    assert same(epoch(b), first) and same(epoch(b), second)
    resumed = resident(path, seed=3)
    resumed.set_epoch(1)
    assert same(epoch(resumed), second)
    other = epoch(resident(path, seed=4))
    assert not same(other, first) and not same(other, second)
    # every sample once per epoch, with its own labels
    index = torch.cat([x[2] for x in first])
    assert sorted(index.tolist()) == list(range(96))
    labels = torch.from_numpy(column_values(path, "subclass"))
    assert torch.equal(torch.cat([x[1] for x in first]), labels[index])


def test_drop_last_resolution_and_order(tiny_dataset):
    path = tiny_dataset / "train.beton"
    loader = resident(path, batch_size=40)
    assert len(loader) == 2 and [x[0].shape[0] for x in epoch(loader)] == [40, 40]
    loader = resident(path, batch_size=40, drop_last=False)
    assert len(loader) == 3 and [x[0].shape[0] for x in epoch(loader)] == [40, 40, 16]
    loader.set_resolution(24)  # from the next epoch on, as BetonLoader
    assert loader.resolution == 24 and all(x[0].shape[1:] == (24, 24, 3) for x in epoch(loader))
    sequential = resident(path, order="sequential", drop_last=False)
    assert torch.cat([x[2] for x in epoch(sequential)]).tolist() == list(range(96))
    rows = [5, 90, 17, 3]
    subset = resident(path, order="sequential", batch_size=3, drop_last=False, indices=rows)
    assert torch.cat([x[2] for x in epoch(subset)]).tolist() == rows


@pytest.mark.parametrize("data", ["raw", "jpg"])
def test_val_serves_every_sample_once_in_order_with_ffcvs_centre_crop(tiny_dataset, jpg_dataset, data):
    """At the resolution of the centre box (int(224/256 * 16) = 14 px) neither loader resizes, so the boxes must
    agree pixel for pixel with ffcv's decoder (core.data.seeded_crop.ScaledCenterCrop)."""
    path = (tiny_dataset if data == "raw" else jpg_dataset) / "val.beton"
    side = int(VAL_CROP_RATIO * 16)
    levels = hlib.load(path.parent).names
    loader = build_resident_loader(path, split="val", batch_size=20, levels=levels, resolution=side,
                                   order="sequential", drop_last=None, extra_columns=["index", "hard"], seed=0,
                                   device="cpu", max_bytes=10**9)
    batches = list(loader)
    assert [b.images.shape[0] for b in batches] == [20, 20, 8] and len(loader) == 3  # the partial batch kept
    ref = build_loader(path, split="val", batch_size=20, num_workers=1, levels=levels, resolution=side,
                       order="sequential", os_cache=False, distributed=False, drop_last=None,
                       extra_columns=["index"], seed=0, device="cpu")
    ref_images = torch.cat([b.images.clone() for b in ref])
    assert torch.equal(torch.cat([b.images for b in batches]), ref_images)
    assert torch.cat([b.extras["index"] for b in batches]).tolist() == list(range(48))
    for c in [*levels, "hard"]:
        got = torch.cat([b.labels[c] if c in b.labels else b.extras[c] for b in batches])
        np.testing.assert_array_equal(got.numpy(), column_values(path, c))
    train = resident(path.parent / "train.beton")
    assert [x[0].shape for x in epoch(train)] == [(32, 16, 16, 3)] * 3


def test_paired_loader_of_the_select_transfer_takes_resident_loaders(tiny_dataset):
    from core.methods.select_data import PairedLoader
    from core.methods.select_heads import SELECTED

    path = tiny_dataset / "train.beton"
    target = resident(path, batch_size=16)
    selected = resident(path, batch_size=8, levels=["class"], extra_columns=[], indices=np.arange(40))
    paired = PairedLoader(target, selected, "class", torch.tensor([0, -1, 1, -1]))
    paired.set_resolution(12)
    batches = list(paired)
    assert len(batches) == len(paired) == 96 // 16 and target.epoch == 1
    for b in batches:
        assert b.images.shape == (24, 12, 12, 3) and b.labels[SELECTED].shape == (8,)
        assert set(b.labels[SELECTED].tolist()) <= {-1, 0, 1}


def test_val_box_is_ffcvs_centre_crop():
    heights, widths = torch.tensor([16, 32, 37, 300, 5]), torch.tensor([16, 20, 64, 255, 9])
    expected = [list(get_center_crop(int(h), int(w), None, VAL_CROP_RATIO)) for h, w in zip(heights, widths)]
    assert center_crop_boxes(heights, widths, VAL_CROP_RATIO).tolist() == expected


def test_derived_level_is_served(tiny_dataset, tmp_path):
    ds = tmp_path / "tiny"
    shutil.copytree(tiny_dataset, ds)
    name = derive.random_groups(ds, 3, seed=0).name
    loader = resident(ds / "train.beton", levels=[name, "subclass"], order="sequential", drop_last=False)
    got = torch.cat([b.labels[name] for b in loader]).numpy()
    np.testing.assert_array_equal(got, column_values(ds / "train.beton", name))


def test_memory_cap_is_refused_with_the_beton_and_size(tiny_dataset, tmp_path, capsys):
    with pytest.raises(ResidentMemoryError, match=r"train\.beton: 96 images padded to 16 x 16 px take 7\.37e-05 GB"):
        resident(tiny_dataset / "train.beton", max_bytes=1000)
    cfg = cfglib.load(RunConfig, None, [f"data.path={tiny_dataset}", "data.resident=true",
                                        "data.resident_max_gb=0.00001", *MLP])
    with pytest.raises(run_config.RunConfigError, match="resident_max_gb"):
        parts.build_parts(cfg)
    assert cli(["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "r"), "--set", "data.resident=true",
                "--set", "data.resident_max_gb=0"]) == 2
    assert "resident_max_gb" in capsys.readouterr().err


# training through the run config and the CLI
def test_tiny_model_learns_with_resident_data(learnable, tmp_path):
    """tests/test_train.py's learning test (same settings and threshold) with the data on the device."""
    h = hlib.load(learnable)
    cfg = cfglib.load(RunConfig, None, [
        f"data.path={learnable}", "data.resolution=16", "data.batch_size=32", "data.scale=[0.6, 1.0]",
        "data.resident=true", *CNN, "optim.warmup_epochs=0.5", "train.epochs=12", "train.eval_every=12"])
    result = train_run.run(cfg, tmp_path / "run")
    chance = 1.0 / h.level("subclass").num_classes
    assert result["acc1/subclass"] > chance + 0.5 * (1 - chance), result
    assert result["n"] == 8 * 16


def test_cli_run_with_resident_data_resumes_exactly(tiny_dataset, tmp_path):
    """`grainsweep train --set data.resident=true`; a run resumed from its epoch-1 checkpoint (what a killed run
    leaves: the later checkpoint and result.json gone) ends with the uninterrupted run's weights."""
    sets = [f"--set={s}" for s in ("data.resident=true", "data.resolution=16", "data.batch_size=16", *MLP,
                                   "train.epochs=2", "train.keep_checkpoints=2", "data.scale=[0.3, 1.0]",
                                   "train.seed=3")]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert cli(["train", "--data", str(tiny_dataset), "--out", str(whole), *sets]) == 0
    shutil.copytree(whole, cut)
    (cut / "checkpoints" / "epoch0002.pt").unlink()
    (cut / "result.json").unlink()
    assert cli(["train", "--data", str(tiny_dataset), "--out", str(cut), *sets, "--resume"]) == 0
    a = torch.load(checkpoint.latest(whole / "checkpoints"), weights_only=True)
    b = torch.load(checkpoint.latest(cut / "checkpoints"), weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"]
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-6)
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (whole, cut))
    assert ra["acc1/subclass"] == pytest.approx(rb["acc1/subclass"])
    assert cfglib.load(RunConfig, whole / "config.yaml").data.resident is True
    assert math.isfinite(ra["loss"])
