"""Fused vs separate pretraining: the wall time of a granularity sweep's pretraining stage for one seed, the K
level runs trained one after another (`core.train.run.run` per level, as the sweep runs them today) against one
fused job (`core.train.fused.run_fused`: one loader, each batch decoded and through the device stage once, then
through the K models).

The K configs differ only in data.level (same model, seed, data settings). A side's figure is the wall time of
all its runs, from the first config to the last result.json, in this process: each run builds its own parts
(model, loader and, for ffcv, its numba-compiled pipeline) as a sweep's job does; imports and process start,
which a sweep's separate jobs pay K times, are left out of both sides. One warm-up of each side at one epoch
(imports, module-level numba, page cache) is not counted; then `repeats` repeats alternate which side goes first,
so that a change of machine load hits both alike. Reported: median and spread of each side, the speed-up of the
medians and of each repeat's pair, the separate runs' data wait (how loader-bound the case is), and both sides'
final validation accuracy per level (a check that they trained the same thing, not a figure).
"""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.measure import load_average, summary, versions


def level_configs(base, levels: list[str]) -> list:
    """One RunConfig a level: `base` with data.level set, evaluation and a checkpoint at the last epoch only."""
    from core.format import config as cfglib

    epochs = base.train.epochs
    return [cfglib.with_values(base, {"data.level": lv, "train.eval_every": epochs,
                                      "train.checkpoint_every": epochs}) for lv in levels]


def pretrain_levels(data: str | Path, levels: list[str] | None, count: int = 3) -> list[str]:
    """`levels` checked against the dataset's hierarchy, or its `count` finest levels."""
    from core.format import hierarchy as hlib

    names = hlib.load(Path(data)).names
    if not levels:
        return names[:count]
    unknown = [lv for lv in levels if lv not in names]
    if unknown:
        raise ValueError(f"{data}: no level(s) {unknown}; the dataset has {names}")
    return list(levels)


def _separate(cfgs: list, dirs: list[Path]) -> list[dict]:
    from core.train.run import run

    return [run(cfg, d) for cfg, d in zip(cfgs, dirs)]


def _fused(cfgs: list, dirs: list[Path]) -> list[dict]:
    from core.train.fused import run_fused

    return run_fused(cfgs, dirs)


def _data_wait(dirs: list[Path]) -> list[float]:
    """data_wait_fraction of every epoch after the first of the runs in `dirs` (metrics.jsonl)."""
    out = []
    for d in dirs:
        lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines() if x.strip()]
        out += [e["data_wait_fraction"] for e in lines[1:] if "data_wait_fraction" in e]
    return out


