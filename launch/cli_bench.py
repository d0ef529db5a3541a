"""`grainsweep bench loader`: speed of the project's loader alone; `grainsweep bench fused`: a seed's level runs
fused vs separate (benchmarks/fused.py). The whole suite is `make bench`.

Each prints a one-line summary, then, as its last line, one JSON object (the figures with their median and
spread over the measured epochs or repeats, the settings, versions, load average), so scripts can read
`... | tail -n 1`. The suite, `python -m benchmarks.run`, is not a sub-command: it is a development tool of a
checkout and writes benchmarks/RESULTS.md there (benchmarks/ is installed with the package, so `bench loader`
imports it like core and launch).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: the loader alone, fused pretraining (the suite: make bench)",
                       description="Speed measurements; the whole suite is 'make bench' "
                                   "(python -m benchmarks.run), see benchmarks/RESULTS.md.")
    kinds = p.add_subparsers(dest="bench_kind", required=True, metavar="KIND")
    ld = kinds.add_parser("loader", help="images/s of the loader alone (decode + crop + device stage)",
                          description="Iterates DIR/train.beton for --epochs epochs through the training "
                                      "loader and the device stage; the first epoch (compiles, page cache) "
                                      "is not counted. The last line printed is a JSON object.")
    ld.add_argument("--data", required=True, help="dataset folder written by 'grainsweep convert'")
    ld.add_argument("--res", type=int, default=224, help="crop side in pixels (default 224)")
    ld.add_argument("--workers", type=int, default=2, help="ffcv decode threads (default 2)")
    ld.add_argument("--batch-size", type=int, default=256, help="images per batch (default 256)")
    ld.add_argument("--epochs", type=int, default=4, help="epochs to run, the first not counted (default 4)")
    ld.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the device stage runs")
    ld.add_argument("--mode", choices=["train", "val", "crop", "decode"], default="train",
                    help="train: random crops + device stage (default); val: centre crop + device stage; "
                         "crop: random crops, no device stage; decode: ffcv's full-size decode only (images of "
                         "mixed sizes: then the centre square resized to --res)")
    ld.add_argument("--compile", choices=["auto", "always", "never"], default="auto",
                    help="torch.compile the device stage (auto: on CUDA only, as 'grainsweep train')")
    ld.add_argument("--seed", type=int, default=0)
    ld.set_defaults(run=run_loader)
    fu = kinds.add_parser("fused", help="a seed's level runs fused (one loader) vs one after another",
                          description="Wall time of the pretraining runs at several levels (only data.level "
                                      "differs), fused (core.train.fused.run_fused) and separate "
                                      "(core.train.run.run each), --repeats times each after one warm-up of each "
                                      "at one epoch. The last line printed is a JSON object.")
    fu.add_argument("--data", required=True, help="dataset folder written by 'grainsweep convert'")
    fu.add_argument("--levels", default="", help="comma-separated levels (default: the 3 finest)")
    fu.add_argument("--repeats", type=int, default=3, help="measured repeats of each side (default 3)")
    fu.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="skip the uncounted one-epoch run of each side (for quick checks)")
    fu.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="run setting, as 'grainsweep train --set' (e.g. model.name=bmlp, data.resolution=64)")
    fu.set_defaults(run=run_fused)


def run_loader(args: argparse.Namespace) -> int:
    if args.epochs < 2:
        print("grainsweep bench: error: --epochs must be >= 2 (the first epoch is warm-up and not counted)",
              file=sys.stderr)
        return 2
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("grainsweep bench: error: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    data = Path(args.data)
    if not (data / "train.beton").is_file():
        raise FileNotFoundError(f"{data}: no train.beton (write one with 'grainsweep convert')")
    from benchmarks.loader import measure_loader

    result = measure_loader(data, res=args.res, workers=args.workers, batch_size=args.batch_size,
                            epochs=args.epochs, device=args.device, mode=args.mode, compile=args.compile,
                            seed=args.seed)
    s = result["images_per_second_stats"]
    print(f"loader ({args.mode}, {args.res} px, {args.workers} workers, batch {args.batch_size}, {args.device}): "
          f"{s['median']:,.0f} img/s median over {len(s['runs'])} epochs (min {s['min']:,.0f}, "
          f"max {s['max']:,.0f}); load average {result['load_average']['after']}", flush=True)
    print(json.dumps(result), flush=True)
    return 0



def run_fused(args: argparse.Namespace) -> int:
    from benchmarks.fused import bench_command, measure_fused
    from core.format import config as cfglib
    from core.train.run_config import RunConfig

    if args.repeats < 1:
        print("grainsweep bench: error: --repeats must be >= 1", file=sys.stderr)
        return 2
    data = Path(args.data)
    if not (data / "train.beton").is_file():
        raise FileNotFoundError(f"{data}: no train.beton (write one with 'grainsweep convert')")
    levels = [lv.strip() for lv in args.levels.split(",") if lv.strip()] or None
    base = cfglib.load(RunConfig, None, args.set)
    result = measure_fused(data, base, levels=levels, repeats=args.repeats, warmup=args.warmup,
                           command=bench_command(data, args.set, levels, args.repeats, args.warmup),
                           log=lambda msg: print(msg, file=sys.stderr, flush=True))
    sep, fus = result["separate_seconds"], result["fused_seconds"]
    print(f"{len(result['levels'])} levels ({', '.join(result['levels'])}): separate {sep['median']:.1f} s "
          f"({sep['min']:.1f}-{sep['max']:.1f}), fused {fus['median']:.1f} s ({fus['min']:.1f}-{fus['max']:.1f}), "
          f"{result['speedup']:.2f}x over {args.repeats} repeat(s); load average {result['load_average']['after']}",
          flush=True)
    print(json.dumps(result), flush=True)
    return 0
