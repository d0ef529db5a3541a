"""`grainsweep cluster RUN`: k-means on a finished run's frozen val-set features, scored at every level."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="clustering evaluation of a run's frozen features (NMI, ARI, ACC per level)",
                       description="Embeds every val image of --data (default: RUN's dataset) with RUN's newest "
                                   "checkpoint (pooled features, centre crop), L2-normalises the features, runs "
                                   "k-means with k = the class count of each hierarchy level and scores it "
                                   "against that level's labels: NMI, ARI and Hungarian-matched accuracy. "
                                   "Writes RUN/clustering.json (RUN/clustering-<dataset>.json for another "
                                   "--data).")
    p.add_argument("run_dir", metavar="RUN", help="run folder (config.yaml + checkpoints/)")
    p.add_argument("--data", help="dataset folder whose val.beton is clustered (default: RUN's dataset)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                   help="where features are computed (default: auto = cuda if available)")
    p.add_argument("--seed", type=int, default=0, help="k-means seed (default 0)")
    p.set_defaults(run=run)


def format_table(result: dict) -> str:
    """The metrics as a small text table, one line per level."""
    lines = [f"{'level':<16} {'classes':>7} {'NMI':>6} {'ARI':>6} {'ACC':>6}"]
    for level, m in result["metrics"].items():
        lines.append(f"{level:<16} {result['classes'][level]:>7} {m['nmi']:>6.3f} {m['ari']:>6.3f} "
                     f"{m['acc']:>6.3f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core.methods import cluster_run

    result = cluster_run.cluster_run(Path(args.run_dir), args.data, device=args.device, seed=args.seed)
    print(f"{result['samples']} val images of {result['data']}, {result['feature_dim']}-d features of "
          f"{result['checkpoint']}")
    print(format_table(result))
    print(f"wrote {cluster_run.output_path(args.run_dir, args.data)}")
    return 0
