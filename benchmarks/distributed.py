"""Training images/s at several world sizes, side by side: `grainsweep train --nproc N`, the command a user runs
(launch/spawn.py: N processes, torch.distributed, gloo on the CPU, nccl on CUDA), on the same data and settings.

data.batch_size is the global batch at every world size (each process takes batch / N), so the runs do the same
optimisation steps; data.workers is split over the processes too (workers / N decode threads each), so a world
size gets no more CPU for decoding than another. A figure is the run's own `images_per_second` from metrics.jsonl
(images of every rank over rank 0's epoch time), epochs after the first (process start, numba, page cache) only;
runs alternate world sizes (1, 2, 1, 2, ...) so that a change of machine load hits each alike. Each command's
wall time (imports and process-group start included) is recorded beside it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.measure import load_average, summary, versions


def command(data: str | Path, out: str | Path, *, world_size: int, model: str, res: int, batch_size: int,
            workers: int, epochs: int, device: str, model_kwargs: dict | None = None) -> list[str]:
    """The `grainsweep train` command line of one run (without the interpreter)."""
    sets = [f"data.resolution={res}", f"data.batch_size={batch_size}",
            f"data.workers={max(1, workers // world_size)}", f"model.name={model}", f"train.device={device}",
            f"train.epochs={epochs}", f"train.eval_every={epochs}", f"train.checkpoint_every={epochs}"]
    if model_kwargs:
        sets.append("model.kwargs={" + ", ".join(f"{k}: {v}" for k, v in model_kwargs.items()) + "}")
    return ["grainsweep", "train", "--data", str(data), "--out", str(out), *(f"--set={s}" for s in sets),
            "--nproc", str(world_size)]


def measure_distributed(data: str | Path, *, model: str, res: int, batch_size: int, workers: int, epochs: int,
                        world_sizes: tuple[int, ...], runs: int, device: str = "cpu",
                        model_kwargs: dict | None = None, log=print) -> dict[str, Any]:
    """Images/s of `runs` runs at each world size, `epochs` measured epochs each (one more run first)."""
    if epochs < 1 or runs < 1:
        raise ValueError(f"epochs and runs must be >= 1 (one more epoch per run is warm-up), got {epochs}, {runs}")
    usable, skipped = _usable(world_sizes, device)
    for n in usable:
        if batch_size % n:
            raise ValueError(f"batch_size {batch_size} does not divide over {n} processes")
    per: dict[int, dict[str, list]] = {n: {"rates": [], "seconds": []} for n in usable}
    load_before = load_average()
    env = {**os.environ, "TQDM_DISABLE": "1"}
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        for r in range(runs):
            for n in usable:
                out = Path(tmp) / f"n{n}-run{r}"
                argv = command(data, out, world_size=n, model=model, res=res, batch_size=batch_size,
                               workers=workers, epochs=epochs + 1, device=device, model_kwargs=model_kwargs)
                log(f"distributed: world size {n}, run {r + 1}/{runs}")
                t0 = time.perf_counter()
                res_ = subprocess.run([sys.executable, "-m", "launch.cli", *argv[1:]], env=env,
                                      capture_output=True, text=True)
                if res_.returncode != 0:
                    raise RuntimeError(f"{' '.join(argv)} failed ({res_.returncode}): "
                                       f"{res_.stderr.strip().splitlines()[-1:] or ''}")
                per[n]["seconds"].append(time.perf_counter() - t0)
                epochs_logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x]
                per[n]["rates"] += [e["images_per_second"] for e in epochs_logged[1:]]
    base = summary(per[usable[0]]["rates"])["median"] if usable else 0.0
    rows = []
    for n in usable:
        s = summary(per[n]["rates"])
        rows.append({"world_size": n, "images_per_second": s["median"], "stats": s,
                     "speedup": s["median"] / base if base else 0.0, "batch_per_process": batch_size // n,
                     "workers_per_process": max(1, workers // n), "command_seconds": summary(per[n]["seconds"]),
                     "command": shlex.join(command(data, "RUN", world_size=n, model=model, res=res,
                                                   batch_size=batch_size, workers=workers, epochs=epochs + 1,
                                                   device=device, model_kwargs=model_kwargs))})
    return {"benchmark": "distributed", "rows": rows, "skipped": skipped,
            "settings": {"data": str(data), "model": model, "model_kwargs": model_kwargs or {}, "res": res,
                         "batch_size": batch_size, "workers": workers, "epochs": epochs, "warmup_epochs": 1,
                         "runs": runs, "device": device},
            "versions": versions(), "load_average": {"before": load_before, "after": load_average()}}


def _usable(world_sizes: tuple[int, ...], device: str) -> tuple[list[int], dict[int, str]]:
    """The world sizes this machine can run (on CUDA one GPU a process), and why the others were skipped."""
    if device != "cuda":
        return list(world_sizes), {}
    import torch

    gpus = torch.cuda.device_count()
    return ([n for n in world_sizes if n <= gpus],
            {n: f"{gpus} GPU(s) here, one per process" for n in world_sizes if n > gpus})
