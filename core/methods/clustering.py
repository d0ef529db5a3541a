"""Clustering evaluation of frozen features (Adaloglou et al. 2024, "Scaling Up Deep Clustering Methods Beyond
ImageNet-1K"): k-means with as many clusters as a level has classes, scored against that level's labels.

Scores, each 1 for a clustering that is the classes exactly (up to renaming the clusters):
    nmi - normalised mutual information (sklearn, arithmetic mean of the entropies); about 0 for a random
          clustering, but biased upwards when clusters are few samples each.
    ari - adjusted Rand index: pair-counting agreement corrected for chance, so 0 = chance (can be < 0).
    acc - cluster accuracy: the fraction of samples whose cluster is matched to their class under the best
          one-to-one matching of clusters to classes (Hungarian algorithm on the cluster x class count matrix,
          scipy.optimize.linear_sum_assignment). Not chance-corrected: a random clustering scores above 1/k.
Pure numpy / scipy / scikit-learn; no torch.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from core.format import kmeans as kmeans_lib
from core.format.kmeans import MINIBATCH_ABOVE, N_INIT  # the defaults of cluster_metrics below


def contingency(labels: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """int64 (clusters, classes) count matrix; both inputs relabelled to 0..n-1 by their sorted distinct values."""
    labels, clusters = np.asarray(labels).reshape(-1), np.asarray(clusters).reshape(-1)
    if labels.shape != clusters.shape:
        raise ValueError(f"labels and clusters differ in length: {labels.shape[0]} vs {clusters.shape[0]}")
    _, y = np.unique(labels, return_inverse=True)
    _, c = np.unique(clusters, return_inverse=True)
    counts = np.zeros((int(c.max(initial=-1)) + 1, int(y.max(initial=-1)) + 1), dtype=np.int64)
    np.add.at(counts, (c, y), 1)
    return counts


def hungarian_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Fraction of samples whose cluster is matched to their class, under the best one-to-one matching.

    With more clusters than classes the extra clusters match nothing (their samples count as wrong); with fewer,
    the extra classes do. Cluster and class ids need not be contiguous.
    """
    counts = contingency(labels, clusters)
    if counts.size == 0:
        raise ValueError("hungarian_accuracy: no samples")
    rows, cols = linear_sum_assignment(counts, maximize=True)  # rectangular: min(#clusters, #classes) pairs
    return float(counts[rows, cols].sum() / counts.sum())


def l2_normalise(features: np.ndarray) -> np.ndarray:
    """Each row divided by its Euclidean norm (a zero row stays zero); float64."""
    f = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.maximum(norms, 1e-12)


def kmeans(features: np.ndarray, k: int, seed: int, n_init: int = N_INIT,
           minibatch_above: int = MINIBATCH_ABOVE) -> np.ndarray:
    """int64 (N,) cluster of each row (core.format.kmeans.fit: k-means++, `n_init` restarts, fixed `seed`)."""
    model = kmeans_lib.fit(features, k, seed, n_init, minibatch_above, what=f"{len(features)} feature rows")
    return model.labels_.astype(np.int64)


def scores(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """{"nmi", "ari", "acc"} of a clustering against the labels (see the module docstring)."""
    return {"nmi": float(normalized_mutual_info_score(labels, clusters)),
            "ari": float(adjusted_rand_score(labels, clusters)),
            "acc": hungarian_accuracy(labels, clusters)}


def cluster_metrics(features: np.ndarray, labels_by_level: Mapping[str, np.ndarray],
                    num_classes_by_level: Mapping[str, int], seed: int = 0, n_init: int = N_INIT,
                    minibatch_above: int = MINIBATCH_ABOVE) -> dict[str, dict[str, float]]:
    """{level: {"nmi", "ari", "acc"}}: k-means on `features` (N, D) with k = the level's class count, scored
    against the level's labels (int (N,), all >= 0).

    The features are L2-normalised first (each row divided by its norm), so k-means groups by direction
    (cosine similarity), the usual choice for frozen deep features; pooled activations differ in scale from
    image to image. Levels with the same class count share one k-means run.
    """
    features = np.asarray(features)
    if features.ndim != 2 or not len(features):
        raise ValueError(f"features must be a non-empty (N, D) array, got shape {features.shape}")
    missing = sorted(set(labels_by_level) - set(num_classes_by_level))
    if missing:
        raise ValueError(f"no class count for level(s) {missing}")
    x = l2_normalise(features)
    by_k: dict[int, np.ndarray] = {}
    out = {}
    for level, labels in labels_by_level.items():
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != features.shape[0]:
            raise ValueError(f"level {level!r}: {labels.shape[0]} labels for {features.shape[0]} feature rows")
        if labels.min() < 0:
            raise ValueError(f"level {level!r}: negative labels (samples without a class)")
        k = int(num_classes_by_level[level])
        if k not in by_k:
            by_k[k] = kmeans(x, k, seed, n_init, minibatch_above)
        out[level] = scores(labels, by_k[k])
    return out
