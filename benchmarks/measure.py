"""What every benchmark shares: per-run timing, median and spread over runs, and the machine and versions.

Timing rules (house style point 10, after airbench): the first epoch (worker start-up, numba and
torch.compile) is always excluded; figures are the median over the remaining runs, with their spread; the
hardware, versions and load average are recorded next to every figure. A pipeline that mixes CPU and device
work (a loader feeding a GPU) is timed by the wall clock between two `torch.cuda.synchronize()`; pure device
work (a training step on data already on the GPU) by CUDA events.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import torch

VERSIONED = ("torch", "torchvision", "ffcv", "numba", "timm", "numpy", "opencv-python", "pillow")


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median and spread of per-run figures: min, max, (max - min) / median, and the runs themselves."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("no runs to summarise")
    med = statistics.median(vals)
    return {"median": med, "min": min(vals), "max": max(vals),
            "spread": (max(vals) - min(vals)) / med if med > 0 else 0.0, "runs": vals}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wall_seconds(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Seconds `fn()` takes from an idle device to an idle device (CPU + device work), and its result."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def check_epochs(epochs: int) -> None:
    """Loader benchmarks need two epochs at least: the first is warm-up and never counted."""
    if epochs < 2:
        raise ValueError(f"epochs must be >= 2 (the first is warm-up and not counted), got {epochs}")


def time_epochs(epoch: Callable[[], int], device: torch.device, epochs: int) -> dict[str, Any]:
    """Runs `epoch()`, which returns how many images it served, `epochs` times, each timed by `wall_seconds`;
    the first (worker start-up, numba, torch.compile, page cache) is not counted. Returns the fields every
    loader benchmark reports: images_per_second (the median), its summary, epoch_seconds, images_per_epoch."""
    check_epochs(epochs)
    seconds, counts = [], []
    for e in range(epochs):
        dt, n = wall_seconds(epoch, device)
        if e > 0:
            seconds.append(dt)
            counts.append(n)
    stats = summary([n / s for n, s in zip(counts, seconds)])
    return {"images_per_second": stats["median"], "images_per_second_stats": stats, "epoch_seconds": seconds,
            "images_per_epoch": counts[0]}


def device_seconds(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Seconds of device work `fn()` queues: CUDA events on CUDA, the wall clock elsewhere."""
    if device.type != "cuda":
        return wall_seconds(fn, device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    sync(device)
    start.record()
    out = fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000.0, out


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (`uptime`): figures taken under load > cores are noisy."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    out["cuda"] = torch.version.cuda or "none"
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    import psutil

    info: dict[str, Any] = {"cpu": cpu_model(), "cores": os.cpu_count(),
                            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                            else os.cpu_count(),
                            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
                            "torch_threads": torch.get_num_threads(),
                            "os": platform.platform(), "host": platform.node()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    else:
        info["gpu"] = "none"
    return info

