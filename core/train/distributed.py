"""One run over many processes (torch.distributed): the process group, who writes, and what a failed rank looks like.

Contract with launchers (`grainsweep train|finetune --nproc N`, SLURM tasks, plain `torchrun`):
- Each process is started as torchrun starts it, with env RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
  (env:// rendezvous; MASTER_ADDR:MASTER_PORT is where rank 0 hosts the TCP store). Nothing else is needed.
- core.train.run.run(), core.train.transfer.finetune() and core.train.evaluate.evaluate_run() call
  `init_from_env(cfg.train.device)` themselves: with WORLD_SIZE > 1 it creates the process group (nccl on CUDA
  with device cuda:LOCAL_RANK, gloo on the CPU), with timeout GRAINSWEEP_DIST_TIMEOUT_S seconds (default
  DEFAULT_TIMEOUT_S) for every collective, and destroys it when the call returns or raises. A launcher must not
  create the group itself. Nested calls (finetune -> run) share the group of the outer one.
- WORLD_SIZE unset or 1: nothing here happens; a run behaves exactly as a one-process run always has.
- Rank 0 alone writes the run folder (config, provenance, metrics, TensorBoard, checkpoints, result.json), holds
  its lock and shows progress bars; every rank computes. Exit status: 0 on every rank when the run succeeds; when
  any rank fails every rank exits non-zero, the survivors with `RankFailure` ("rank 1 of 2 stopped: rank 0
  (pid 123 on host-a) died", or "... rank 0 failed: RunConfigError: ..."), within the timeout at most (gloo
  usually notices a closed peer at once). A launcher should report the first non-zero exit and stop the rest.
- data.batch_size is the global batch (each rank takes batch_size / WORLD_SIZE rows of every step's batch), so
  learning rate and schedule mean the same at any world size.

How a failed rank is named: at start every rank records its host and pid in the store; a rank that raises records
its error there before leaving. A survivor whose collective fails reads those records: a rank with an error, a
rank on this host whose pid is gone, or (the store itself gone) rank 0.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from core.format.config import ConfigError
from core.format.lock import pid_alive

TIMEOUT_ENV = "GRAINSWEEP_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 300.0  # a collective waits this long for a rank that neither answers nor closes its sockets
DIAGNOSE_TIMEOUT_S = 5.0  # store reads while naming a failed rank
_KEY = "grainsweep/"
T = TypeVar("T")


class RankFailure(RuntimeError):
    """Another rank of this run failed or died; the message names it."""


@dataclass(frozen=True)
class World:
    """This process's place in the run. One process: rank 0 of 1, device None (the run's own train.device)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def on_main(self, fn: Callable[[], T]) -> T:
        """fn() on rank 0 only; its (picklable) result, or its error, reaches every rank. Rank 0-only work that can
        fail (a lock, a config check) must go through here, or the other ranks would wait for it until timeout."""
        if not self.distributed:
            return fn()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except Exception as e:
                dist.broadcast_object_list([("error", f"{type(e).__name__}: {e}")], src=0)
                raise
        dist.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if kind == "error":
            raise RankFailure(f"rank {self.rank} of {self.size} stopped: rank 0 failed: {value}")
        return value


_current: World | None = None


def current() -> World:
    """The World of the innermost init_from_env, or one process."""
    return _current or World()


def sum_over_ranks(*values: torch.Tensor) -> list[torch.Tensor]:
    """Each value summed over every rank (float64); the values themselves with one process."""
    if not current().distributed:
        return list(values)
    device = collective_device()
    flat = torch.stack([v.detach().to(device, torch.float64).reshape(()) for v in values])
    dist.all_reduce(flat)
    return list(flat.unbind())


def collective_device() -> torch.device:
    """Where this process's collectives take their tensors: its CUDA device under nccl, the CPU under gloo."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ConfigError(f"env {name} is not set; a run with WORLD_SIZE > 1 needs RANK, WORLD_SIZE, LOCAL_RANK, "
                              "MASTER_ADDR and MASTER_PORT (as torchrun sets them)")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"env {name}={raw!r} is not an integer") from None


def world_from_env(device: str = "auto") -> World:
    """The World the environment describes (no process group yet). `device` is the run's train.device."""
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return World()
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < size:
        raise ConfigError(f"env RANK={rank} is outside WORLD_SIZE={size}")
    if not os.environ.get("MASTER_ADDR"):
        raise ConfigError(f"env MASTER_ADDR is not set; WORLD_SIZE={size} needs rank 0's address")
    _env_int("MASTER_PORT")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return World(rank, size, local_rank, torch.device("cpu"))
    if device not in ("auto", "cuda"):
        raise ConfigError(f"train.device={device!r} names one device; with WORLD_SIZE={size} each process takes "
                          "cuda:LOCAL_RANK: use train.device=cuda (or auto)")
    if not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available")
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(f"env LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) are "
                          "visible to this process; start at most that many processes per node")
    return World(rank, size, local_rank, torch.device("cuda", local_rank))


def timeout_s() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"env {TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise ConfigError(f"env {TIMEOUT_ENV}={raw!r} must be > 0 seconds")
    return value


@contextmanager
def init_from_env(device: str = "auto") -> Iterator[World]:
    """The run's World: with WORLD_SIZE > 1 a process group for the duration of the block (module docstring)."""
    global _current
    if _current is not None:  # nested (finetune -> run): the outer call owns the group
        yield _current
        return
    world = world_from_env(device)
    if not world.distributed:
        yield world
        return
    if world.device.type == "cuda":
        torch.cuda.set_device(world.device)
    dist.init_process_group("nccl" if world.device.type == "cuda" else "gloo", init_method="env://",
                            rank=world.rank, world_size=world.size, timeout=timedelta(seconds=timeout_s()))
    store = dist.distributed_c10d._get_default_store()
    store.set(f"{_KEY}pid/{world.rank}", f"{socket.gethostname()} {os.getpid()}")
    _current = world
    try:
        yield world
    except BaseException as e:
        if isinstance(e, RankFailure):
            raise
        peer = _failed_peer(world, store)
        if peer:
            raise RankFailure(f"rank {world.rank} of {world.size} stopped: {peer}") from e  # the backend's own error stays as the cause
        try:  # so the others can name this rank
            store.set(f"{_KEY}failed/{world.rank}", f"{type(e).__name__}: {e}".splitlines()[0])
        except Exception:  # noqa: BLE001 - the store's host (rank 0) may be gone too
            pass
        raise
    finally:
        _current = None
        dist.destroy_process_group()


def _failed_peer(world: World, store: Any) -> str:
    """Which other rank failed or died, in words; '' when none can be named."""
    try:
        store.set_timeout(timedelta(seconds=DIAGNOSE_TIMEOUT_S))
        others = [r for r in range(world.size) if r != world.rank]
        for r in others:
            if store.check([f"{_KEY}failed/{r}"]):
                return f"rank {r} failed: {store.get(f'{_KEY}failed/{r}').decode()}"
        host = socket.gethostname()
        for r in others:
            if not store.check([f"{_KEY}pid/{r}"]):
                continue
            where, pid = store.get(f"{_KEY}pid/{r}").decode().rsplit(" ", 1)
            if where == host and not pid_alive(int(pid)):
                return f"rank {r} (pid {pid} on {host}) died"
    except Exception:  # noqa: BLE001 - the store lives in rank 0's process: unreachable means rank 0 is gone
        if world.rank != 0:
            return (f"rank 0 (host of the rendezvous store at {os.environ.get('MASTER_ADDR')}:"
                    f"{os.environ.get('MASTER_PORT')}) is unreachable: it died or stopped")
    return ""

