"""The one k-means of grainsweep: k-means++ with a fixed seed, MiniBatchKMeans on large sets.

It lives in core.format, not core.methods, because derived hierarchies (`grainsweep derive kmeans`) are part of
the dataset format, and data_tools may import only core.format; the clustering evaluation of frozen features
(core/methods/clustering.py) uses the same function, so both agree on restarts and on when to go mini-batch.
"""

from __future__ import annotations

import numpy as np

N_INIT = 3  # k-means++ restarts; the lowest-inertia one is kept (deterministic for a given seed)
MINIBATCH_ABOVE = 50_000  # samples above which MiniBatchKMeans replaces KMeans (memory and time)
MINIBATCH_SIZE = 4096  # samples per MiniBatchKMeans step


class KMeansError(ValueError):
    """k-means cannot be run as asked (more clusters than samples, no samples); the message says why."""


def fit(x: np.ndarray, k: int, seed: int, n_init: int = N_INIT, minibatch_above: int = MINIBATCH_ABOVE,
        what: str = "the features"):
    """A fitted scikit-learn (MiniBatch)KMeans with exactly `k` clusters on the rows of `x` (N, D).

    More clusters than samples is refused (KMeansError naming `what`), never silently reduced: a level named for
    k must have k clusters.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans  # seconds of import, only when clustering

    n = len(x)
    if k < 1 or n < 1:
        raise KMeansError(f"k-means on {what}: needs k >= 1 and at least one sample, got k={k} and {n} samples")
    if k > n:
        raise KMeansError(f"k-means on {what}: k={k} clusters but only {n} samples; choose k <= {n}")
    if n > minibatch_above:
        model = MiniBatchKMeans(n_clusters=k, n_init=n_init, random_state=seed, batch_size=MINIBATCH_SIZE)
    else:
        model = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
    return model.fit(x)
