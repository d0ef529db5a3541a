"""`grainsweep train` and `grainsweep eval`: one training run of core, and a re-evaluation of a finished one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.format import config as cfglib
from launch import spawn


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one model at one label level",
                       description="Trains on DIR's train.beton at --level and evaluates on val.beton at that "
                                   "level and every coarser one. Settings: core/train/run_config.py.")
    p.add_argument("--data", help="dataset folder (sets data.path)")
    p.add_argument("--level", help="label level to train on (sets data.level; default: the finest)")
    p.add_argument("--model", help="timm model name or 'bmlp' (sets model.name)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--config", help="YAML file with settings")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. train.epochs=3 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    spawn.add_argument(p)
    p.set_defaults(run=run_train)

    e = sub.add_parser("eval", help="evaluate a run's final weights on a dataset's val split")
    e.add_argument("run_dir", help="run folder written by 'grainsweep train'")
    e.add_argument("--data", help="dataset folder (default: the one the run trained on)")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the run's settings for evaluation, e.g. data.val_batch_size=64")
    e.set_defaults(run=run_eval)


def load_run_config(args: argparse.Namespace):
    """defaults -> --config -> --set -> --data/--level/--model; the flags' values are set typed, never parsed as
    YAML (a level named 'on' stays a string, a path with ' #' stays whole)."""
    from core.train.run_config import RunConfig

    cfg = cfglib.load(RunConfig, args.config, args.overrides)
    flags = {key: getattr(args, flag, None) for flag, key in (("data", "data.path"), ("level", "data.level"),
                                                               ("model", "model.name"))}
    return cfglib.with_values(cfg, {k: v for k, v in flags.items() if v is not None})


def run_train(args: argparse.Namespace) -> int:
    cfg = load_run_config(args)
    if args.print_config:
        print(cfglib.to_yaml(cfg), end="")
        return 0
    if spawn.wanted(args):  # the config was checked once here; each process resolves it again
        return spawn.launch(args)
    from core.train import run as train_run

    result = train_run.run(cfg, args.out, resume=args.resume)
    if spawn.is_main():
        print(json.dumps(result, indent=1))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from core.format.run_folder import RunFolder
    from core.train import evaluate as evaluate_run
    from core.train.run_config import RunConfig

    # --set changes the run's saved settings; parsed here, the one place user text becomes config
    cfg = cfglib.load(RunConfig, RunFolder(args.run_dir).require_config(), args.overrides) if args.overrides else None
    result = evaluate_run.evaluate_run(Path(args.run_dir), data=args.data, cfg=cfg)
    print(json.dumps(result, indent=1))
    return 0
