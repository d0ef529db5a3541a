"""`--nproc N` of `grainsweep train` and `finetune`: N local processes of the same command, started as torchrun
starts them, through torch.distributed's own elastic launcher (torch.distributed.launcher.api.elastic_launch).

Each process runs `python -m launch.cli <the same arguments without --nproc>` with RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1 and MASTER_PORT (a free port: the launcher's c10d store binds port 0);
core.train.run / core.train.transfer create the process group from them (core/train/distributed.py) and only
rank 0 writes. Plain `torchrun --nproc-per-node N -m launch.cli train ...` gives the same processes.

Faults: when one process fails, the launcher stops the others (SIGTERM, SIGKILL after SHUTDOWN_S) and the command
exits 1 with one line naming the rank that failed first and its last error line (each process records it in the
error file torchrun's launcher gives it, TORCHELASTIC_ERROR_FILE: `record_failure`, called by launch.cli.main).
Ctrl-C reaches only this process (the launcher starts each worker in a session of its own) and is forwarded to
every worker, which stop as a Ctrl-C'd single run would. The workers die with this process (PR_SET_PDEATHSIG),
so a killed launcher leaves no orphans.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
import traceback

PARENT_ENV = "GRAINSWEEP_SPAWN_PARENT"  # the launcher's pid, in each worker's environment
SHUTDOWN_S = 10  # how long stopped workers get to exit (their folder lock, ffcv threads) before SIGKILL
MONITOR_S = 0.2  # how often the launcher polls its workers


def add_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="run on N local processes (torch.distributed, one device each: nccl on CUDA, gloo on "
                        "CPU); data.batch_size stays the global batch, split over them")


def wanted(args: argparse.Namespace) -> bool:
    """Whether this command is to be spread over `--nproc` processes (refusing values that cannot be)."""
    from core.format.config import ConfigError

    if args.nproc < 1:
        raise ConfigError(f"--nproc {args.nproc}: must be at least 1")
    if args.nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"--nproc {args.nproc} inside a distributed launch (WORLD_SIZE="
                          f"{os.environ['WORLD_SIZE']}): use one or the other")
    return args.nproc > 1


def launch(args: argparse.Namespace) -> int:
    """Runs `args.argv` minus --nproc on args.nproc local processes; returns the command's exit status."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    child = ["-m", "launch.cli", *without_nproc(args.argv)]
    os.environ[PARENT_ENV] = str(os.getpid())
    # as torchrun does: N processes share the cores, so each gets its share of torch's CPU threads
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.nproc)))
    with tempfile.TemporaryDirectory(prefix="grainsweep-nproc-") as logs:
        config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=args.nproc, run_id=f"grainsweep-{os.getpid()}",
                              rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", local_addr="127.0.0.1",
                              max_restarts=0, monitor_interval=MONITOR_S, shutdown_timeout=SHUTDOWN_S,
                              logs_specs=DefaultLogsSpecs(log_dir=logs))
        try:
            elastic_launch(config, sys.executable)(*child)
        except ChildFailedError as e:
            rank, line = first_failure(e.failures)
            print(f"grainsweep {args.command}: error: rank {rank} of {args.nproc} failed: {line} (the other ranks "
                  "were stopped)", file=sys.stderr)
            return 1
        except SignalException as e:
            print(f"grainsweep {args.command}: {signal.Signals(e.sigval).name}: stopped all {args.nproc} "
                  "processes", file=sys.stderr)
            return 128 + int(e.sigval)
    return 0


def is_main() -> bool:
    """Whether this process is rank 0 (or alone): the one that prints a run's result."""
    return os.environ.get("RANK", "0") in ("", "0")


def without_nproc(argv: list[str]) -> list[str]:
    """`argv` without --nproc and its value (also as --nproc=N, or an abbreviation argparse accepted)."""
    out, skip = [], False
    for i, tok in enumerate(argv):
        if skip:
            skip = False
            continue
        if tok == "--":
            return out + argv[i:]
        name = tok.split("=", 1)[0]
        if len(name) > 3 and "--nproc".startswith(name):
            skip = "=" not in tok
            continue
        out.append(tok)
    return out


def first_failure(failures: dict) -> tuple[int, str]:
    """The rank whose failure came first, and its last error line. Workers that the launcher itself stopped (its
    SIGTERM) come last; a death by another signal (no Python error: OOM killer, segfault) comes before an
    error, and an error of its own before a RankFailure (core.train.distributed: a survivor reporting a peer's
    loss); errors are ordered by the time recorded in them."""
    def when(item) -> tuple:
        rank, f = item
        recorded = isinstance(f.message, dict)
        info = f.message.get("extraInfo", {}) if recorded else {}
        stopped = f.exitcode == -signal.SIGTERM and not recorded
        survivor = recorded and str(f.message.get("message", "")).startswith("RankFailure")
        return stopped, recorded, survivor, float(info.get("time", f.timestamp)), rank

    rank, f = min(failures.items(), key=when)
    message = f.message.get("message", "") if isinstance(f.message, dict) else f.message
    if not isinstance(f.message, dict) and f.exitcode >= 0:  # exited without an error recorded
        message = f"exit status {f.exitcode}"
    return rank, message


def record_failure(line: str) -> None:
    """Records why this worker fails where its launcher reads it (TORCHELASTIC_ERROR_FILE; torchrun's format,
    plus the exact time to order failures by); nothing outside a launch."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    now = time.time()
    data = {"message": {"message": line, "extraInfo": {"py_callstack": traceback.format_exc(),
                                                       "timestamp": str(int(now)), "time": now}}}
    try:
        with open(path, "w") as f:
            json.dump(data, f)
    except OSError:  # the launcher is gone or its folder unwritable: the line is on stderr anyway
        pass


def die_with_launcher() -> None:
    """In a worker started by `launch`: exit when the launcher dies (so a killed launcher leaves no orphans)."""
    parent = os.environ.get(PARENT_ENV)
    if parent and parent.isdigit():
        from data_tools.workers import die_with_parent

        die_with_parent(int(parent))
