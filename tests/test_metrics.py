"""Multi-level accuracy against a brute-force computation with explicit loops."""

import numpy as np
import pytest
import torch

from core.format.hierarchy import Hierarchy
from core.train.metrics import LevelAccuracy, coarse_probs

NAMES = ["leaf", "genus", "family", "kingdom"]


def random_hierarchy(seed: int, sizes=(13, 7, 3, 2)) -> Hierarchy:
    """A random nested hierarchy: each class of a level gets a random parent, every parent at least one child."""
    rng = np.random.default_rng(seed)
    parents = []
    for fine, coarse in zip(sizes, sizes[1:]):
        p = np.concatenate([np.arange(coarse), rng.integers(0, coarse, fine - coarse)])
        parents.append(rng.permutation(p))
    paths = []
    for leaf in range(sizes[0]):
        c, path = leaf, [(f"{NAMES[0]}{leaf}", f"t{leaf}")]
        for i, p in enumerate(parents):
            c = int(p[c])
            path.append((f"{NAMES[i + 1]}{c}", f"t{c}"))
        paths.append(path)
    return Hierarchy.from_leaf_paths(NAMES[: len(sizes)], paths)


def brute_force(logits, leaves, hier, level, hard):
    """Loops over samples and classes; coarse probability = sum of fine probabilities under the class."""
    probs = torch.softmax(logits.double(), 1).numpy()
    lv = hier.index(level)
    fine_classes = hier.levels[lv].num_classes
    fine_of_leaf = hier.leaf_map(level)
    out, n_hard = {}, int(sum(hard))
    for name in hier.names[lv:]:
        leaf_to = hier.leaf_map(name)
        c = hier.level(name).num_classes
        hits = {1: [], 5: []}
        for b in range(len(leaves)):
            scores = [0.0] * c
            for f in range(fine_classes):
                # the coarse class of fine class f: any leaf under f tells it
                leaf = next(j for j in range(hier.num_leaves) if fine_of_leaf[j] == f)
                scores[leaf_to[leaf]] += probs[b, f]
            target = leaf_to[leaves[b]]
            rank = sum(1 for s in scores if s > scores[target])  # classes strictly ahead of the target
            for k in (1, 5):
                hits[k].append(rank < k)
        for k in (1, 5):
            out[f"acc{k}/{name}"] = sum(hits[k]) / len(leaves)
            if n_hard:
                out[f"acc{k}_hard/{name}"] = sum(h for h, m in zip(hits[k], hard) if m) / n_hard
    ls = torch.log_softmax(logits.double(), 1).numpy()
    out["loss"] = -sum(ls[b, fine_of_leaf[leaves[b]]] for b in range(len(leaves))) / len(leaves)
    out["n"], out["n_hard"] = len(leaves), n_hard
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("level", ["leaf", "genus"])
def test_matches_brute_force(seed, level):
    hier = random_hierarchy(seed)
    g = torch.Generator().manual_seed(seed)
    n = 40
    leaves = torch.randint(0, hier.num_leaves, (n,), generator=g).numpy()
    logits = torch.randn(n, hier.level(level).num_classes, generator=g) * 2
    hard = (torch.rand(n, generator=g) < 0.4).numpy()
    labels = {k: torch.as_tensor(v) for k, v in hier.labels(leaves).items()}

    acc = LevelAccuracy(hier, level)
    # in uneven batches, with labels of some coarse levels left out (derived through the hierarchy)
    for lo, hi in [(0, 7), (7, 25), (25, n)]:
        part = {k: v[lo:hi] for k, v in labels.items() if k != "family"}
        acc.update(logits[lo:hi], part, hard=torch.as_tensor(hard[lo:hi]))
    got = acc.compute()
    want = brute_force(logits, leaves, hier, level, hard)
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-6), key
    # top-5 over 2 or 3 classes is clipped to all classes: always right
    assert got["acc5/kingdom"] == 1.0 and got["acc5/family"] == 1.0


def test_coarse_probs_sum_and_no_hard():
    hier = random_hierarchy(5)
    parent = torch.as_tensor(hier.parent_map("leaf", "family"))
    p = torch.softmax(torch.randn(4, hier.num_leaves), 1)
    q = coarse_probs(p, parent, hier.level("family").num_classes)
    assert torch.allclose(q.sum(1), torch.ones(4))
    acc = LevelAccuracy(hier, "leaf")
    leaves = np.arange(hier.num_leaves)
    acc.update(torch.randn(len(leaves), hier.num_leaves), {"leaf": torch.as_tensor(leaves)})
    out = acc.compute()
    assert out["n"] == len(leaves) and out["n_hard"] == 0
    assert not any("_hard/" in k for k in out)
    # a given batch-mean loss replaces the plain cross-entropy, weighted by batch size
    acc.reset()
    for size, value in [(3, 2.0), (1, 6.0)]:
        acc.update(torch.randn(size, hier.num_leaves), {"leaf": torch.zeros(size, dtype=torch.long)},
                   loss=torch.tensor(value))
    assert acc.compute()["loss"] == pytest.approx((3 * 2.0 + 1 * 6.0) / 4)
    assert {f"acc1/{n}" for n in NAMES} <= set(out)
    acc.reset()
    with pytest.raises(ValueError):
        acc.compute()


def test_rejects_wrong_width_and_missing_level():
    hier = random_hierarchy(3)
    acc = LevelAccuracy(hier, "genus")
    with pytest.raises(ValueError):
        acc.update(torch.randn(2, hier.num_leaves), {"genus": torch.zeros(2, dtype=torch.long)})
    with pytest.raises(KeyError):
        acc.update(torch.randn(2, hier.level("genus").num_classes), {"leaf": torch.zeros(2, dtype=torch.long)})
