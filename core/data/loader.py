"""FFCV loading of a grainsweep beton: one image column, one label column per hierarchy level, optional extras.

`build_loader` returns a `BetonLoader` (a core.data.source.BatchSource); iterating it yields
`Batch(images, labels, extras)`:
  images  uint8 (B, H, W, 3) NHWC on `device` (H = W = the current resolution)
  labels  {level: int64 (B,)} for every requested level, in the order asked
  extras  {column: int64 (B,)} for every requested extra column ('index', 'hard', ...), in the order asked
A requested level that is not a beton column but a derived level of the dataset (core/format/derived.py: a sidecar in
the beton's folder) is served from its `index` column through a lookup table on `device`.
`build_loader(indices=rows)` serves a subset of the rows (no copy; core.format.beton_file.rows_with_labels finds
them). The beton is opened through core.format.beton_file.open_beton (a damaged file fails here, in one line), and
ffcv's Loader is core.data.ffcv_loader.GuardedLoader (an error in a decode thread ends the epoch with a
one-line LoaderWorkerError naming the beton and row, instead of a hang).

ffcv facts this module relies on (ffcv 1.0.2 source, site-packages/ffcv):
- A field missing from `pipelines` gets ffcv's *default* pipeline and is decoded and returned anyway
  (loader.py, "Adding the default pipelines"); so every column we do not want is disabled with `None`.
- Outputs come back as a tuple in the beton's column order, not in the order of `pipelines`.
- Order of epoch e is `traversal_order.sample_order(e)`; `Loader.__iter__` uses `next_epoch` and then
  increments it. RANDOM is `np.random.default_rng(seed + epoch).permutation(indices)`; QUASI_RANDOM seeds numba with
  `seed * 912300 + epoch`. So resuming at epoch e = setting `next_epoch = e` before iterating (`set_epoch`).
  Because of `seed + epoch`, seed s at epoch e+1 would replay seed s+1 at epoch e: runs of a seed sweep would
  share their orders shifted by one epoch. We hand ffcv `seed * SEED_STRIDE` for RANDOM so orders of different
  seeds never coincide for epochs < SEED_STRIDE.
- ffcv's distributed=True (a DistributedSampler, seeded with seed + epoch, padding every rank's share with
  repeats to equal length) is not used: more processes (`distributed`) serve shares of the one-process order
  instead (core.data.ffcv_loader.RankShare), so no row is served twice and step i sees the same rows at any world
  size. The crops still differ between world sizes: a crop's seed includes the first and last row of its batch,
  and a rank's batch is a part of the one-process batch.
- ffcv's RandomResizedCrop and RandomHorizontalFlip draw from numba's per-thread np.random, which ffcv never
  seeds; we use core.data.seeded_crop.SeededRandomResizedCrop (crops a pure function of seed and epoch) and flip
  on the device. Both our decoders (core.data.seeded_crop) decode JPEGs at the smallest DCT scale k/8 that keeps the
  crop at least the output size: cheaper decodes for crops resized down.
- Batches are views into ring buffers of `batches_ahead + 2` slots that ffcv reuses: a batch kept across more
  than about `batches_ahead` further `next()` calls is overwritten. `.clone()` what you keep.
- `Squeeze()` without a dim squeezes the batch dim too when a (last) batch has one sample: we squeeze dim 1.
- Progressive resizing works without recompiling ffcv's pipeline: buffers are re-declared from the decoder's
  `output_size` at each epoch start (Graph.allocate_memory in EpochIterator), as ffcv-imagenet does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from ffcv.fields.basics import IntDecoder
from ffcv.fields.rgb_image import ResizedCropRGBImageDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.transforms import RandomHorizontalFlip, Squeeze, ToDevice, ToTensor

from core.format.beton_file import (IMAGE_COLUMN, INDEX_COLUMN, BetonError, beton_columns, check_indices,
                                  derived_tables)
from core.data.ffcv_loader import GuardedLoader
from core.data.seeded_crop import ScaledCenterCrop, SeededRandomResizedCrop
from core.data.source import Batch

VAL_CROP_RATIO = 224 / 256  # centre crop side / short side, the ImageNet convention
SEED_STRIDE = 2**16  # epochs per seed before RANDOM orders of neighbouring seeds could coincide
ORDERS = {"random": OrderOption.RANDOM, "quasi_random": OrderOption.QUASI_RANDOM,
          "sequential": OrderOption.SEQUENTIAL}


class BetonLoader:
    """An ffcv Loader over one beton with per-epoch resolution and a resumable epoch counter.

    Iterating yields `Batch`es for the epoch `self.epoch` and then advances it by one.
    """

    def __init__(self, loader: Loader, decoder: ResizedCropRGBImageDecoder, columns: list[str],
                 levels: list[str], extra_columns: list[str],
                 derived: dict[str, torch.Tensor] | None = None) -> None:
        self.ffcv = loader
        self.derived = derived or {}  # derived level -> lookup table (index value -> class) on the device
        self.decoder = decoder
        self._columns = columns  # the enabled columns, in the beton's order (= ffcv's output order)
        self.levels = levels
        self.extra_columns = extra_columns

    # progressive resizing and resume
    @property
    def resolution(self) -> int:
        return int(self.decoder.output_size[0])

    def set_resolution(self, resolution: int) -> None:
        """Output side in pixels from the next epoch on (takes effect when the next iteration starts)."""
        self.decoder.output_size = (int(resolution), int(resolution))

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will serve."""
        return int(self.ffcv.next_epoch)

    def set_epoch(self, epoch: int) -> None:
        """Serve epoch `epoch` next: the order is a function of (seed, epoch) only, so this resumes exactly."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.ffcv.next_epoch = int(epoch)

    @property
    def batch_size(self) -> int:
        return self.ffcv.batch_size

    def __len__(self) -> int:
        return len(self.ffcv)

    def __iter__(self) -> Iterator[Batch]:
        if len(self.ffcv) == 0:  # a rank whose share of a small set is empty (ffcv cannot iterate no rows)
            self.ffcv.next_epoch += 1
            return
        for out in self.ffcv:
            by_name = dict(zip(self._columns, out))
            labels = {lv: self.derived[lv][by_name[INDEX_COLUMN]] if lv in self.derived else by_name[lv]
                      for lv in self.levels}
            yield Batch(by_name[IMAGE_COLUMN], labels,
                        {c: by_name[c] for c in self.extra_columns})


def build_loader(path: str | Path, *, split: Literal["train", "val"], batch_size: int, num_workers: int,
                 levels: Sequence[str], resolution: int, order: Literal["random", "quasi_random", "sequential"],
                 os_cache: bool, distributed: bool | tuple[int, int], drop_last: bool | None,
                 extra_columns: Sequence[str] = (),
                 seed: int, device: str | torch.device, flip_on_cpu: bool = False,
                 scale: tuple[float, float] | None = None,
                 batches_ahead: int = 3, indices: Sequence[int] | np.ndarray | None = None) -> BetonLoader:
    """A loader over the beton at `path`.

    split: 'train' = RandomResizedCrop over `scale` (area fraction; required for train, there is no default here:
    the run's is core.train.run_config.DataConfig.scale), seeded by (seed, epoch) through
    core.data.seeded_crop, (+ ffcv's unseeded RandomHorizontalFlip when `flip_on_cpu`; by default the flip is left
    to the device stage, which draws from torch's seeded generator); 'val' = centre crop 224/256.
    drop_last: None means True for train (fixed shapes for torch.compile) and False for val (every sample).
    extra_columns: further IntFields to return in `Batch.extras`, e.g. ['index', 'hard'].
    levels may name derived levels of the dataset in the beton's folder (see the module docstring); the beton's
    file stem ('train', 'val') picks the sidecar's split.
    seed: orders are a function of (seed, epoch); see the module docstring.
    distributed: serve this process's share only (core.data.source.rank_positions, the module docstring):
    True = rank and world size of torch.distributed's process group, (rank, world) = those; False = every row.
    batch_size is then per process (a training step's global batch is batch_size x world).
    indices: serve only these rows of the beton (ffcv's `indices`, no copy), e.g. the images of some classes
    (`rows_with_labels`); 'sequential' keeps their order, 'random' permutes them per epoch. None = every row.
    """
    path = Path(path)
    levels, extra_columns, asked = check_request(split, order, levels, extra_columns, scale)
    shard = _shard(distributed)
    if order == "quasi_random" and shard is not None:
        raise ValueError("ffcv 1.0.2 has no quasi_random order over more than one process; use order 'random'")

    # check the columns against the header before ffcv does anything
    columns = beton_columns(path)
    derived = derived_tables(path, [lv for lv in levels if lv not in columns], columns)
    missing = [c for c in asked if c not in columns and c not in derived]
    if missing:
        raise BetonError(f"{path}: no column(s) {missing}; this beton has columns {columns}")

    rows = None if indices is None else check_indices(path, indices)

    # pipelines: every column gets its own operation objects; unwanted columns are disabled with None
    device = torch.device(device)
    res = (int(resolution), int(resolution))
    if split == "train":
        decoder: ResizedCropRGBImageDecoder = SeededRandomResizedCrop(res, seed=seed, scale=tuple(scale))
        image_ops: list = [decoder, RandomHorizontalFlip()] if flip_on_cpu else [decoder]
    else:
        decoder = ScaledCenterCrop(res, ratio=VAL_CROP_RATIO)
        image_ops = [decoder]
    pipelines: dict[str, Any] = {c: None for c in columns}
    # ToDevice only to leave the CPU: on the CPU it is one more copy of every batch in the main thread, beside the
    # decode threads on the same cores (-20% images/s at 224 px on 2 cores, benchmarks/RESULTS.md); the batch is
    # then a view into ffcv's ring buffer either way (see above)
    to_device = [] if device.type == "cpu" else [ToDevice(device, non_blocking=True)]
    pipelines[IMAGE_COLUMN] = [*image_ops, ToTensor(), *to_device]
    for c in [*levels, *extra_columns, *([INDEX_COLUMN] if derived else [])]:
        if c in derived:
            continue
        pipelines[c] = [IntDecoder(), ToTensor(), Squeeze(1), *to_device]

    if drop_last is None:
        drop_last = split == "train"
    ffcv_seed = int(seed) * SEED_STRIDE if order == "random" else int(seed)
    loader = GuardedLoader(str(path), batch_size=batch_size, num_workers=num_workers, os_cache=os_cache,
                           order=ORDERS[order], seed=ffcv_seed, shard=shard, indices=rows,
                           pipelines=pipelines, drop_last=drop_last, batches_ahead=batches_ahead)
    enabled = [c for c in columns if c in asked or (derived and c == INDEX_COLUMN)]
    tables = {lv: torch.as_tensor(t, device=device) for lv, t in derived.items()}
    return BetonLoader(loader, decoder, enabled, levels, extra_columns, tables)


def _shard(distributed: bool | tuple[int, int]) -> tuple[int, int] | None:
    if distributed is True:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("distributed=True needs torch.distributed's process group (or pass (rank, world))")
        distributed = (dist.get_rank(), dist.get_world_size())
    if not distributed or distributed[1] <= 1:
        return None
    rank, world = int(distributed[0]), int(distributed[1])
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside world size {world}")
    return rank, world


def check_request(split: str, order: str, levels: Sequence[str], extra_columns: Sequence[str],
                  scale: tuple[float, float] | None) -> tuple[list[str], list[str], list[str]]:
    """The argument checks every loader of a beton makes (this one, core/data/resident.py's): returns the levels, the
    extra columns and every column asked for (the image first)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if split == "train" and (scale is None or len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"a train loader needs scale=(min, max) area fractions, 0 < min <= max <= 1; got {scale}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {sorted(ORDERS)}, got {order!r}")
    if not levels:
        raise ValueError("ask for at least one label level")
    levels, extra_columns = list(levels), list(extra_columns)
    asked = [IMAGE_COLUMN, *levels, *extra_columns]
    duplicated = sorted({c for c in asked if asked.count(c) > 1})
    if duplicated:
        raise ValueError(f"columns asked for more than once: {duplicated}")
    return levels, extra_columns, asked
