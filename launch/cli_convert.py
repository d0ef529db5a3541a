"""`grainsweep convert KIND [SRC] --out DIR`: write betons + hierarchy.json once."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from core.format import config as cfglib
from data_tools import convert_source, convert_synthetic, publish
from data_tools.sources import SOURCES
from data_tools.sources.catalog import SourceError

KINDS = ["synthetic", *SOURCES]

# flag -> (the kinds it applies to, dotted config key); the value is passed on as a `--set key=value`
SOURCE_FLAGS = {
    "cut": (("imagenet",), "imagenet.cut"),
    "levels": (("imagenet",), "imagenet.levels"),
    "val_per_class": (("imagenet",), "imagenet.val_per_class"),
    "train_json": (("inat2021",), "inat2021.train_json"),
    "val_json": (("inat2021",), "inat2021.val_json"),
    "val_csv": (("csv",), "csv.val_csv"),
    "max_rejects": (tuple(SOURCES), "convert.max_rejects"),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a dataset to FFCV betons with one label column per level",
                       description="Writes DIR/train.beton, DIR/val.beton and DIR/hierarchy.json. A second "
                                   "identical call returns at once; --force rewrites.")
    p.add_argument("kind", choices=KINDS, help="the source format")
    p.add_argument("src", nargs="?", help="the source folder or file (not used by 'synthetic')")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--preset", help=f"synthetic preset: {', '.join(convert_synthetic.presets())} "
                                    "(default: the built-in defaults, same as 'default')")
    p.add_argument("--config", help="YAML file with settings (applied after the preset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. synthetic.image_size=64 or write.write_mode=jpg (repeatable)")
    p.add_argument("--workers", type=int, help="processes for decoding and writing (output does not change)")
    p.add_argument("--max-rejects", type=int, help="rows allowed to be unreadable (default 0: any reject fails "
                                                   "and nothing is published); they are listed in DIR/rejects.csv")
    p.add_argument("--cut", choices=["hops", "depth", "num_classes"], help="imagenet: how WordNet levels are cut")
    p.add_argument("--levels", help="imagenet: comma-separated values of --cut, e.g. 1,2,3")
    p.add_argument("--val-per-class", type=int, help="imagenet without SRC/val: files per class held out as "
                                                     "val (the first ones in sorted order; default 50)")
    p.add_argument("--train-json", help="inat2021: train annotations under SRC (default train.json; "
                                        "train_mini.json for the mini set)")
    p.add_argument("--val-json", help="inat2021: val annotations under SRC (default val.json; '' for none)")
    p.add_argument("--val-csv", help="csv: manifest of the val split, same header as SRC")
    p.add_argument("--force", action="store_true", help="rewrite even if an identical conversion exists")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(run=run)


def source_overrides(args: argparse.Namespace) -> list[str]:
    """The kind-specific flags as dotted overrides, refusing a flag that does not apply to the kind."""
    out = []
    for flag, (kinds, key) in SOURCE_FLAGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if args.kind not in kinds:
            raise cfglib.ConfigError(f"--{flag.replace('_', '-')} applies to {', '.join(kinds)}, not {args.kind}")
        if flag == "levels":
            value = "[" + value + "]"
        elif flag == "val_csv":  # relative to the current folder, like SRC: recorded in full (the same file
            value = repr(str(Path(value).expanduser().resolve()) if value else "")  # from elsewhere, same inputs)
        elif flag in ("train_json", "val_json"):
            value = repr(value)  # a YAML string, whatever it looks like
        out.append(f"{key}={value}")
    if args.workers is not None:
        out.append(f"convert.workers={args.workers}")
    return out


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    try:
        out, built = convert(args)
    except (SourceError, convert_source.RejectsError, publish.DiskFullError) as e:
        # the user's input or disk: one message, no traceback
        print(f"grainsweep convert: error: {e}", file=sys.stderr)
        return 2
    if out is None:  # --print-config
        return 0
    if built:
        print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    else:
        print(f"{out} is up to date (same inputs and options); use --force to rewrite")
    return 0


def convert(args: argparse.Namespace):
    """(folder, whether it was built); (None, False) after --print-config."""
    if args.kind == "synthetic":
        if args.src:
            raise cfglib.ConfigError("'convert synthetic' takes no SRC; its settings come from --preset/--set")
        extra = [f"workers={args.workers}"] if args.workers is not None else []
        if any(getattr(args, f) is not None for f in SOURCE_FLAGS):
            raise cfglib.ConfigError("'convert synthetic' takes only --preset, --config, --set and --workers")
        cfg = convert_synthetic.load_config(args.preset, args.config, [*args.overrides, *extra])
        if args.print_config:
            print(cfglib.to_yaml(cfg), end="")
            return None, False
        return convert_synthetic.convert(args.out, cfg, force=args.force)
    if args.preset:
        raise cfglib.ConfigError("--preset applies to 'synthetic' only")
    cfg = convert_source.load_config(args.kind, args.config, [*source_overrides(args), *args.overrides])
    if args.print_config:
        print(cfglib.to_yaml(cfg), end="")
        return None, False
    if not args.src:
        raise cfglib.ConfigError(f"'convert {args.kind}' needs SRC, the source folder or file")
    result = convert_source.convert(args.kind, args.src, args.out, cfg, force=args.force)
    return result.out, result.built
