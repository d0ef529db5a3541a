"""Damaged betons (copies of real converted ones, truncated or overwritten here) give one-line BetonErrors naming
the file (and the row where one is at fault), never a raw traceback or a hang.

The fault this guards against (issue 13 item 1): a beton missing a few bytes at its end loaded, ffcv's worker
thread died on the first batch reaching the lost allocation-table rows, and the training loop waited forever.
Every test here has a timeout, so a hang fails it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from ffcv.fields.basics import IntDecoder
from ffcv.loader import OrderOption
from ffcv.pipeline.operation import Operation
from ffcv.reader import Reader
from ffcv.types import FieldDescType, HeaderType

from core.format.beton_file import DamagedBetonError, beton_columns, column_values, open_beton
from core.data.beton_images import read_images
from core.data.ffcv_loader import GuardedLoader, LoaderWorkerError
from core.data.loader import build_loader
from core.data.resident import build_resident_loader
from data_tools import convert_synthetic
from launch.cli import main as cli

pytestmark = pytest.mark.timeout(180)
BAD_ROW = 37


@pytest.fixture(scope="module")
def jpg_dataset(tmp_path_factory) -> Path:
    """The tiny preset stored as JPEG, through the real converter."""
    out = tmp_path_factory.mktemp("jpg") / "tiny"
    convert_synthetic.convert(out, convert_synthetic.load_config("tiny", None, ["workers=1", "write.write_mode=jpg"]))
    return out


def _image_record(reader: Reader, row: int, field: str) -> int:
    """Byte offset of `field` (mode, width, height, data_ptr) of row `row`'s image metadata in the file."""
    meta_start = HeaderType.itemsize + reader.num_fields * FieldDescType.itemsize
    record = reader.metadata.dtype["f0"]
    return meta_start + row * reader.metadata.dtype.itemsize + reader.metadata.dtype.fields["f0"][1] \
        + record.fields[field][1]


def _put(data: bytearray, offset: int, value, dtype: str) -> None:
    raw = np.asarray(value, dtype=dtype).tobytes()
    data[offset:offset + len(raw)] = raw


def _damage(kind: str, data: bytearray, reader: Reader) -> bytes:
    table_at = int(reader.header["alloc_table_ptr"])
    if kind == "empty":
        return b""
    if kind == "shorter_than_header":
        return bytes(data[:10])
    if kind == "missing_5_bytes":  # the file: the end of the allocation table lost
        return bytes(data[:-5])
    if kind == "missing_last_table_row":
        return bytes(data[:-24])
    if kind == "cut_in_data_pages":
        return bytes(data[:table_at - 1000])
    if kind == "header_version":
        _put(data, 0, 7, "<u2")
    elif kind == "header_num_samples":
        _put(data, 8, 10**6, "<u8")
    elif kind == "header_table_pointer":
        _put(data, 16, len(data) + 10**6, "<u8")
    elif kind == "descriptor_type":
        data[HeaderType.itemsize + FieldDescType.itemsize] = 200  # field 1's type_id
    elif kind == "descriptor_name":
        data[HeaderType.itemsize + 1] = 0xFF  # field 0's name, no longer ASCII
    elif kind == "metadata_pointer":
        _put(data, _image_record(reader, BAD_ROW, "data_ptr"), int(reader.metadata["f0"]["data_ptr"][BAD_ROW]) + 3,
             "<u8")
    elif kind == "metadata_size":
        _put(data, _image_record(reader, BAD_ROW, "width"), 9, "<u2")
    elif kind == "metadata_mode":
        data[_image_record(reader, BAD_ROW, "mode")] = 9
    elif kind == "table_pointer":
        _put(data, table_at + 3 * 24 + 8, len(data) * 4, "<u8")  # allocation row 3's ptr, beyond the file
    elif kind == "table_sample":
        _put(data, table_at + 3 * 24, 10**9, "<u8")  # allocation row 3's sample_id
    else:
        raise AssertionError(kind)
    return bytes(data)


def damaged_copy(src: Path, dst: Path, kind: str) -> Path:
    data = bytearray(src.read_bytes())
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(_damage(kind, data, Reader(str(src))))
    return dst


def one_line_naming(error: BaseException, path: Path, *words: str) -> None:
    text = str(error)
    assert "\n" not in text and str(path) in text, text
    for w in words:
        assert w in text, text


STRUCTURE = ["empty", "shorter_than_header", "missing_5_bytes", "missing_last_table_row", "cut_in_data_pages",
             "header_version", "header_num_samples", "header_table_pointer", "descriptor_type", "descriptor_name",
             "metadata_pointer", "metadata_size", "metadata_mode", "table_pointer", "table_sample"]
NAMES_ROW = {"metadata_pointer", "metadata_size", "metadata_mode"}


