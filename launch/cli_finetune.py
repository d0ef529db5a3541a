"""`grainsweep finetune`: transfer a finished run to a (coarser) target level: full fine-tuning, an SGD-trained
linear head, or a converged linear probe on cached frozen features (--mode probe, core/methods/probe.py);
optionally with selected pretraining data (--select-k, core/methods/select_transfer.py)."""

from __future__ import annotations

import argparse
import json

from core.train.run_config import TRANSFER_MODES
from launch import spawn

PROBE = "probe"  # core.methods.probe.PROBE_MODE (not imported here: the CLI's parser loads no torch)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="transfer a run to a target level (full fine-tuning or linear probe)",
                       description="Builds RUN's model from its config.yaml, loads its newest checkpoint, puts a "
                                   "new head for --level's classes on it and trains on --data (default: RUN's "
                                   "dataset). --mode linear trains only the head on frozen features; --mode "
                                   "probe computes RUN's frozen features once (cached in --out) and solves an "
                                   "L2 logistic regression to convergence, its C chosen on a held-out part of "
                                   "the train split. The "
                                   "settings are RUN's, changed by --set; outputs as for 'grainsweep train', plus "
                                   "transfer.json naming the source. --select-k K also trains a second head on "
                                   "the images of the K pretraining classes closest to the target classes "
                                   "(unbalanced optimal transport of class-mean features, Liu et al. 2022), "
                                   "recorded in selection.json.")
    p.add_argument("--from", dest="source", required=True, metavar="RUN", help="pretraining run folder")
    p.add_argument("--data", help="target dataset folder (sets data.path; default: RUN's dataset)")
    p.add_argument("--level", required=True, help="target label level (sets data.level)")
    p.add_argument("--mode", choices=(*TRANSFER_MODES, PROBE), default="full",
                   help="full: fine-tune every weight; linear: train a new head on frozen features by SGD; probe: "
                        "converged logistic regression on frozen features (C chosen on held-out train data)")
    p.add_argument("--out", required=True, help="run folder for the transfer")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override of RUN's settings, e.g. train.epochs=5 (repeatable)")
    p.add_argument("--select-k", type=int, default=0, metavar="K",
                   help="add the images of K pretraining classes chosen by optimal transport (0 = off)")
    p.add_argument("--select-lambda", type=float, metavar="L",
                   help="weight of the selected images' loss: loss = L_target + L * L_selected (default 0.3, "
                        "core.methods.select_transfer.SelectConfig)")
    p.add_argument("--select-batch-size", type=int, metavar="N",
                   help="selected images per step (default: data.batch_size)")
    p.add_argument("--resume", action="store_true", help="continue the transfer in --out from its last checkpoint")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    spawn.add_argument(p)  # (--mode probe runs in one process: its work is one solve on cached features)
    p.set_defaults(run=run_finetune)


def run_finetune(args: argparse.Namespace) -> int:
    from core.format import config as cfglib
    from core.methods import select_transfer
    from core.train import transfer

    from core.train.run_config import RunConfig

    cfg = transfer.transfer_config(args.source, args.data, args.level)
    if args.overrides:  # user text becomes config here only; core takes the typed result
        cfg = cfglib.load(RunConfig, None, args.overrides, base=cfglib.to_dict(cfg))
    if args.print_config:
        print(cfglib.to_yaml(cfg), end="")
        return 0
    if args.mode == PROBE:
        if args.nproc > 1:
            raise cfglib.ConfigError(f"--nproc {args.nproc}: --mode probe runs in one process (one solve on "
                                     "cached features)")
        if args.select_k or args.select_lambda is not None or args.select_batch_size is not None:
            raise cfglib.ConfigError("--select-k/--select-lambda/--select-batch-size train a network; --mode probe "
                                     "trains none")
        from core.methods.probe import probe

        print(json.dumps(probe(args.source, cfg, args.out, resume=args.resume), indent=1))
        return 0
    if spawn.wanted(args):
        return spawn.launch(args)
    given = {"k": args.select_k, "lam": args.select_lambda, "batch_size": args.select_batch_size}
    if args.select_k == 0 and (args.select_lambda is not None or args.select_batch_size is not None):
        raise cfglib.ConfigError("--select-lambda and --select-batch-size need --select-k K > 0")
    select = select_transfer.SelectConfig(**{k: v for k, v in given.items() if v is not None})
    result = select_transfer.finetune_selected(args.source, cfg, args.out, select, mode=args.mode,
                                               resume=args.resume)
    if spawn.is_main():
        print(json.dumps(result, indent=1))
    return 0
