"""Writes one split to an FFCV .beton: `image`, one IntField per hierarchy level, `index`, extra columns.

A split is any indexable whose item i is (HxWx3 uint8 image, leaf index, {extra column: int}). The `index`
column is the sample's position in its source: `split.source_index(i)` where a split defines it (a source
whose rejected rows were left out), else i; so a row can always be traced back (and re-rendered).
"""

from __future__ import annotations

import ctypes
import errno
import os
import queue
from dataclasses import dataclass
from multiprocessing import Queue, Value
from pathlib import Path
from time import sleep
from typing import Literal, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from core.format.hierarchy import Hierarchy
from data_tools import workers


@dataclass(frozen=True)
class WriteOptions:
    write_mode: Literal["raw", "jpg", "proportion", "smart"] = "raw"  # how images are stored
    max_resolution: int = 256  # longest side in pixels; larger images are downscaled (INTER_AREA)
    jpeg_quality: int = 90  # JPEG quality for jpg / proportion / smart
    compress_probability: float = 0.5  # share stored as JPEG in 'proportion' mode

    def __post_init__(self) -> None:
        if self.max_resolution < 1:
            raise ValueError(f"max_resolution must be >= 1, got {self.max_resolution}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must lie in 1..100, got {self.jpeg_quality}")
        if not 0.0 <= self.compress_probability <= 1.0:
            raise ValueError(f"compress_probability must lie in [0, 1], got {self.compress_probability}")


class Split(Protocol):
    extra_columns: tuple[str, ...]

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> tuple[np.ndarray, int, dict[str, int]]: ...


class _Rows:
    """Adapts a split to the tuples ffcv's writer wants, in column order."""

    def __init__(self, split: Split, leaf_maps: list[np.ndarray], extra_columns: Sequence[str]):
        self.split, self.leaf_maps, self.extra = split, leaf_maps, tuple(extra_columns)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple:
        image, leaf, extras = self.split[i]
        source = self.split.source_index(i) if hasattr(self.split, "source_index") else i
        return (image, *(int(m[leaf]) for m in self.leaf_maps), int(source),
                *(int(extras[c]) for c in self.extra))


def columns(hierarchy: Hierarchy, extra_columns: Sequence[str]) -> list[str]:
    return ["image", *hierarchy.names, "index", *extra_columns]


def write_split(path: str | Path, split: Split, hierarchy: Hierarchy, options: WriteOptions,
                workers: int = 1, chunk_size: int = 100, desc: str = "") -> int:
    """Writes `split` to `path` (callers write to a temporary name and rename). Returns the sample count."""
    from ffcv.fields import IntField, RGBImageField  # ffcv imports torch and numba: seconds, so only here

    extra = tuple(getattr(split, "extra_columns", ()))
    clash = set(extra) & set(hierarchy.names) | set(extra) & {"image", "index"}
    if clash:
        raise ValueError(f"extra column(s) {sorted(clash)} clash with level or reserved column names")
    fields = {"image": RGBImageField(write_mode=options.write_mode, max_resolution=options.max_resolution,
                                     jpeg_quality=options.jpeg_quality,
                                     compress_probability=options.compress_probability)}
    fields.update({name: IntField() for name in hierarchy.names})
    fields["index"] = IntField()
    fields.update({c: IntField() for c in extra})
    rows = _Rows(split, [hierarchy.leaf_map(n) for n in hierarchy.names], extra)
    if len(rows) == 0:
        raise ValueError(f"{desc or path}: no samples to write")
    writer = _checked_writer_class()(str(path), fields, num_workers=max(1, workers), desc=desc,
                                     page_size=page_size(len(rows), options.max_resolution))
    writer.from_indexed_dataset(rows, chunksize=chunk_size)
    return len(rows)


def page_size(num_samples: int, max_resolution: int) -> int:
    """Pages hold whole samples; each writer process leaves one page partly empty, so small sets get small pages.

    ffcv's default (8 MiB) would make a 100-image beton 16 MiB; the floor is ffcv's minimum (2 MiB) and a page
    always holds at least 4 raw images of the largest size.
    """
    largest = max_resolution * max_resolution * 3
    need = max(4 * largest, min(8 << 20, num_samples * largest // 16))
    size = 2 << 20
    while size < need:
        size *= 2
    return size


def _checked_writer_class() -> type:
    from ffcv.writer import DatasetWriter, MemoryAllocator

    class CheckedWriter(DatasetWriter):
        """ffcv's writer, except that a worker that dies makes it fail instead of waiting forever.

        ffcv 1.0.2's `_write_common` polls a shared counter until every sample is done; if a worker raises
        (a bad sample), the counter never gets there and the conversion hangs. This copy of that method also
        watches the workers' exit codes, and labels the progress bar.
        """

        def __init__(self, fname: str, fields: dict, num_workers: int, desc: str, page_size: int):
            super().__init__(fname, fields, num_workers=num_workers, page_size=page_size)
            self.desc = desc

        def _write_common(self, num_samples, queue_content, work_fn, extra_worker_args):  # noqa: C901
            from multiprocessing import Process

            self.num_samples = num_samples
            self.prepare()
            workqueue: Queue = Queue()
            for todo in queue_content:
                workqueue.put(todo)
            allocations_queue: Queue = Queue()
            for _ in range(self.num_workers):
                workqueue.put(None)
            done_number = Value(ctypes.c_uint64, 0)
            allocator = MemoryAllocator(self.fname, self.data_region_start, self.page_size)
            worker_args = (workqueue, self.metadata_sm, self.metadata_type, self.fields, allocator, done_number,
                           allocations_queue, *extra_worker_args)
            # workers die with this process (a SIGKILLed conversion left them running: data_tools/workers.py)
            processes = [Process(target=workers.run_worker, args=(os.getpid(), work_fn, *worker_args), daemon=True)
                         for _ in range(self.num_workers)]
            for p in processes:
                p.start()
            allocation_list = []
            try:
                with tqdm(total=self.num_samples, desc=self.desc or os.path.basename(self.fname), unit="img",
                          dynamic_ncols=True) as progress:
                    previous = 0
                    while previous != self.num_samples:
                        val = done_number.value
                        if val > previous:
                            progress.update(val - previous)
                        previous = val
                        _check_workers(processes, self.fname)
                        sleep(0.05)
                # a worker can still fail after its last sample (flushing its pages): poll, never block
                for _ in processes:
                    while True:
                        try:
                            allocation_list.extend(allocations_queue.get(timeout=0.5))
                            break
                        except queue.Empty:
                            _check_workers(processes, self.fname)
                for p in processes:
                    p.join()
                self.finalize(allocation_list)
            finally:
                for p in processes:
                    if p.is_alive():
                        p.kill()
                self.metadata_sm.close()
                self.metadata_sm.unlink()

    return CheckedWriter


def _check_workers(processes: list, fname: str) -> None:
    """Raises when a writer process has failed (OSError ENOSPC when it ran out of disk space)."""
    failed = [p for p in processes if p.exitcode not in (None, 0)]
    if any(p.exitcode == workers.DISK_FULL_EXIT for p in failed):
        raise OSError(errno.ENOSPC, f"writing {fname}: no space left on device")
    if failed:
        raise RuntimeError(f"writing {fname}: a writer process exited with code {failed[0].exitcode} "
                           f"(its traceback is printed above)")
