"""Multi-level evaluation: accuracy at the training level and at every coarser level of the hierarchy.

A model trained at level k predicts a coarser class by summing its softmax probabilities over the fine classes
under each coarse class (the marginal of the predicted distribution), not by mapping its argmax: the two differ
when the mass is spread over siblings. Accuracies are fractions in [0, 1]; "_hard" ones are over the samples
flagged hard (the hierarchical multi-view theory's samples with weak common features, Hong et al. 2303.16887).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from core.format.hierarchy import Hierarchy
from core.train.distributed import collective_device


def coarse_probs(probs: torch.Tensor, parent: torch.Tensor, num_coarse: int) -> torch.Tensor:
    """(B, C_fine) probabilities -> (B, num_coarse): each coarse class gets the sum over its fine classes."""
    out = probs.new_zeros(probs.shape[0], num_coarse)
    return out.index_add_(1, parent, probs)


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) bool: label among the k highest scores; k is clipped to the number of classes."""
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == labels[:, None]).any(dim=1)


class LevelAccuracy:
    """Accumulates top-k accuracy at `level` and every coarser level, plus the mean cross-entropy at `level`.

    Sums stay on the logits' device until compute(), so update() does not synchronise with the GPU.
    """

    def __init__(self, hierarchy: Hierarchy, level: str, topk: tuple[int, ...] = (1, 5)):
        i = hierarchy.index(level)
        self.level = level
        self.topk = tuple(topk)
        self.levels = hierarchy.names[i:]  # the training level, then coarser ones
        self.num_classes = {n: hierarchy.level(n).num_classes for n in self.levels}
        self._parent_np = {n: hierarchy.parent_map(level, n) for n in self.levels[1:]}
        self._parent: dict[str, torch.Tensor] = {}
        self.reset()

    def reset(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}  # metric key -> running sum (correct counts, loss, n)

    def _add(self, key: str, value: torch.Tensor) -> None:
        value = value.detach().to(torch.float64)
        self._sums[key] = self._sums[key] + value if key in self._sums else value

    def _parent_on(self, name: str, device: torch.device) -> torch.Tensor:
        t = self._parent.get(name)
        if t is None or t.device != device:
            t = self._parent[name] = torch.as_tensor(self._parent_np[name], device=device)
        return t

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: dict[str, torch.Tensor], hard: torch.Tensor | None = None,
               loss: torch.Tensor | None = None) -> None:
        """logits (B, C) at the training level; labels: class indices per level name (the training level's is
        required; a missing coarser level is derived from it through the hierarchy); hard: optional (B,) bool;
        loss: optional batch-mean loss to report instead of plain cross-entropy (e.g. the smoothed training
        loss), weighted by the batch size."""
        c = self.num_classes[self.level]
        if logits.ndim != 2 or logits.shape[1] != c:
            raise ValueError(f"expected logits (B, {c}) for level {self.level!r}, got {tuple(logits.shape)}")
        if self.level not in labels:
            raise KeyError(f"labels have no entry for the training level {self.level!r}; got {sorted(labels)}")
        logits = logits.float()
        dev = logits.device
        y = labels[self.level].to(dev, torch.int64)
        if hard is not None:
            hard = hard.to(dev, torch.bool)
            self._add("n_hard", hard.sum())
        self._add("n", torch.tensor(y.shape[0], device=dev))
        if loss is None:
            self._add("loss", F.cross_entropy(logits, y, reduction="sum"))
        else:
            self._add("loss", loss.to(dev) * y.shape[0])
        probs = logits.softmax(dim=1)
        for name in self.levels:
            if name == self.level:
                scores, target = logits, y  # same ranking as probs, and exact
            else:
                parent = self._parent_on(name, dev)
                scores = coarse_probs(probs, parent, self.num_classes[name])
                target = labels[name].to(dev, torch.int64) if name in labels else parent[y]
            for k in self.topk:
                ok = topk_correct(scores, target, k)
                self._add(f"acc{k}/{name}", ok.sum())
                if hard is not None:
                    self._add(f"acc{k}_hard/{name}", (ok & hard).sum())

    def all_reduce(self) -> None:
        """Sums the running totals over processes (every rank calls it before compute(); a no-op with one).

        A rank that saw no batch (its share of a small set is empty), or no hard sample, lacks some keys: the keys
        are agreed first, missing ones counted as 0, so every rank sums the same tensors in the same order."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        keys: list = [None] * dist.get_world_size()
        dist.all_gather_object(keys, sorted(self._sums))
        device = collective_device()
        names = sorted(set().union(*keys))
        flat = torch.stack([self._sums[k].to(device) if k in self._sums else
                            torch.zeros((), dtype=torch.float64, device=device) for k in names])
        dist.all_reduce(flat)
        self._sums = dict(zip(names, flat.unbind()))

    def compute(self) -> dict[str, float]:
        """{'acc1/<level>', 'acc5/<level>', 'acc1_hard/<level>', ..., 'loss', 'n', 'n_hard'}.

        Hard accuracies appear only when some hard sample was seen (a fraction of 0 samples is undefined).
        """
        s = {k: v.item() for k, v in self._sums.items()}
        n, n_hard = s.get("n", 0.0), s.get("n_hard", 0.0)
        if n == 0:
            raise ValueError("no samples were accumulated")
        out: dict[str, float] = {}
        for key, v in s.items():
            if key.startswith("acc"):
                denom = n_hard if "_hard/" in key else n
                if denom > 0:
                    out[key] = v / denom
        out["loss"] = s["loss"] / n
        out["n"] = int(n)
        out["n_hard"] = int(n_hard)
        return out
