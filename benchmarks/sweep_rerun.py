"""A rerun of a finished sweep (every run skipped), and a rerun that needs compiles: warm vs cold inductor cache.

`measure_sweep_rerun(root, ...)`:
  1. runs a tiny sweep to completion (the `tiny` synthetic preset, a small bmlp, the local executor) in a fresh
     process: `python -m launch.cli sweep ROOT/bench-sweep.yaml --executor local --out ROOT/sweep --set ...`
     (timed, for context; the YAML only names the sweep, so launch/sweeps/default.yaml plays no part);
  2. reruns it `reruns` times in this process (`launch.sweep.run_sweep`: plan, checks, dataset reuse, status,
     skip; imports excluded), and `reruns` times in a fresh process, the command a user types (Python start-up
     and imports included); every rerun must find every run done and submit nothing;
  3. times the first training step of the sweep's pretraining config with `model.compile=always` (the model
     and the device stage compiled, as on CUDA) on `device` in fresh processes (`python -m benchmarks.sweep_rerun
     first-step`): `compile_runs` times with an empty TORCHINDUCTOR_CACHE_DIR (cold), each followed by one run
     with the folder the cold run filled (warm), which is what a sweep's shared `inductor-cache/`
     (launch/plan.py CACHE_DIR) gives a requeued or rerun job. Inductor's FX-graph and AOT-autograd cache
     counters are reported next to the times.

Sweeps and compiles run in child processes so that neither this process's torch state (dynamo caches, the
local executor's TORCHINDUCTOR_CACHE_DIR) nor an earlier compile leaks into a figure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

NAME = "bench-rerun"  # the sweep's name (folder names of its runs derive from its settings, not from this)
RES, BATCH, EPOCHS = 16, 16, 1  # the tiny sweep's crop side (px), batch size and epochs per run
MODEL = {"depth": 2, "width": 32}  # bmlp kwargs: compile time, not training, is what is measured


def sweep_overrides(data: Path, seeds: int, workers: int, all_levels: bool = True) -> list[str]:
    """The tiny sweep: every level of the tiny preset (12 / 4 / 2 classes) pretrained (or only the target with
    `all_levels=False`), a linear transfer to the coarsest, the scratch baseline; `seeds` seeds; clustering
    off (it adds jobs, not planning work)."""
    levels = "[]" if all_levels else "[superclass]"
    return [f"name={NAME}", f"dataset.path={data}", "dataset.synthetic_preset=tiny",
            f"dataset.synthetic_set=[workers={workers}]", "target_level=superclass", f"pretrain_levels={levels}",
            f"seeds=[{', '.join(str(s) for s in range(seeds))}]",
            f"run.data={{resolution: {RES}, batch_size: {BATCH}, workers: {workers}}}",
            f"run.model={{name: bmlp, kwargs: {{depth: {MODEL['depth']}, width: {MODEL['width']}}}}}",
            f"run.train={{epochs: {EPOCHS}, eval_every: {EPOCHS}}}", "transfer.modes=[linear]",
            f"transfer.set=[train.epochs={EPOCHS}]", "clustering.enabled=false"]


def write_sweep_file(path: Path) -> Path:
    """A sweep YAML that only names the sweep: settings then come from the schema's defaults and
    `sweep_overrides`, not from launch/sweeps/default.yaml (the demo, which changes with the project)."""
    path.write_text(f"name: {NAME}\n")
    return path


def _child(args: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Wall seconds of `python args...` in a fresh process, and its stdout; fails loudly on a non-zero exit."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1", **(env or {})})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} ... exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def _sweep_command(file: Path, out: Path, sets: list[str]) -> list[str]:
    return ["-m", "launch.cli", "sweep", str(file), "--executor", "local", "--out", str(out),
            *[arg for s in sets for arg in ("--set", s)]]


def _rerun_in_process(file: Path, out: Path, sets: list[str]) -> tuple[float, int]:
    """Seconds of `run_sweep` on a finished sweep, and how many runs its plan has; nothing may be submitted."""
    from launch import sweep, sweep_config

    cfg = sweep_config.load(file, sets)
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    t0 = time.perf_counter()
    plan, records = sweep.run_sweep(cfg, out, executor="local")
    seconds = time.perf_counter() - t0
    if cache is None:  # (a run started by the local executor would set it; keep this process as it was)
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
    else:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    if records:
        raise RuntimeError(f"rerun of a finished sweep submitted {len(records)} stage(s)")
    return seconds, len(plan.jobs)


def first_step(data: Path, workers: int, device: str, t_start: float) -> dict[str, Any]:
    """In the child: builds the sweep's pretraining run with `model.compile=always` (the model and the device
    stage compiled, as on CUDA) and trains one epoch; seconds from `t_start` to the end of the first step."""
    import torch
    from torch._dynamo.utils import counters

    from benchmarks.train_step import run_config
    from core.train.engine import train_epoch
    from core.data.source import GpuBatches
    from core.train.parts import build_parts

    t_imported = time.perf_counter()
    p = build_parts(run_config(data, model="bmlp", res=RES, batch_size=BATCH, workers=workers, device=device,
                               compile="always", epochs=EPOCHS, model_kwargs=MODEL))
    t_built = time.perf_counter()
    stamps: list[float] = []
    train_epoch(forward=p.forward, optimizer=p.optimizer, objective=p.objective,
                batches=GpuBatches(p.train_loader, p.train_augment), step=0, precision=p.precision,
                set_lr=lambda s: p.schedule.apply(p.optimizer, s), desc="first step",
                on_step=lambda step, _: stamps.append(time.perf_counter()))
    caches = {f"{group}.{k}": int(v) for group in ("inductor", "aot_autograd") for k, v in counters[group].items()
              if "cache" in k}
    return {"import_seconds": t_imported - t_start, "build_seconds": t_built - t_imported,
            "first_step_seconds": stamps[0] - t_built, "to_first_step_seconds": stamps[0] - t_start,
            "later_step_seconds": (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1), "steps": len(stamps),
            "compiled": p.forward is not p.model, "caches": caches, "torch_threads": torch.get_num_threads()}


def _compile_run(data: Path, workers: int, device: str, cache_dir: Path) -> dict[str, Any]:
    """One fresh process timing a compiled run's first step with `cache_dir` as its inductor cache."""
    wall, out = _child(["-m", "benchmarks.sweep_rerun", "first-step", str(data), str(workers), device],
                       env={"TORCHINDUCTOR_CACHE_DIR": str(cache_dir)})
    result = json.loads(out.strip().splitlines()[-1])
    result["process_seconds"] = wall
    return result


