"""A loader that keeps a small beton's decoded images on the training device and crops them there.

For small data sets (CIFAR-100 at 32 px, the synthetic presets at 16-64 px) the whole decoded split fits in
device memory, so ffcv's per-epoch CPU decode is work done again and again for nothing. `build_resident_loader`
reads every image once (core/data/beton_images.py, no ffcv Loader), stores them on `device` as one uint8 tensor
padded to the largest stored size plus each image's (height, width), and serves `core.data.source.Batch`es like
core.data.loader.BetonLoader (both are core.data.source.BatchSource: same epoch/resume semantics): each batch's
crops are one batched affine_grid + grid_sample, rounded back to uint8 NHWC, so the device stage
(core.data.augment.GpuAugment: flip, normalise, mixup/cutmix) is the same as with ffcv. Memory: N x H x W x 3
bytes per split (H, W the largest stored height and width); a split over `max_bytes` is refused before anything
is read.

Facts it relies on:
- The random crop box is drawn as torchvision's RandomResizedCrop.get_params and ffcv's get_random_crop
  (ffcv/fields/rgb_image.py) draw it: up to 10 tries of area = H * W * U(scale), aspect = exp(U(log 3/4,
  log 4/3)), w = round(sqrt(area * aspect)), h = round(sqrt(area / aspect)); the first try with 0 < w <= W and
  0 < h <= H wins, at i = int(U(0, H - h + 1)), j = int(U(0, W - w + 1)); with none, the whole image clipped
  to the aspect range, centred. Here all samples' 10 tries are drawn at once and the first valid one picked:
  the unused tries' draws are thrown away, which leaves the distribution unchanged (tests compare boxes with a
  scalar copy of ffcv's function fed the same draws).
- The validation box is ffcv's CenterCropRGBImageDecoder's (get_center_crop): side c = int(ratio * min(H, W))
  at ((H - c) // 2, (W - c) // 2), ratio core.data.loader.VAL_CROP_RATIO, then resized to the resolution.
- F.grid_sample(bilinear, align_corners=False) reads input pixel-centre coordinate s at grid value
  (2 s + 1) / size - 1. The affine map here sends output pixel y to s = i + (y + 0.5) * h / R - 0.5, the
  pixel-centre mapping of resizing the crop (F.interpolate(bilinear, align_corners=False), cv2.resize); the grid
  is clamped to the crop's outer pixel centres, which is how those resizes treat the border, so no pixel outside
  the crop (a neighbour or padding) is ever read. A whole-image box at the stored size is the identity, exact
  after rounding (tested).
- Orders and crops come from a CPU torch.Generator seeded from (seed, epoch) through np.random.SeedSequence, so
  epoch e is a pure function of (seed, e) on any device, and seeds never share an epoch's draws (ffcv's own
  seed + epoch would). Resuming at epoch e = `set_epoch(e)`. They are not the ffcv loader's crops or order.
- Differences from the ffcv path: the resize is bilinear without antialiasing (ffcv: cv2 INTER_AREA), so a crop
  shrunk by more than 2x aliases; at the sizes this is for, crops are mostly enlarged. 'quasi_random' (ffcv's
  page-wise order for data larger than RAM) means nothing in memory and is served as 'random'.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from core.format.beton_file import BetonError, beton_columns, check_indices, column_values
from core.data.beton_images import image_sizes, padded_nbytes, read_images
from core.data.loader import VAL_CROP_RATIO, check_request
from core.data.seeded_crop import ASPECT_RATIO
from core.data.source import Batch, rank_positions

CROP_TRIES = 10  # torchvision's and ffcv's tries before the centre-crop fallback


class ResidentMemoryError(BetonError):
    """A split whose padded images would exceed the memory cap; the message names the beton and the size."""


# crop boxes: int64 (N, 4) rows (i, j, h, w) in stored pixels, as ffcv's crop functions return them
def crop_boxes(heights: torch.Tensor, widths: torch.Tensor, area_u: torch.Tensor, aspect_u: torch.Tensor,
               position_u: torch.Tensor, scale: tuple[float, float],
               ratio: tuple[float, float] = ASPECT_RATIO) -> torch.Tensor:
    """RandomResizedCrop boxes from uniform [0, 1) draws: area_u, aspect_u (N, tries), position_u (N, 2)."""
    height, width = heights.double(), widths.double()
    target = (height * width)[:, None] * (scale[0] + (scale[1] - scale[0]) * area_u.double())
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * aspect_u.double())
    w = torch.round(torch.sqrt(target * aspect))  # torch.round and Python's round both round half to even
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width[:, None]) & (h > 0) & (h <= height[:, None])
    first = fits.int().argmax(1, keepdim=True)  # argmax returns the first of equal maxima: the first fit
    found = fits.any(1)
    # the fallback: the whole image, clipped to the aspect range, centred
    in_ratio = width / height
    fb_w = torch.where(in_ratio > ratio[1], torch.round(height * ratio[1]), width)
    fb_h = torch.where(in_ratio < ratio[0], torch.round(width / ratio[0]), height)
    h = torch.where(found, h.gather(1, first)[:, 0], fb_h)
    w = torch.where(found, w.gather(1, first)[:, 0], fb_w)
    # int(uniform(0, n)) = floor(n * u) for n > 0
    i = torch.where(found, torch.floor(position_u[:, 0].double() * (height - h + 1)), torch.floor((height - h) / 2))
    j = torch.where(found, torch.floor(position_u[:, 1].double() * (width - w + 1)), torch.floor((width - w) / 2))
    return torch.stack([i, j, h, w], 1).long()


def draw_crop_boxes(heights: torch.Tensor, widths: torch.Tensor, scale: tuple[float, float],
                    generator: torch.Generator) -> torch.Tensor:
    """`crop_boxes` with draws from `generator` (a CPU generator; sizes on the CPU)."""
    n = len(heights)
    area_u = torch.rand(n, CROP_TRIES, generator=generator, dtype=torch.float64)
    aspect_u = torch.rand(n, CROP_TRIES, generator=generator, dtype=torch.float64)
    position_u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    return crop_boxes(heights, widths, area_u, aspect_u, position_u, scale)


def center_crop_boxes(heights: torch.Tensor, widths: torch.Tensor, ratio: float) -> torch.Tensor:
    """ffcv's get_center_crop for every image: a square of int(ratio * short side), centred."""
    side = (ratio * torch.minimum(heights, widths).double()).long()  # int() truncates, as .long() does
    return torch.stack([(heights - side) // 2, (widths - side) // 2, side, side], 1)


def crop_resize(images: torch.Tensor, rows: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, size, size, 3): the boxes (B, 4) of images[rows] (images uint8 (N, H, W, 3), padded) resized
    bilinearly, in one grid_sample over the batch."""
    _, pad_h, pad_w, _ = images.shape
    x = images[rows].permute(0, 3, 1, 2).float()
    i, j, h, w = boxes.to(images.device, torch.float64).unbind(1)
    # output pixel centre -> input pixel centre i + (y + 0.5) * h / size - 0.5, in grid_sample's [-1, 1] units
    theta = torch.zeros(len(rows), 2, 3, dtype=torch.float64, device=images.device)
    theta[:, 0, 0], theta[:, 0, 2] = w / pad_w, (2 * j + w) / pad_w - 1
    theta[:, 1, 1], theta[:, 1, 2] = h / pad_h, (2 * i + h) / pad_h - 1
    grid = F.affine_grid(theta.float(), [len(rows), 3, size, size], align_corners=False)
    # clamp to the crop's outer pixel centres: border replication inside the crop, like a resize of the crop
    lo = torch.stack([(2 * j + 1) / pad_w - 1, (2 * i + 1) / pad_h - 1], 1).float()
    hi = torch.stack([(2 * (j + w) - 1) / pad_w - 1, (2 * (i + h) - 1) / pad_h - 1], 1).float()
    grid = grid.clamp(min=lo[:, None, None, :], max=hi[:, None, None, :])
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded from (seed, epoch) alone: epoch e of seed s never replays another pair's draws."""
    words = np.random.SeedSequence([int(seed) % 2**64, int(epoch)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))


class ResidentLoader:
    """A core.data.source.BatchSource over images held on the device: iterating yields `Batch`es for the epoch
    `self.epoch` and then advances it by one; crops and order are a function of (seed, epoch)."""

    def __init__(self, images: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor,
                 labels: dict[str, torch.Tensor], extras: dict[str, torch.Tensor], *,
                 split: Literal["train", "val"], batch_size: int, resolution: int, order: str, drop_last: bool,
                 seed: int, scale: tuple[float, float] | None, shard: tuple[int, int] = (0, 1)) -> None:
        self.images = images  # uint8 (N, H, W, 3) on the device, padded
        self.heights, self.widths = heights, widths  # int64 (N,) on the CPU, where the boxes are drawn
        self._labels, self._extras = labels, extras  # name -> int64 (N,) on the device
        self.levels, self.extra_columns = list(labels), list(extras)
        self.split, self.order, self.drop_last = split, order, drop_last
        self.seed = int(seed)
        self.scale = None if scale is None else (float(scale[0]), float(scale[1]))  # None: val (no random crop)
        self._batch_size = int(batch_size)
        self._resolution = int(resolution)
        self._epoch = 0
        self.shard = shard  # (rank, world): serve that rank's share (core.data.source.rank_positions)
        self._val_boxes = center_crop_boxes(heights, widths, VAL_CROP_RATIO) if split == "val" else None

    # progressive resizing and resume, as BetonLoader
    @property
    def resolution(self) -> int:
        return self._resolution

    def set_resolution(self, resolution: int) -> None:
        """Output side in pixels from the next epoch on (takes effect when the next iteration starts)."""
        self._resolution = int(resolution)

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will serve."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch = int(epoch)

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def __len__(self) -> int:
        n = len(rank_positions(len(self.images), self._batch_size, self.drop_last, *self.shard))
        return n // self._batch_size if self.drop_last else -(-n // self._batch_size)

    def __iter__(self) -> Iterator[Batch]:
        # like ffcv's Loader.__iter__: the epoch and resolution are taken (and the epoch advanced) at iter()
        epoch, resolution = self._epoch, self._resolution
        self._epoch += 1
        return self._batches(epoch, resolution)

    def epoch_plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, boxes (rows, 4)) this rank serves in epoch `epoch`, on the CPU, in serving order. Drawn for the
        whole set, then this rank's share taken: the crops of a row do not depend on the world size."""
        g = epoch_generator(self.seed, epoch)
        n = len(self.images)
        rows = torch.arange(n) if self.order == "sequential" else torch.randperm(n, generator=g)
        boxes = (self._val_boxes[rows] if self._val_boxes is not None else
                 draw_crop_boxes(self.heights[rows], self.widths[rows], self.scale, g))
        if self.shard[1] > 1:
            mine = torch.from_numpy(rank_positions(n, self._batch_size, self.drop_last, *self.shard))
            rows, boxes = rows[mine], boxes[mine]
        return rows, boxes

    def _batches(self, epoch: int, resolution: int) -> Iterator[Batch]:
        rows, boxes = self.epoch_plan(epoch)
        rows, boxes = rows.to(self.images.device), boxes.to(self.images.device)
        b = self._batch_size
        for k in range(len(self)):
            r = rows[k * b:(k + 1) * b]
            yield Batch(crop_resize(self.images, r, boxes[k * b:(k + 1) * b], resolution),
                        {lv: t[r] for lv, t in self._labels.items()},
                        {c: t[r] for c, t in self._extras.items()})


def build_resident_loader(path: str | Path, *, split: Literal["train", "val"], batch_size: int,
                          levels: Sequence[str], resolution: int,
                          order: Literal["random", "quasi_random", "sequential"], drop_last: bool | None,
                          extra_columns: Sequence[str] = (), seed: int,
                          device: str | torch.device, scale: tuple[float, float] | None = None,
                          indices: Sequence[int] | np.ndarray | None = None, max_bytes: int,
                          shard: tuple[int, int] = (0, 1)) -> ResidentLoader:
    """A ResidentLoader over the beton at `path`; the arguments mean what they mean for core.data.loader.build_loader.

    levels may name derived levels (core/format/derived.py), looked up once here. max_bytes: refuse
    (ResidentMemoryError) when the padded images (N x H x W x 3 bytes) would take more (the run's cap is
    data.resident_max_gb). shard=(rank, world): serve that rank's share (`distributed` of build_loader); every rank
    holds the whole set."""
    path = Path(path)
    levels, extra_columns, _ = check_request(split, order, levels, extra_columns, scale)
    if batch_size < 1 or resolution < 1:
        raise ValueError(f"batch_size and resolution must be >= 1, got {batch_size} and {resolution}")

    # labels first (metadata only): a missing column or derived level fails before any pixel is read
    columns = beton_columns(path)
    rows = None if indices is None else check_indices(path, indices).astype(np.int64)
    derived = {c: column_values(path, c) for c in [*levels, *extra_columns] if c not in columns}
    heights, widths = image_sizes(path, rows)
    need = padded_nbytes(heights, widths)
    what = f"{path}: {len(heights)} images padded to {heights.max()} x {widths.max()} px take {need / 1e9:.3g} GB"
    if need > max_bytes:
        raise ResidentMemoryError(f"{what}, over the cap of {max_bytes / 1e9:.3g} GB")
    device = torch.device(device)
    if device.type == "cuda":  # a clear refusal rather than an out-of-memory error half-way through start-up
        free = torch.cuda.mem_get_info(device)[0]
        if need > free:
            raise ResidentMemoryError(f"{what}, more than the {free / 1e9:.3g} GB free on {device}")

    # pixels, once
    data = read_images(path, [c for c in [*levels, *extra_columns] if c in columns], rows)
    pick = slice(None) if rows is None else rows

    def values(c: str) -> torch.Tensor:
        v = data.columns[c] if c in data.columns else derived[c][pick]
        return torch.as_tensor(np.ascontiguousarray(v), dtype=torch.int64, device=device)

    if drop_last is None:
        drop_last = split == "train"
    return ResidentLoader(torch.from_numpy(data.pixels).to(device), torch.from_numpy(data.heights),
                          torch.from_numpy(data.widths), {lv: values(lv) for lv in levels},
                          {c: values(c) for c in extra_columns}, split=split, batch_size=batch_size,
                          resolution=resolution, order=order, drop_last=drop_last, seed=seed, scale=scale,
                          shard=shard)
