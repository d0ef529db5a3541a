"""`grainsweep convert KIND [SRC] --out DIR`: write betons + hierarchy.json once."""

from __future__ import annotations

import argparse
import time

from core import config as cfglib
from data_tools import convert_synthetic

KINDS = ["synthetic"]


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
    p.add_argument("--force", action="store_true", help="rewrite even if an identical conversion exists")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.kind == "synthetic":
        if args.src:
            raise cfglib.ConfigError("'convert synthetic' takes no SRC; its settings come from --preset/--set")
        cfg = convert_synthetic.load_config(args.preset, args.config, args.overrides)
        if args.print_config:
            print(cfglib.to_yaml(cfg), end="")
            return 0
        t0 = time.perf_counter()
        out, built = convert_synthetic.convert(args.out, cfg, force=args.force)
    else:  # pragma: no cover - argparse restricts kinds
        raise cfglib.ConfigError(f"unknown kind {args.kind!r}")
    if built:
        print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    else:
        print(f"{out} is up to date (same inputs and options); use --force to rewrite")
    return 0