def measure_sweep_rerun(root: str | Path, *, reruns: int = 3, compile_runs: int = 2, seeds: int = 2,
                        all_levels: bool = True, workers: int = 1, device: str = "cpu") -> dict[str, Any]:
    """Seconds to rerun a finished tiny sweep (in process and as a fresh command) and to reach the first
    training step of a compiled run with a cold and a warm inductor cache. `root` is emptied first."""
    from benchmarks.measure import load_average, summary, versions

    if reruns < 1 or compile_runs < 1:
        raise ValueError(f"reruns and compile_runs must be >= 1, got {reruns} and {compile_runs}")
    root = Path(root).resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    data, out = root / "data", root / "sweep"
    file, sets = write_sweep_file(root / "bench-sweep.yaml"), sweep_overrides(data, seeds, workers, all_levels)
    load_before = load_average()

    # the sweep, run to completion once
    first_seconds, _ = _child(_sweep_command(file, out, sets))

    # reruns: in this process (plan + checks + skip), then as the command a user types
    in_process, runs = [], 0
    for _ in range(reruns):
        seconds, runs = _rerun_in_process(file, out, sets)
        in_process.append(seconds)
    fresh = []
    for _ in range(reruns):
        seconds, stdout = _child(_sweep_command(file, out, sets))
        if f"{runs} done" not in stdout or " 0 to run" not in stdout:
            raise RuntimeError(f"a rerun of the finished sweep did not skip every run:\n{stdout[-2000:]}")
        fresh.append(seconds)

    # compiles: cold (an empty cache folder) then warm (the folder the cold run filled), fresh processes
    cold, warm = [], []
    for i in range(compile_runs):
        cache = root / f"inductor-cache-{i}"
        cold.append(_compile_run(data, workers, device, cache))
        warm.append(_compile_run(data, workers, device, cache))

    def stats(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
        return summary([r[key] for r in rows])

    return {"benchmark": "sweep_rerun", "status": "measured", "runs": runs,
            "first_run_seconds": first_seconds,
            "rerun_in_process_seconds": summary(in_process), "rerun_command_seconds": summary(fresh),
            "cold": {"to_first_step": stats(cold, "to_first_step_seconds"),
                     "first_step": stats(cold, "first_step_seconds"), "process": stats(cold, "process_seconds"),
                     "runs": cold},
            "warm": {"to_first_step": stats(warm, "to_first_step_seconds"),
                     "first_step": stats(warm, "first_step_seconds"), "process": stats(warm, "process_seconds"),
                     "runs": warm},
            "settings": {"root": str(root), "reruns": reruns, "compile_runs": compile_runs, "seeds": seeds,
                         "all_levels": all_levels, "workers": workers, "device": device, "res": RES,
                         "batch_size": BATCH, "epochs": EPOCHS, "model": "bmlp", "model_kwargs": MODEL,
                         "sweep_sets": sets},
            "versions": versions(), "load_average": {"before": load_before, "after": load_average()}}


def main(argv: list[str]) -> int:
    """`python -m benchmarks.sweep_rerun first-step DATA WORKERS DEVICE`: the child that times a first step
    (torch is imported after its clock starts); prints one JSON object."""
    t_start = time.perf_counter()
    if len(argv) != 4 or argv[0] != "first-step":
        print("usage: python -m benchmarks.sweep_rerun first-step DATA WORKERS DEVICE", file=sys.stderr)
        return 2
    print(json.dumps(first_step(Path(argv[1]), int(argv[2]), argv[3], t_start)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
