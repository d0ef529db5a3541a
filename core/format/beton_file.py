"""A beton as a file: opened only after its structure is checked, and its integer columns read without a loader.

`open_beton` returns ffcv's Reader of a beton whose header, field descriptors, metadata and allocation table
are consistent with each other and with the file's size, and whose image pointers lead to allocations of the
right size; anything else is a `DamagedBetonError` (a `BetonError`) naming the file, and the row where one is at
fault, in one line. Every reader in core/data opens betons through it.

ffcv facts this module relies on (ffcv 1.0.2 source, site-packages/ffcv: reader.py, types.py, writer.py):
- Layout: a header (HeaderType: version, num_fields, page_size, num_samples, alloc_table_ptr), num_fields field
  descriptors (FieldDescType), num_samples metadata rows (one record of every field's metadata), data pages,
  and at `alloc_table_ptr` up to the end of the file the allocation table (ALLOC_TABLE_TYPE rows: sample_id, ptr,
  size), one row per variable-size value (an image).
- `Reader` checks only the version (an AssertionError) and reads with np.fromfile, which returns *fewer* rows
  past the end of the file without a word; ffcv's memory managers then binary-search image pointers in that
  table without bounds checks. A beton missing its last bytes therefore loads, and its loader's worker thread
  dies on the first batch that reaches the lost rows (core/data/ffcv_loader.py). Hence the checks here.
- `Reader.metadata` fields are named f0, f1, ... in the order of `Reader.field_names`; an IntField's is an int64,
  an RGBImageField's a record (mode u1, width u2, height u2, data_ptr u8) (fields/rgb_image.py); mode 1 ('raw')
  stores height x width x 3 bytes, mode 0 a JPEG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ffcv.fields.rgb_image import IMAGE_MODES, RGBImageField
from ffcv.reader import Reader
from ffcv.types import ALLOC_TABLE_TYPE, CURRENT_VERSION, TYPE_ID_HANDLER, FieldDescType, HeaderType

from core.format import derived as derived_lib

IMAGE_COLUMN = "image"
INDEX_COLUMN = "index"


class BetonError(ValueError):
    """A beton that cannot serve the request; the message names the file and the column or row at fault."""


class DamagedBetonError(BetonError):
    """A beton whose bytes are inconsistent (truncated, empty or overwritten); the message names the file."""


def open_beton(path: str | Path) -> Reader:
    """ffcv's Reader of the beton at `path`, after the checks in the module docstring."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"beton not found: {path}")
    size = path.stat().st_size

    def damaged(what: str) -> DamagedBetonError:
        return DamagedBetonError(f"{path}: {what}; the file is damaged (truncated or overwritten) or not a beton: "
                                 "convert the data again")

    # header and field descriptors: checked before ffcv parses them (its errors say nothing about the file)
    if size < HeaderType.itemsize:
        raise damaged(f"{size} bytes, shorter than ffcv's {HeaderType.itemsize}-byte header")
    header = np.fromfile(path, dtype=HeaderType, count=1)[0]
    if header["version"] != CURRENT_VERSION:
        raise damaged(f"the header gives format version {header['version']}, not ffcv's {CURRENT_VERSION}")
    n, page, table_at = int(header["num_samples"]), int(header["page_size"]), int(header["alloc_table_ptr"])
    fields_end = HeaderType.itemsize + int(header["num_fields"]) * FieldDescType.itemsize
    if header["num_fields"] == 0 or page <= 0 or page & (page - 1) or fields_end > size:
        raise damaged(f"the header is inconsistent ({header['num_fields']} fields, page size {page}, {size} bytes)")
    descriptors = np.fromfile(path, dtype=FieldDescType, count=int(header["num_fields"]),
                              offset=HeaderType.itemsize)
    unknown = sorted({int(t) for t in descriptors["type_id"] if TYPE_ID_HANDLER.get(int(t)) is None})
    if unknown:
        raise damaged(f"the field descriptors name unknown field types {unknown}")
    try:
        reader = Reader(str(path))
    except (ValueError, UnicodeDecodeError, AssertionError) as e:
        raise damaged(f"ffcv cannot read the field descriptors ({type(e).__name__}: {e})") from None

    # metadata and allocation table: where the header puts them, whole
    meta_end = fields_end + n * reader.metadata_type.itemsize
    if len(reader.metadata) != n or not meta_end <= table_at <= size:
        raise damaged(f"the header puts {n} metadata rows up to byte {meta_end} and the allocation table at byte "
                      f"{table_at}, in a file of {size} bytes")
    if (size - table_at) % ALLOC_TABLE_TYPE.itemsize:
        raise damaged(f"the allocation table ({size - table_at} bytes from byte {table_at}) is not whole rows of "
                      f"{ALLOC_TABLE_TYPE.itemsize} bytes")
    table = reader.alloc_table
    bad = np.flatnonzero((table["sample_id"] >= n) | (table["ptr"] < meta_end)
                         | (table["ptr"] + table["size"] > table_at))
    if len(bad):
        e = table[bad[0]]
        raise damaged(f"allocation table row {bad[0]} (row {e['sample_id']}, bytes {e['ptr']}+{e['size']}) lies "
                      f"outside the data pages (bytes {meta_end} to {table_at}) or names no row of {n}")

    # every image: a known mode, a size, and a pointer to an allocation of that size
    for i, (name, handler) in enumerate(reader.handlers.items()):
        if isinstance(handler, RGBImageField) and n:
            _check_images(path, reader, reader.metadata[f"f{i}"], name, damaged)
    return reader


