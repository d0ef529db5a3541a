"""Clustering evaluation (core/methods/clustering.py, core/methods/cluster_run.py, `grainsweep cluster`): Hungarian accuracy against
brute force, the scores of perfect and of well-separated clusterings, and a real run's clustering.json equal to a
recomputation from its extracted features."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.methods import clustering
from core.format import config as cfglib
from core.format import hierarchy as hlib
from core.train import run as train_run
from core.train.run_config import RunConfig
from launch.cli import main as cli


# Hungarian accuracy
def brute_force_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Best accuracy over every injective map from the smaller of (clusters, classes) into the larger."""
    cs, ys = np.unique(clusters), np.unique(labels)
    best = 0.0
    if len(cs) <= len(ys):
        for image in itertools.permutations(ys, len(cs)):
            f = dict(zip(cs, image))  # cluster -> class
            best = max(best, float(np.mean([f[c] == y for c, y in zip(clusters, labels)])))
    else:
        for image in itertools.permutations(cs, len(ys)):
            g = dict(zip(ys, image))  # class -> cluster
            best = max(best, float(np.mean([g[y] == c for c, y in zip(clusters, labels)])))
    return best


@pytest.mark.parametrize("n_clusters, n_classes", [(1, 1), (3, 3), (4, 4), (2, 5), (5, 2), (3, 6), (6, 3), (1, 4)])
def test_hungarian_accuracy_equals_brute_force(n_clusters, n_classes):
    rng = np.random.default_rng(100 * n_clusters + n_classes)
    for _ in range(12):
        n = int(rng.integers(1, 30))
        labels = rng.integers(0, n_classes, n)
        clusters = rng.integers(0, n_clusters, n)
        # ids need not be contiguous: shift and stretch them
        labels, clusters = labels * 3 + 7, clusters * 5 - 2
        assert clustering.hungarian_accuracy(labels, clusters) == pytest.approx(
            brute_force_accuracy(labels, clusters), abs=1e-12)


def test_hungarian_accuracy_small_cases_by_hand():
    # 2 clusters, 3 classes: cluster 0 = {a, a, b}, cluster 1 = {c}; best: 0->a, 1->c = 3/4
    assert clustering.hungarian_accuracy(np.array([0, 0, 1, 2]), np.array([0, 0, 0, 1])) == 0.75
    # 3 clusters for 2 classes: one cluster is left unmatched
    assert clustering.hungarian_accuracy(np.array([0, 0, 1, 1]), np.array([0, 1, 2, 2])) == 0.75
    with pytest.raises(ValueError, match="differ in length"):
        clustering.hungarian_accuracy(np.array([0, 1]), np.array([0]))


def test_perfect_clustering_scores_one():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 200)
    clusters = np.array([3, 0, 4, 1, 2])[labels] + 10  # renamed clusters
    assert clustering.scores(labels, clusters) == {"nmi": pytest.approx(1.0), "ari": pytest.approx(1.0),
                                                   "acc": 1.0}


