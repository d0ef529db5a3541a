"""The benchmark suite's runner (`make bench` = `python -m benchmarks.run`): every figure side by side, in one run,
on the same files, then benchmarks/RESULTS.md (tables, benchmarks/report.py) and benchmarks/results.json (every
run's raw figures).

    python -m benchmarks.run                      # CPU profile, this machine
    python -m benchmarks.run --device cuda        # GPU profile (the lent H100: see RESULTS.md)
    python -m benchmarks.run --quick --results R.md --json r.json   # tiny sizes, one repetition (the tests)

Every setting of a profile is in benchmarks/profiles.py (PROFILES), with its unit. Targets are reported as measured ratios, never
asserted: loader >= 5x the torchvision DataLoader at 224 px on 2 CPU cores; on the GPU, end-to-end ResNet-50
>= 95% of its on-device-data throughput, and the MLP at 64 px not loader-bound.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.profiles import BENCHMARKS, CPU_GOMP_SPINCOUNT, PROFILES, Profile
from benchmarks.report import render

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_suite(*, device: str, profile: Profile, workers: int, data_root: Path, only: tuple[str, ...],
              log=print) -> dict[str, Any]:
    from benchmarks import (conversion, decode_limit, device_decode, distributed, fused, loader, storage,
                            suite_data, sweep_rerun, torchvision_loader, train_step)
    from benchmarks.measure import load_average, machine, versions

    results: dict[str, Any] = {"machine": machine(), "versions": versions(), "device": device,
                               "workers": workers, "profile": asdict(profile), "load_average_start": load_average()}
    t_start = time.perf_counter()

    # data (reused when identical data is already there)
    log(f"data: {profile.preset} tree, {profile.image_size} px JPEG, {profile.train_per_leaf} per leaf")
    data = suite_data.build(data_root, preset=profile.preset, image_size=profile.image_size,
                            train_per_leaf=profile.train_per_leaf, workers=workers)
    results["data"] = {"beton_dir": str(data.beton_dir), "image_folder": str(data.image_folder),
                       "train_images": data.train_images, "image_size": data.image_size,
                       "synthetic_convert_seconds": data.convert_seconds}
    common = dict(workers=workers, batch_size=profile.batch_size, epochs=profile.loader_epochs, device=device)

    if "loader_vs_torchvision" in only:
        rows = []
        for res in profile.resolutions:
            log(f"loader vs torchvision at {res} px")
            ours = loader.measure_loader(data.beton_dir, res=res, mode="train", **common)
            ours_crop = loader.measure_loader(data.beton_dir, res=res, mode="crop", **common)
            theirs = torchvision_loader.measure_torchvision(data.image_folder, res=res, **common)
            stage = loader.measure_stage(res=res, batch_size=profile.batch_size, device=device)
            rows.append({"res": res, "loader": ours, "loader_crop": ours_crop, "torchvision": theirs,
                         "stage": stage, "ratio": ours["images_per_second"] / theirs["images_per_second"],
                         "ratio_crop": ours_crop["images_per_second"] / theirs["images_per_second"]})
        results["loader_vs_torchvision"] = rows

    if "storage" in only:
        results["storage"] = storage.measure_storage(data.manifest, data.beton_dir, resolutions=profile.resolutions,
                                                     max_resolution=profile.image_size, log=log, **common)

    if "decode_limit" in only:
        res = max(profile.resolutions)
        log(f"decode limit (and the loader's parts at {res} px)")
        results["decode_limit"] = {
            "res": res,
            "loader_train": loader.measure_loader(data.beton_dir, res=res, mode="train", **common),
            "loader_crop_only": loader.measure_loader(data.beton_dir, res=res, mode="crop", **common),
            "ffcv_decode_only": loader.measure_loader(data.beton_dir, res=res, mode="decode", **common),
            "cv2_decode": decode_limit.measure_cv2_decode(data.beton_dir, workers=workers,
                                                          passes=profile.decode_passes),
            "device_decode": device_decode.measure_device_decode(data.beton_dir, res=res,
                                                                 batch_size=profile.batch_size,
                                                                 epochs=profile.loader_epochs, device=device)}

    if "train_step" in only:
        rows = []
        for case in profile.train:
            case_data = data.beton_dir
            if case.train_per_leaf:
                case_data = suite_data.build(data_root, preset=profile.preset, image_size=profile.image_size,
                                             train_per_leaf=case.train_per_leaf, workers=workers).beton_dir
            log(f"train step: {case.model} at {case.res} px, batch {case.batch_size}"
                f"{', data.resident' if case.resident else ''}")
            rows.append(train_step.measure_train_step(case_data, model=case.model, res=case.res,
                                                      batch_size=case.batch_size, workers=workers,
                                                      epochs=profile.train_epochs, device=device,
                                                      model_kwargs=case.model_kwargs or None,
                                                      resident=case.resident))
        results["train_step"] = rows

    if "conversion" in only:
        log("conversion of the JPEG folder (grainsweep convert csv)")
        results["conversion"] = conversion.measure_conversion(data.manifest, workers=workers,
                                                              runs=profile.conversion_runs,
                                                              max_resolution=profile.image_size)

    if "sweep_rerun" in only:
        log(f"sweep rerun ({profile.sweep_seeds} seed(s)) and warm vs cold compile cache")
        results["sweep_rerun"] = sweep_rerun.measure_sweep_rerun(
            data_root / "sweep-rerun", reruns=profile.sweep_reruns, compile_runs=profile.compile_runs,
            seeds=profile.sweep_seeds, all_levels=profile.sweep_all_levels, workers=min(workers, 2),
            device=device)

    if "distributed" in only:
        d = profile.distributed
        results["distributed"] = distributed.measure_distributed(
            data.beton_dir, model=d.train.model, res=d.train.res, batch_size=d.train.batch_size, workers=workers,
            epochs=d.epochs, world_sizes=d.world_sizes, runs=d.runs, device=device,
            model_kwargs=d.train.model_kwargs or None, log=log)

    if "fused" in only:
        results["fused"] = [fused.measure_case(case, suite_beton=data.beton_dir, data_root=data_root, device=device,
                                               workers=workers, log=log) for case in profile.fused]

    results["load_average_end"] = load_average()
    results["suite_seconds"] = time.perf_counter() - t_start
    return results


def merge(results: dict[str, Any], earlier: dict[str, Any], only: tuple[str, ...]) -> None:
    """Adds to `results` the benchmarks of an earlier run of the same device and profile that this run skipped."""
    # the settings both runs have must agree (a benchmark added since brings settings the earlier run lacks)
    now, then = json.loads(json.dumps(results["profile"])), earlier.get("profile", {})  # tuples became lists
    same_profile = bool(then) and all(then[k] == v for k, v in now.items() if k in then) and set(then) <= set(now)
    if earlier.get("device") != results["device"] or not same_profile:
        print("--merge: the earlier results are from another device or profile; not merged", file=sys.stderr)
        return
    results.update({k: earlier[k] for k in BENCHMARKS if k in earlier and k not in only})
    results["command"] = f"{earlier['command']} ; {results['command']}"
    results["load_average_start"] = earlier.get("load_average_start", results["load_average_start"])
    results["suite_seconds"] += earlier.get("suite_seconds", 0.0)


def write_report(path: Path, text: str) -> None:
    """Writes RESULTS.md, keeping the sections that scripts of their own splice into the file already there
    (benchmarks/gpu_all.py's GPU figures, benchmarks/fused_vmap.py's batching figures)."""
    from benchmarks import fused_vmap, gpu_all

    if path.is_file():
        old = path.read_text()
        for script in (gpu_all, fused_vmap):
            i, j = old.find(script.START), old.find(script.END)
            if 0 <= i < j:
                text = script.splice(text, old[i:j + len(script.END)])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repetition (for tests)")
    p.add_argument("--profile", choices=sorted(PROFILES), default=None,
                   help="settings of benchmarks/profiles.py (default: quick with --quick, else the device's)")
    p.add_argument("--workers", type=int, default=0, help="loader workers; 0 = the usable CPU cores")
    p.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {BENCHMARKS}")
    p.add_argument("--data-root", default=str(REPO / "data" / "bench"), help="where the suite's data is built")
    p.add_argument("--results", default=str(HERE / "RESULTS.md"), help="the Markdown report to write")
    p.add_argument("--json", default=str(HERE / "results.json"), help="every run's raw figures")
    p.add_argument("--render-only", action="store_true",
                   help="measure nothing: rewrite --results from the figures already in --json")
    p.add_argument("--merge", action="store_true",
                   help="keep the figures of --json that this run does not measure (same device and profile), "
                        "so the suite can be run in parts, e.g. under a per-command time limit")
    args = p.parse_args(argv)
    only = tuple(x.strip() for x in args.only.split(",") if x.strip())
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; choose from {BENCHMARKS}")
    if args.render_only:
        results = json.loads(Path(args.json).read_text())
        write_report(Path(args.results), render(results, results["command"], results.get("quick", False)))
        print(f"wrote {args.results} from {args.json}")
        return 0
    args.quick = args.quick or args.profile == "quick"
    profile = PROFILES[args.profile or ("quick" if args.quick else args.device)]
    workers = args.workers or default_workers()
    if args.quick:
        workers = min(workers, 2)
    os.environ.setdefault("TQDM_DISABLE", "1")  # the engine's progress bars would flood the log
    # libgomp's default spin-wait burns shared cores (RESULTS.md, real loader vs on-device data); libgomp reads
    # the variable when torch loads, so it is set only in a fresh process (python -m benchmarks.run, not pytest)
    torch_loaded = "torch" in sys.modules
    if args.device == "cpu" and not torch_loaded:
        os.environ.setdefault("GOMP_SPINCOUNT", str(CPU_GOMP_SPINCOUNT))
    omp = {"applied": not torch_loaded,
           **{k: os.environ.get(k) for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS")}}
    command = "python -m benchmarks.run" + ("" if not argv else " " + " ".join(argv))
    results = run_suite(device=args.device, profile=profile, workers=workers, data_root=Path(args.data_root),
                        only=only, log=lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True))
    results["command"] = command
    results["quick"] = args.quick
    results["omp"] = omp
    if args.merge and Path(args.json).is_file():
        merge(results, json.loads(Path(args.json).read_text()), only)
    command = results["command"]
    write_report(Path(args.results), render(results, command, args.quick))
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.results} and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
