"""ffcv's Loader with two faults of ffcv 1.0.2 mended: a dead worker thread hung its consumer, and every Loader
built with os_cache corrupted numba's type cache (mended for every ffcv Loader once this module is imported).

A worker error ends the epoch. ffcv's EpochIterator is a thread that runs the compiled pipeline and puts batches
in a queue; `__next__` blocks on that queue (`output_queue.get()`, no timeout). When the pipeline raises (a
damaged image: a ValueError from numba's reshape, a SystemError from a decode), the exception ends the thread's
`run` (threading prints it) and nothing is ever put again: the training loop waits forever at 0% CPU.
`GuardedEpochIterator.run` catches it and queues a marker instead; `__next__` then raises `LoaderWorkerError`
naming the beton, and the row at fault where a decode of the failed batch's rows in the main thread
(core.data.beton_images.read_images) finds one.

numba's type cache. Every ffcv Loader built with os_cache corrupted numba's interned uint8[::1] type, and
collected decoder dispatchers then printed "Exception ignored ... KeyError" traces; core.format.ffcv_types says
why and mends it, here once at import, before any Loader is built.
"""

from __future__ import annotations

from pathlib import Path
from queue import Full

import numpy as np
from ffcv.loader import Loader
from ffcv.loader.epoch_iterator import IS_CUDA, EpochIterator
from ffcv.pipeline.compiler import Compiler
from ffcv.traversal_order.base import TraversalOrder

from core.format.beton_file import BetonError
from core.data.beton_images import read_images
from core.data.source import rank_positions
from core.format.ffcv_types import mend_os_cache_types

QUEUE_POLL_S = 0.5  # how often a worker blocked on a full queue checks whether the epoch was closed (as ffcv's)
ROWS_SHOWN = 8  # rows of a failed batch named in the message when no single row is found at fault


class LoaderWorkerError(BetonError):
    """An error in a loader's worker thread; the message names the beton and the row(s) being decoded."""


# before any Loader: ffcv's os_cache manager would otherwise corrupt numba's type cache (module docstring)
mend_os_cache_types()


class GuardedLoader(Loader):
    """ffcv's Loader, same arguments, whose epochs end with `LoaderWorkerError` when a worker fails.

    shard=(rank, world): serve only this rank's share of every epoch (`RankShare`); ffcv's own distributed=True is
    not used (its DistributedSampler pads with repeats and orders rows unlike one process)."""

    def __init__(self, *args, shard: tuple[int, int] | None = None, **kw) -> None:
        super().__init__(*args, **kw)
        if shard is not None and shard[1] > 1:
            self.traversal_order = RankShare(self.traversal_order, *shard, self.batch_size, self.drop_last)
            self.first_traversal_order = self.next_traversal_order()

    def __iter__(self) -> GuardedEpochIterator:
        # ffcv's Loader.__iter__ (loader/loader.py) with our EpochIterator
        Compiler.set_num_threads(self.num_workers)
        order = self.next_traversal_order()
        selected_order = order[:len(self) * self.batch_size]
        self.next_epoch += 1
        if self.code is None or self.recompile:
            self.generate_code()
        return GuardedEpochIterator(self, selected_order)


class RankShare(TraversalOrder):
    """The rows of `order`'s epoch that rank `rank` of `world` serves (core.data.source.rank_positions): the
    one-process order, so a run's steps see the same rows at any world size."""

    def __init__(self, order: TraversalOrder, rank: int, world: int, batch_size: int, drop_last: bool) -> None:
        super().__init__(order.loader)
        self.order, self.rank, self.world = order, rank, world
        self.batch_size, self.drop_last = batch_size, drop_last

    def sample_order(self, epoch: int):
        order = np.asarray(self.order.sample_order(epoch))
        return order[rank_positions(len(order), self.batch_size, self.drop_last, self.rank, self.world)]


class _Failed:
    """The queue's marker of a failed worker."""


class GuardedEpochIterator(EpochIterator):
    """ffcv's EpochIterator whose worker, when the pipeline raises, queues a marker that `__next__` raises on."""

    def __init__(self, loader: Loader, order) -> None:
        self.rows = np.empty(0, dtype=np.uint64)  # the batch being made (set before the thread starts)
        self.error: BaseException | None = None
        super().__init__(loader, order)

    def run_pipeline(self, b_ix, batch_indices, batch_slot, cuda_event):
        self.rows = batch_indices
        return super().run_pipeline(b_ix, batch_indices, batch_slot, cuda_event)

    def run(self) -> None:
        try:
            super().run()
        except BaseException as e:  # noqa: BLE001 - whatever ends the worker must reach the consumer
            self.error = e
            while not self.terminate_event.is_set():
                try:
                    self.output_queue.put(_Failed, timeout=QUEUE_POLL_S)
                    return
                except Full:  # the consumer has not yet taken the batches before it
                    continue

    def __next__(self):
        # ffcv's EpochIterator.__next__ plus the failure marker
        result = self.output_queue.get()
        if result is _Failed:
            self.close()
            raise worker_error(Path(self.loader.fname), self.rows, self.error)
        if result is None:
            self.close()
            raise StopIteration()
        slot, result = result
        if IS_CUDA:
            self.current_stream.wait_stream(self.cuda_streams[slot])  # the batch's copy is done
        return result


def worker_error(path: Path, rows: np.ndarray, error: BaseException | None) -> BetonError:
    """The one-line error of a worker that failed on the batch of `rows`: the damaged row when decoding them
    again here finds one (read_images raises naming it), else the worker's own error and the batch's rows."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    cause = f"{type(error).__name__}: {error}".splitlines()[0] if error is not None else "unknown error"
    try:
        read_images(path, rows=rows, progress=False)
    except BetonError as e:
        out: BetonError = LoaderWorkerError(f"{e} (the loader's worker stopped on it: {cause})")
    else:
        shown = ", ".join(map(str, rows[:ROWS_SHOWN])) + (", ..." if len(rows) > ROWS_SHOWN else "")
        out = LoaderWorkerError(f"{path}: the loader's worker failed on the batch of rows {shown}: {cause}")
    out.__cause__ = error
    return out