def _check_images(path: Path, reader: Reader, meta: np.ndarray, column: str, damaged) -> None:
    raw = meta["mode"] == IMAGE_MODES["raw"]
    bad = ~np.isin(meta["mode"], list(IMAGE_MODES.values())) | (meta["height"] == 0) | (meta["width"] == 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise damaged(f"row {row}'s {column!r} metadata is invalid (mode {meta['mode'][row]}, "
                      f"{meta['height'][row]} x {meta['width'][row]} px)")
    sizes = allocation_sizes(path, reader, meta["data_ptr"])
    expected = meta["height"].astype(np.int64) * meta["width"].astype(np.int64) * 3
    wrong = np.flatnonzero(raw & (sizes != expected))
    if len(wrong):
        row = int(wrong[0])
        raise damaged(f"row {row}'s raw {column!r} has {sizes[row]} bytes allocated, not "
                      f"{meta['height'][row]} x {meta['width'][row]} x 3")


def allocation_sizes(path: Path, reader: Reader, pointers: np.ndarray,
                     rows: np.ndarray | None = None) -> np.ndarray:
    """Byte count of the allocation starting at each pointer (the allocation table, as ffcv's memory managers use
    it; also benchmarks/suite_data.stored_jpegs); DamagedBetonError naming the first row (`rows[k]` for
    pointers[k]; None: k itself) whose pointer has none."""
    table = reader.alloc_table
    order = np.argsort(table["ptr"])
    starts, sizes = table["ptr"][order], table["size"][order]
    if len(starts) == 0:
        raise DamagedBetonError(f"{path}: the allocation table is empty; the file is damaged")
    at = np.minimum(np.searchsorted(starts, pointers), len(starts) - 1)
    missing = np.flatnonzero(starts[at] != pointers)
    if len(missing):
        k = int(missing[0])
        row = k if rows is None else int(rows[k])
        raise DamagedBetonError(f"{path}: row {row}'s image pointer {pointers[k]} is not in the allocation table; "
                                "the file is damaged (truncated or overwritten): convert the data again")
    return sizes[at].astype(np.int64)


def beton_columns(path: str | Path) -> list[str]:
    """The column names of a beton, in its order."""
    return list(open_beton(path).field_names)


def check_indices(path: Path, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """`indices` as ffcv's own row type (uint64, as its default arange), after checking them against the beton
    (non-empty, 1-d, integer, in range, no row twice); both loaders check rows through here."""
    rows = np.asarray(indices)
    if rows.ndim != 1 or rows.size == 0 or not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"indices must be a non-empty 1-d array of row numbers, got {rows.dtype} {rows.shape}")
    n = open_beton(path).num_samples
    if rows.min() < 0 or rows.max() >= n:
        raise BetonError(f"{path}: indices must lie in [0, {n}), got [{rows.min()}, {rows.max()}]")
    if len(np.unique(rows)) != len(rows):
        raise ValueError("indices repeat a row; an epoch would serve it more than once")
    return rows.astype(np.uint64)


def column_values(path: str | Path, column: str) -> np.ndarray:
    """int64 value of an integer column (a level or e.g. 'index') for every row of the beton, in row order.

    Read from the beton's metadata table, where ffcv keeps IntFields: no image is read. A derived level of the
    dataset (core/format/derived.py) is looked up through the `index` column (-1 = no class)."""
    path = Path(path)
    reader = open_beton(path)
    columns = list(reader.field_names)
    if column in columns:
        return reader.metadata[f"f{columns.index(column)}"].astype(np.int64)
    derived = derived_tables(path, [column], columns)
    if column not in derived:
        raise BetonError(f"{path}: no column {column!r} (nor a derived level of that name); this beton has "
                         f"columns {columns}")
    index = reader.metadata[f"f{columns.index(INDEX_COLUMN)}"].astype(np.int64)
    return np.asarray(derived[column], dtype=np.int64)[index]


def rows_with_labels(path: str | Path, column: str, classes: Sequence[int] | np.ndarray) -> np.ndarray:
    """The rows (ascending) of the beton whose value in `column` is one of `classes`: `indices` for a loader."""
    return np.flatnonzero(np.isin(column_values(path, column), np.asarray(classes, dtype=np.int64)))


def derived_tables(path: Path, names: list[str], columns: list[str]) -> dict[str, np.ndarray]:
    """Lookup tables (index value -> class) of the names that are derived levels of path's dataset."""
    names = [n for n in names if derived_lib.sidecar_path(path.parent, n).is_file()
             and derived_lib.is_registered(path.parent, n)]
    if not names:
        return {}
    if INDEX_COLUMN not in columns:
        raise BetonError(f"{path}: derived level(s) {names} need the {INDEX_COLUMN!r} column; this beton has "
                         f"columns {columns}")
    reader = open_beton(path)
    index = reader.metadata[f"f{columns.index(INDEX_COLUMN)}"].astype(np.int64)
    out = {}
    for n in names:
        out[n] = derived_lib.labels(path.parent, n, path.stem)
        derived_lib.check_rows(out[n], index, n, path)
    return out
