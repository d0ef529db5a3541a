"""`grainsweep derive KIND DIR`: add a derived label level (k-means, random groups, per-sample) to a dataset.

The labellings are made by data_tools/derive.py and stored as sidecars (format: core/format/derived.py); a derived
level is then trained on like any other (`grainsweep train --level NAME`). With `--features RUN_DIR` the k-means
features are the run's `forward_features` (pooled penultimate features of its newest checkpoint, on centre
crops at the run's val resolution), computed here because data_tools does not import core's training code.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np

from core.format import config as cfglib


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("derive", help="add a derived label level (k-means, random groups, per-sample) to a dataset",
                       description="Writes DIR/derived/NAME.json (+ .npy label tables) and registers NAME in "
                                   "DIR/hierarchy.json; the betons are not rewritten. Rerunning the same "
                                   "derivation is a no-op; a name already in use is refused.")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")

    km = kinds.add_parser("kmeans", help="k-means clusters of image features (whole set, or within a level)")
    km.add_argument("dir", help="dataset folder")
    km.add_argument("--k", required=True, help="clusters, comma-separated for several levels, e.g. 8,32 (per "
                                               "class of --within when given)")
    km.add_argument("--within", metavar="LEVEL", help="cluster within each class of LEVEL (the result nests "
                                                      "under LEVEL: Hong et al.'s 'aligned' hierarchy)")
    km.add_argument("--features", default="pixels", metavar="pixels|RUN_DIR",
                    help="'pixels' (images downscaled to 8x8, default) or a run folder whose model embeds them")
    km.add_argument("--seed", type=int, default=0, help="k-means seed (default 0)")
    km.add_argument("--name", help="level name, '{k}' is replaced by k (default kmeans{k}[_in_LEVEL]_FEATURES)")
    km.add_argument("--device", default="auto", help="device for --features RUN_DIR (default: cuda if present)")

    rnd = kinds.add_parser("random", help="random grouping of the leaves into N near-equal groups (a control)")
    rnd.add_argument("dir", help="dataset folder")
    rnd.add_argument("--groups", type=int, required=True, help="number of groups")
    rnd.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    rnd.add_argument("--name", help="level name (default random{groups}_seed{seed})")

    ps = kinds.add_parser("per-sample", help="one class per training sample (pretraining only)")
    ps.add_argument("dir", help="dataset folder")
    ps.add_argument("--name", default="per_sample", help="level name (default per_sample)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from data_tools import derive

    if args.kind == "random":
        results = [derive.random_groups(args.dir, args.groups, seed=args.seed, name=args.name)]
    elif args.kind == "per-sample":
        results = [derive.per_sample(args.dir, name=args.name)]
    else:
        try:
            ks = [int(k) for k in args.k.split(",") if k.strip()]
        except ValueError:
            raise cfglib.ConfigError(f"--k takes comma-separated integers, got {args.k!r}") from None
        if not ks:
            raise cfglib.ConfigError("--k needs at least one value")
        if args.name and len(ks) > 1 and "{k}" not in args.name:
            raise cfglib.ConfigError("with several --k values, --name must contain '{k}'")
        if args.features == "pixels":
            features, tag = None, "pixels"
        else:
            features, tag = run_features(Path(args.features), Path(args.dir), args.device)
        results = [derive.kmeans(args.dir, k, within=args.within, features=features, feature_tag=tag,
                                 name=args.name.replace("{k}", str(k)) if args.name else None, seed=args.seed)
                   for k in ks]
    for r in results:
        print(f"{r.name}: {r.num_classes} classes " + ("written" if r.written else "already there (no-op)"))
    return 0


def run_features(run_dir: Path, data_dir: Path, device: str):
    """(features callable split -> (index, (N, D) float32), tag): the run's embedding of each split's images.

    The run's newest readable checkpoint is loaded now (the tag names the one actually loaded: a damaged newest
    file is skipped, core.train.checkpoint.load_newest); the features are computed lazily (only when the
    derivation is not already on disk) and once per split.
    """
    from core.device import resolve_device
    from core.format.beton_file import beton_columns
    from core.methods.features import extract_beton, loaded_run

    dev = resolve_device(device)
    model, cfg, last = loaded_run(run_dir, dev)  # any run: single- or multi-level, with or without a selection head
    tag = f"run-{run_dir.resolve().name}-{last.stem}"

    @functools.cache
    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        beton = data_dir / f"{split}.beton"
        label = next(c for c in beton_columns(beton) if c not in ("image", "index"))  # any int column: unused
        f = extract_beton(model, cfg, beton, [label], dev, extra_columns=("index",), desc=f"features {run_dir.name}")
        return f.index, f.features

    return features, tag