# k-means on synthetic features
def blobs(seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """8 fine blobs in 2 coarse groups, separated by direction (what survives L2 normalisation); 40 points each,
    each point scaled by a random positive factor (the normalisation must make that irrelevant)."""
    rng = np.random.default_rng(seed)
    d = 32
    coarse_dirs = np.eye(d)[:2] * 3.0  # two orthogonal coarse directions
    fine = rng.integers(0, 8, 320)
    offsets = rng.normal(size=(8, d))
    offsets[:, :2] = 0.0
    offsets = offsets / np.linalg.norm(offsets, axis=1, keepdims=True)  # each fine class its own direction
    centres = coarse_dirs[np.arange(8) // 4] + offsets
    x = centres[fine] + 0.05 * rng.normal(size=(len(fine), d))
    x *= rng.uniform(0.1, 10.0, size=(len(fine), 1))
    return x.astype(np.float32), {"fine": fine, "coarse": fine // 4}


def test_cluster_metrics_recovers_well_separated_blobs():
    x, labels = blobs()
    res = clustering.cluster_metrics(x, labels, {"fine": 8, "coarse": 2}, seed=0)
    assert set(res) == {"fine", "coarse"}
    for level in ("fine", "coarse"):
        for m in ("nmi", "ari", "acc"):
            assert res[level][m] == pytest.approx(1.0), (level, m, res)
    # same seed, same numbers; the MiniBatchKMeans branch (large data) recovers the blobs too
    assert clustering.cluster_metrics(x, labels, {"fine": 8, "coarse": 2}, seed=0) == res
    mb = clustering.cluster_metrics(x, labels, {"fine": 8, "coarse": 2}, seed=0, minibatch_above=10)
    assert mb["coarse"]["acc"] == pytest.approx(1.0) and mb["fine"]["acc"] > 0.9


def test_cluster_metrics_random_labels_near_chance():
    x, labels = blobs(1)
    rng = np.random.default_rng(12345)  # not blobs' generator: its first draw is the fine labels
    res = clustering.cluster_metrics(x, {"random": rng.integers(0, 8, len(x))}, {"random": 8}, seed=0)
    assert abs(res["random"]["ari"]) < 0.05 and res["random"]["nmi"] < 0.1


def test_cluster_metrics_bad_input():
    x, labels = blobs()
    with pytest.raises(ValueError, match="no class count"):
        clustering.cluster_metrics(x, labels, {"fine": 8})
    with pytest.raises(ValueError, match="labels for"):
        clustering.cluster_metrics(x[:10], labels, {"fine": 8, "coarse": 2})
    with pytest.raises(ValueError, match="negative"):
        clustering.cluster_metrics(x, {"fine": labels["fine"] - 1}, {"fine": 8})
    with pytest.raises(ValueError, match="k=8 clusters but only 5 samples"):
        clustering.cluster_metrics(x[:5], {"fine": labels["fine"][:5]}, {"fine": 8})


# a real run
@pytest.fixture(scope="module")
def run_dir(tiny_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cluster") / "run"
    cfg = cfglib.load(RunConfig, None, [
        f"data.path={tiny_dataset}", "data.level=subclass", "data.resolution=16", "data.batch_size=16",
        "data.workers=1", "model.name=bmlp", "model.kwargs={depth: 1, width: 32}", "model.compile=never",
        "optim.name=adamw", "optim.lr=0.003", "train.epochs=1", "train.device=cpu"])
    train_run.run(cfg, out)
    return out


def recompute(run: Path, data: Path) -> dict:
    """The metrics from scratch: features extracted here, then cluster_metrics."""
    import torch

    from core.data.augment import GpuAugment
    from core.methods.features import extract, run_model
    from core.data.loader import build_loader

    h = hlib.load(data)
    model, cfg = run_model(run, "cpu")
    # batches of 7: more batches than ffcv's ring buffer has slots, so labels kept as views would be overwritten
    loader = build_loader(data / "val.beton", split="val", batch_size=7, num_workers=1, levels=h.names,
                          resolution=cfg.data.resolution, order="sequential", os_cache=True, distributed=False,
                          drop_last=False, seed=0, device="cpu")
    feats = extract(model, loader, GpuAugment(device="cpu", dtype=torch.float32, flip=False, compile=False))
    assert len(feats) == 48  # every val image of the tiny preset
    return clustering.cluster_metrics(feats.features, feats.labels,
                                      {lv.name: lv.num_classes for lv in h.levels}, seed=0)


def test_cluster_cli_writes_clustering_json(run_dir, tiny_dataset, capsys):
    assert cli(["cluster", str(run_dir), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "NMI" in out and "clustering.json" in out
    res = json.loads((run_dir / "clustering.json").read_text())
    h = hlib.load(tiny_dataset)
    assert list(res["metrics"]) == h.names and res["classes"] == {lv.name: lv.num_classes for lv in h.levels}
    assert res["samples"] == 48 and res["feature_dim"] == 32 and res["checkpoint"] == "epoch0001.pt"
    for level, m in res["metrics"].items():
        assert 0.0 <= m["nmi"] <= 1.0 and -1.0 <= m["ari"] <= 1.0 and 0.0 < m["acc"] <= 1.0, (level, m)
    direct = recompute(run_dir, tiny_dataset)
    for level in h.names:
        for m in ("nmi", "ari", "acc"):
            assert res["metrics"][level][m] == pytest.approx(direct[level][m], abs=1e-6), (level, m)


def test_cluster_other_data(run_dir, tiny_dataset, tmp_path, capsys):
    # a copy of the dataset under another name: same images, so the same numbers, in clustering-<name>.json
    other = tmp_path / "copy"
    shutil.copytree(tiny_dataset, other)
    own = json.loads((run_dir / "clustering.json").read_text()) if (run_dir / "clustering.json").is_file() else None
    assert cli(["cluster", str(run_dir), "--data", str(other), "--device", "cpu"]) == 0
    assert "clustering-copy.json" in capsys.readouterr().out
    res = json.loads((run_dir / "clustering-copy.json").read_text())
    assert res["data"] == str(other.resolve()) and res["samples"] == 48
    if own is None:  # run on its own (-k): the test above wrote no clustering.json
        own = {"metrics": recompute(run_dir, tiny_dataset)}
    assert res["metrics"] == own["metrics"]


def test_cluster_user_errors(run_dir, tmp_path, capsys):
    # one line, exit 2
    assert cli(["cluster", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("grainsweep cluster: error:") and "config.yaml" in err and "\n" not in err
    assert cli(["cluster", str(run_dir), "--data", str(tmp_path / "nope"), "--device", "cpu"]) == 2
    assert "val.beton" in capsys.readouterr().err
