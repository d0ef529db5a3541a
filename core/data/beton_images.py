"""Every image of a beton as pixels, read straight from the file: no ffcv Loader, no pipeline, no threads.

`read_images(path, columns=..., rows=...)` returns `BetonImages`: the images in one uint8 (N, H, W, 3) array
padded to the largest stored height and width (image n in `pixels[n, :heights[n], :widths[n]]`, zeros beside
it), their stored sizes, and int64 values of the integer columns asked for. `image_sizes` gives the stored
sizes from the metadata alone, to size the padded array before reading anything. This is the input of
core/data/resident.py, which keeps a small data set on the training device.

ffcv facts this module relies on (ffcv 1.0.2 source, site-packages/ffcv):
- `Reader(path).metadata` is a structured array with one field per column, named f0, f1, ... in the order of
  `Reader.field_names` (not by column name); an IntField's is an int64 scalar, an RGBImageField's a record
  (mode u1, width u2, height u2, data_ptr u8) (fields/rgb_image.py, RGBImageField.metadata_type).
- `data_ptr` is a byte offset into the file; the sample's byte count is not in the metadata but in the
  allocation table (`Reader.alloc_table`: sample_id, ptr, size, unsorted), which ffcv's memory managers sort by
  ptr and binary-search (memory_managers/base.py, os_cache.py `read`). The same here.
- mode 1 ('raw') is height x width x 3 RGB bytes, row-major (RGBImageField.encode copies the array's bytes);
  mode 0 ('jpg') is a JPEG made from RGB through BGR (encode_jpeg), which ffcv's decoders decode with
  `libffcv.imdecode` at scale 1/1 without crop (TurboJPEG, RGB out; SimpleRGBImageDecoder). The same call here,
  so pixels equal those ffcv's loader returns (tests/test_resident.py checks raw and JPEG betons).
- `Reader` does not look before it reads (np.fromfile): betons are opened through core.format.beton_file.open_beton,
  which checks the file's structure first and names the file (and row) at fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ffcv.fields.rgb_image import IMAGE_MODES
from ffcv.libffcv import imdecode
from ffcv.reader import Reader
from tqdm import tqdm

from core.format.beton_file import IMAGE_COLUMN, BetonError, DamagedBetonError, allocation_sizes, open_beton

PROGRESS_MIN_IMAGES = 20_000  # show a progress bar from this many images on (CIFAR's 50,000 take seconds)


@dataclass(frozen=True)
class BetonImages:
    pixels: np.ndarray  # uint8 (N, H, W, 3): image n in pixels[n, :heights[n], :widths[n]], zeros elsewhere
    heights: np.ndarray  # int64 (N,) stored height of each image
    widths: np.ndarray  # int64 (N,) stored width of each image
    columns: dict[str, np.ndarray]  # column -> int64 (N,), in the order asked

    def __len__(self) -> int:
        return len(self.pixels)


def _field(path: Path, reader: Reader, column: str) -> np.ndarray:
    """The metadata of one column, every row; BetonError naming the file when the beton has no such column."""
    names = list(reader.field_names)
    if column not in names:
        raise BetonError(f"{path}: no column {column!r}; this beton has columns {names}")
    return reader.metadata[f"f{names.index(column)}"]


def _rows(path: Path, reader: Reader, rows: Sequence[int] | np.ndarray | None) -> np.ndarray:
    n = int(reader.num_samples)
    if rows is None:
        return np.arange(n, dtype=np.int64)
    out = np.asarray(rows)
    if out.ndim != 1 or out.size == 0 or not np.issubdtype(out.dtype, np.integer):
        raise ValueError(f"rows must be a non-empty 1-d array of row numbers, got {out.dtype} {out.shape}")
    if out.min() < 0 or out.max() >= n:
        raise BetonError(f"{path}: rows must lie in [0, {n}), got [{out.min()}, {out.max()}]")
    return out.astype(np.int64)


def image_sizes(path: str | Path, rows: Sequence[int] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(heights, widths), int64 (N,), of the stored images of `rows` (None = every row), from the metadata."""
    path = Path(path)
    reader = open_beton(path)
    meta = _field(path, reader, IMAGE_COLUMN)[_rows(path, reader, rows)]
    return meta["height"].astype(np.int64), meta["width"].astype(np.int64)


def padded_nbytes(heights: np.ndarray, widths: np.ndarray) -> int:
    """Bytes of the padded uint8 array `read_images` returns for images of these sizes."""
    return int(len(heights)) * int(heights.max()) * int(widths.max()) * 3


def read_images(path: str | Path, columns: Sequence[str] = (), rows: Sequence[int] | np.ndarray | None = None,
                progress: bool | None = None) -> BetonImages:
    """The images of `rows` (None = every row, in row order) at their stored sizes, and the integer `columns`.

    progress: a tqdm bar; None = from PROGRESS_MIN_IMAGES images on."""
    path = Path(path)
    reader = open_beton(path)
    index = _rows(path, reader, rows)
    values = {}
    for c in columns:  # every column checked before any pixel is read
        field = _field(path, reader, c)
        if field.dtype.names is not None or not np.issubdtype(field.dtype, np.integer):
            raise BetonError(f"{path}: column {c!r} is not an integer column ({field.dtype})")
        values[c] = field[index].astype(np.int64)
    meta = _field(path, reader, IMAGE_COLUMN)[index]
    heights, widths = meta["height"].astype(np.int64), meta["width"].astype(np.int64)
    sizes = allocation_sizes(path, reader, meta["data_ptr"], index)

    pixels = np.zeros((len(index), int(heights.max()), int(widths.max()), 3), dtype=np.uint8)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    jpg = IMAGE_MODES["jpg"]
    scratch = np.empty(int((heights * widths).max()) * 3, dtype=np.uint8)  # imdecode writes a contiguous image
    show = len(index) >= PROGRESS_MIN_IMAGES if progress is None else progress
    for n in tqdm(range(len(index)), desc=f"reading {path.name}", unit="img", disable=not show, mininterval=1.0):
        h, w = int(heights[n]), int(widths[n])
        ptr = int(meta["data_ptr"][n])
        encoded = data[ptr:ptr + int(sizes[n])]
        if meta["mode"][n] == jpg:
            # the arguments of SimpleRGBImageDecoder: whole image, scale 1/1, no crop, no flip
            out = scratch[:h * w * 3]
            if imdecode(np.ascontiguousarray(encoded), out, h, w, h, w, 0, 0, 1, 1, False, False) != 0:
                raise DamagedBetonError(f"{path}: row {index[n]}'s JPEG does not decode")  # TurboJPEG's -1
            pixels[n, :h, :w] = out.reshape(h, w, 3)
        else:
            if encoded.size != h * w * 3:
                raise DamagedBetonError(f"{path}: row {index[n]} is stored raw with {encoded.size} bytes, not "
                                 f"{h} x {w} x 3")
            pixels[n, :h, :w] = encoded.reshape(h, w, 3)
    return BetonImages(pixels, heights, widths, values)