def measure_fused(data: str | Path, base, *, levels: list[str] | None = None, repeats: int = 3,
                  warmup: bool = True, case: str = "", command: str = "", log=print) -> dict[str, Any]:
    """Seconds of the pretraining stage (K level runs of `base`, a RunConfig whose data.path is `data`), fused and
    separate, `repeats` times each after one warm-up of each at one epoch."""
    from core.format import config as cfglib

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    base = cfglib.with_values(base, {"data.path": str(data)})
    levels = pretrain_levels(data, levels)
    if len(levels) < 2:
        raise ValueError(f"fusing needs 2 levels at least, got {levels}")
    cfgs = level_configs(base, levels)
    sides = {"separate": _separate, "fused": _fused}
    seconds: dict[str, list[float]] = {s: [] for s in sides}
    finals: dict[str, list[dict]] = {}
    wait: list[float] = []
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-fused-") as tmp:
        def once(side: str, configs: list, tag: str) -> tuple[float, list[dict], list[Path]]:
            dirs = [Path(tmp) / f"{tag}-{side}" / lv for lv in levels]
            t0 = time.perf_counter()
            out = sides[side](configs, dirs)
            return time.perf_counter() - t0, out, dirs

        if warmup:
            short = level_configs(cfglib.with_values(base, {"train.epochs": 1, "optim.warmup_epochs": 0.0}), levels)
            for side in sides:
                log(f"fused ({case}): warm-up, {side}")
                once(side, short, "warmup")
        for r in range(repeats):
            for side in (("separate", "fused") if r % 2 == 0 else ("fused", "separate")):
                log(f"fused ({case}): repeat {r + 1}/{repeats}, {side}")
                dt, out, dirs = once(side, cfgs, f"r{r}")
                seconds[side].append(dt)
                finals[side] = out
                if side == "separate":
                    wait += _data_wait(dirs)
                shutil.rmtree(dirs[0].parent)
    sep, fus = summary(seconds["separate"]), summary(seconds["fused"])
    pairs = [s / f for s, f in zip(seconds["separate"], seconds["fused"])]
    acc = {side: {lv: res.get(f"acc1/{lv}") for lv, res in zip(levels, out)} for side, out in finals.items()}
    return {"benchmark": "fused", "case": case, "levels": levels, "separate_seconds": sep, "fused_seconds": fus,
            "speedup": sep["median"] / fus["median"], "paired_speedup": summary(pairs),
            "separate_data_wait": summary(wait) if wait else None, "final_acc1": acc,
            "settings": {"data": str(data), "model": base.model.name, "model_kwargs": dict(base.model.kwargs),
                         "res": base.data.resolution, "batch_size": base.data.batch_size,
                         "workers": base.data.workers, "resident": base.data.resident,
                         "epochs": base.train.epochs, "device": base.train.device, "compile": base.model.compile,
                         "precision": base.train.precision, "repeats": repeats, "warmup": warmup,
                         "models": len(levels)},
            "command": command, "versions": versions(),
            "load_average": {"before": load_before, "after": load_average()}}


def bench_command(data: str | Path, sets: list[str], levels: list[str] | None, repeats: int,
                  warmup: bool = True) -> str:
    """The `grainsweep bench fused` command line that measures the same case."""
    argv = ["grainsweep", "bench", "fused", "--data", str(data), "--repeats", str(repeats),
            *([] if warmup else ["--no-warmup"])]
    if levels:
        argv += ["--levels", ",".join(levels)]
    return shlex.join(argv + [f"--set={s}" for s in sets])



def demo_dataset(root: Path, workers: int) -> tuple[Path, Any]:
    """The demo sweep's dataset (launch/sweeps/default.yaml: its synthetic preset and settings) converted under
    `root` (reused when identical), and the demo's `run` section (a RunConfig)."""
    from data_tools import convert_synthetic
    from launch import sweep_config

    sweep = sweep_config.load()
    if not sweep.dataset.synthetic_preset:
        raise ValueError("the default sweep names no synthetic preset; the fused benchmark's demo case needs one")
    conv = convert_synthetic.load_config(sweep.dataset.synthetic_preset, None,
                                         [*sweep.dataset.synthetic_set, f"workers={workers}"])
    path, _ = convert_synthetic.convert(Path(root) / f"demo-{sweep.dataset.synthetic_preset}", conv)
    return path, sweep.run


def measure_case(case, *, suite_beton: Path, data_root: Path, device: str, workers: int,
                 log=print) -> dict[str, Any]:
    """One FusedCase of a profile (benchmarks/profiles.py) on the suite's data or the demo's."""
    from core.format import config as cfglib
    from core.train.run_config import RunConfig

    sets = [*case.sets, f"train.device={device}", f"data.workers={workers}"]
    if case.data == "demo":
        data, run = demo_dataset(data_root, workers)
        base = cfglib.with_values(run, dict(cfglib.parse_override(s) for s in sets))
        command = "python -m benchmarks.run --only fused (demo case: launch/sweeps/default.yaml's run section + " \
                  + " ".join(sets) + ")"
    elif case.data == "suite":
        data = suite_beton
        base = cfglib.load(RunConfig, None, sets)
        command = bench_command(data, sets, None, case.repeats, case.warmup)
    else:
        raise ValueError(f"fused case {case.name!r}: data must be 'suite' or 'demo', got {case.data!r}")
    return measure_fused(data, base, repeats=case.repeats, warmup=case.warmup, case=case.name, command=command,
                         log=log)