@pytest.mark.parametrize("kind", STRUCTURE)
def test_structural_damage_is_one_line_for_every_reader(tiny_dataset, tmp_path, kind):
    path = damaged_copy(tiny_dataset / "train.beton", tmp_path / "train.beton", kind)
    words = [f"row {BAD_ROW}"] if kind in NAMES_ROW else []
    readers: list[Callable] = [
        open_beton, beton_columns, lambda p: column_values(p, "class"), read_images,
        lambda p: build_loader(p, split="train", batch_size=16, num_workers=1, levels=["class"], resolution=16,
                               order="random", os_cache=True, distributed=False, drop_last=None, seed=0,
                               device="cpu", scale=(0.35, 1.0)),
        lambda p: build_resident_loader(p, split="val", batch_size=16, levels=["class"], resolution=16,
                                        order="sequential", drop_last=None, seed=0, device="cpu", max_bytes=10**9)]
    for read in readers:
        with pytest.raises(DamagedBetonError) as caught:
            read(path)
        one_line_naming(caught.value, path, *words)


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_jpeg_that_does_not_decode_ends_the_epoch_naming_its_row(jpg_dataset, tmp_path, split):
    """The structure is intact, so the loader starts; the worker's decode fails on row BAD_ROW (its JPEG's first
    bytes zeroed). ffcv would serve what the failed decode left; here the epoch ends with the row named."""
    src = jpg_dataset / "train.beton"
    path = tmp_path / "train.beton"
    data = bytearray(src.read_bytes())
    ptr = int(Reader(str(src)).metadata["f0"]["data_ptr"][BAD_ROW])
    data[ptr:ptr + 16] = bytes(16)
    path.write_bytes(bytes(data))
    loader = build_loader(path, split=split, batch_size=16, num_workers=2, levels=["class"], resolution=8,
                          order="sequential", os_cache=True, distributed=False, drop_last=None, seed=0,
                          device="cpu", scale=(0.35, 1.0))
    served = []
    with pytest.raises(LoaderWorkerError) as caught:
        for batch in loader:
            served.append(batch.images.shape[0])
    one_line_naming(caught.value, path, f"row {BAD_ROW}", "JPEG")
    assert served == [16, 16]  # rows 0-31 came through; the batch of rows 32-47 holds the bad one
    with pytest.raises(DamagedBetonError, match=f"row {BAD_ROW}'s JPEG"):
        read_images(path)


class _FailOn(Operation):
    """Raises inside ffcv's compiled pipeline (the worker thread) when a batch holds `value`."""

    def __init__(self, value: int) -> None:
        super().__init__()
        self.value = value

    def generate_code(self) -> Callable:
        value = self.value

        def fail(values, _dst):
            for v in values:
                if v == value:
                    raise ValueError("injected failure")
            return values

        return fail

    def declare_state_and_memory(self, previous_state):
        return previous_state, None


def test_any_worker_error_ends_the_epoch_with_the_beton_and_rows(tiny_dataset):
    path = tiny_dataset / "train.beton"
    pipelines = {c: None for c in beton_columns(path)}
    pipelines["index"] = [IntDecoder(), _FailOn(40)]
    loader = GuardedLoader(str(path), batch_size=16, num_workers=1, order=OrderOption.SEQUENTIAL,
                           pipelines=pipelines, batches_ahead=1)
    served = []
    with pytest.raises(LoaderWorkerError) as caught:
        for (index,) in loader:
            served.append(np.asarray(index).ravel().tolist())
    one_line_naming(caught.value, path, "rows 32, 33", "ValueError: injected failure")
    assert served == [list(range(16)), list(range(16, 32))]
    assert isinstance(caught.value.__cause__, ValueError)
    # the loader is usable again for the next epoch (and fails at the same batch)
    with pytest.raises(LoaderWorkerError):
        list(loader)


def test_the_cli_prints_one_line_and_exits_2(tiny_dataset, tmp_path, capsys):
    data = tmp_path / "tiny"
    shutil.copytree(tiny_dataset, data)
    damaged_copy(tiny_dataset / "train.beton", data / "train.beton", "missing_5_bytes")
    code = cli(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--set", "model.name=bmlp",
                "--set", "data.resolution=16", "--set", "train.epochs=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(data / "train.beton") in err[0], err


def test_a_worker_error_mid_run_ends_grainsweep_train_in_one_line(jpg_dataset, tmp_path, capsys):
    """The whole path: the run starts, the worker fails in the first epoch, the CLI prints the row and exits 2."""
    data = tmp_path / "tiny"
    shutil.copytree(jpg_dataset, data)
    beton = data / "train.beton"
    raw = bytearray(beton.read_bytes())
    ptr = int(Reader(str(beton)).metadata["f0"]["data_ptr"][BAD_ROW])
    raw[ptr:ptr + 16] = bytes(16)
    beton.write_bytes(bytes(raw))
    code = cli(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--set", "model.name=bmlp",
                "--set", "model.kwargs={depth: 1, width: 16}", "--set", "data.resolution=16",
                "--set", "data.batch_size=16", "--set", "train.epochs=1"])
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2 and len(err) == 1, err
    one_line_naming(err[0].split("error: ", 1)[1], beton, f"row {BAD_ROW}")
