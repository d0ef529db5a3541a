"""Clustering evaluation of a finished run: k-means on its frozen val-set features at every hierarchy level.

The run's network (config.yaml + newest readable checkpoint, core.methods.features.loaded_run) embeds every image of the
dataset's val.beton (centre crop at the run's validation resolution, no flip, the run's precision); then
core.methods.clustering.cluster_metrics scores k-means with k = each level's class count against that level's labels
(NMI, ARI, Hungarian accuracy; features L2-normalised). The result is written atomically into the run folder:
`clustering.json` for the run's own dataset, `clustering-<dataset folder name>.json` for another `data`.
A sweep's clustering job (`cluster_into`) also writes it as result.json into its own run folder, which marks
the job done for reruns (core.format.run_folder).
"""

from __future__ import annotations

import json
from pathlib import Path

from core.device import resolve_device
from core.format import config as cfglib, hierarchy as hlib, kmeans, provenance
from core.format.run_folder import RunFolder
from core.methods import clustering
from core.methods.features import extract_beton, loaded_run
from core.train.run_config import RunConfig, RunConfigError

CLUSTERING_FILE = "clustering.json"


def output_path(run_dir: str | Path, data: str | Path | None = None) -> Path:
    """RUN/clustering.json for the run's own dataset, RUN/clustering-<dataset folder name>.json for another."""
    run_dir = Path(run_dir)
    own = cfglib.load(RunConfig, RunFolder(run_dir).require_config()).data.path
    if data is None or Path(data).resolve() == Path(own).resolve():
        return run_dir / CLUSTERING_FILE
    return run_dir / f"clustering-{Path(data).resolve().name}.json"


def cluster_run(run_dir: str | Path, data: str | Path | None = None, device: str | None = None, seed: int = 0,
                n_init: int = kmeans.N_INIT) -> dict:
    """Clusters the run's val-set features at every level of `data` (default: the run's dataset); writes and
    returns {"run", "checkpoint", "data", "samples", "feature_dim", "kmeans", "classes", "metrics"}, where
    metrics = {level: {"nmi", "ari", "acc"}}. `device`: cpu | cuda | auto; None = the run's train.device."""
    folder = RunFolder(run_dir)
    run_dir = folder.path
    cfg = cfglib.load(RunConfig, folder.require_config())
    data_dir = Path(data) if data is not None else Path(cfg.data.path)
    if data is None:
        folder.check_dataset(data_dir, explicit=False)
    if not (data_dir / "val.beton").is_file():
        raise RunConfigError(f"{data_dir}: no val.beton; is this a dataset folder written by 'grainsweep convert'?")
    h = hlib.load(data_dir)
    dev = resolve_device(device or cfg.train.device)
    model, cfg, last = loaded_run(run_dir, dev)

    # features: centre crops of every val image, in beton order, labels at every level
    feats = extract_beton(model, cfg, data_dir / "val.beton", h.names, dev, seed=cfg.train.seed,
                          desc=f"features {run_dir.name}")

    # k-means per level
    classes = {lv.name: lv.num_classes for lv in h.levels}
    too_many = [f"{lv} ({k})" for lv, k in classes.items() if k > len(feats)]
    if too_many:
        raise RunConfigError(f"{data_dir / 'val.beton'} has {len(feats)} images, fewer than the classes of level(s) "
                             f"{', '.join(too_many)}: k-means cannot make that many clusters")
    metrics = clustering.cluster_metrics(feats.features, feats.labels, classes, seed=seed, n_init=n_init)
    out = {"run": str(run_dir.resolve()), "checkpoint": last.name, "data": str(data_dir.resolve()),
           "samples": len(feats), "feature_dim": int(feats.features.shape[1]),
           "kmeans": {"seed": seed, "n_init": n_init, "features": "l2-normalised"},
           "classes": classes, "metrics": metrics}
    provenance.write_atomic(output_path(run_dir, data), json.dumps(out, indent=1) + "\n")
    return out


def cluster_into(source: str | Path, out_dir: str | Path, device: str | None = None, seed: int = 0) -> dict:
    """`cluster_run` on the run `source` (its own dataset), the result also written as `out_dir`/result.json."""
    result = cluster_run(source, device=device, seed=seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    provenance.write_atomic(RunFolder(out_dir).result_file, json.dumps(result, indent=1) + "\n")
    return result

