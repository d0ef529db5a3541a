"""Which pretraining classes to add while fine-tuning: unbalanced optimal transport between class means.

Liu et al., "Improved Fine-Tuning by Better Leveraging Pre-Training Data" (NeurIPS 2022), select per class: the
cost between pretraining class i and target class j is (1 - cos(mu_i, nu_j)) / cost_scale on the class-mean
features of the pretrained network; an entropic unbalanced transport plan moves mass from the pretraining
classes onto the target classes, with the pretraining marginal relaxed (KL weight reg_m_source = 1) and the
target marginal nearly hard (reg_m_target = 100), so every target class draws its mass from the pretraining
classes most like it; the pretraining classes are ranked by the mass they send (row sums of the plan) and the
top K are kept. Their code (github.com/ziquanliu/NeurIPS2022_UOT_fine_tuning, UOT_selection/) weights every class
by 1 on both sides (unnormalised) and uses the entropy kernel exp(-M / reg); we do the same by default.

The solver is POT's `ot.unbalanced.sinkhorn_unbalanced` (generalised Sinkhorn scaling, Chizat et al. 2016). POT
0.9.5 changed its default regulariser to KL(plan, a b^T); we pass reg_type='kl' with the reference measure c = 1
(all ones), which is the entropy regulariser of Liu et al. (KL(plan, 1) = sum plan log plan - plan + const).

Pure arrays in, arrays out: no files, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ot

COST_SCALE = 0.1  # cost = (1 - cosine) / COST_SCALE: Liu et al.'s p_m
REG = 1.0  # entropic regularisation epsilon
REG_M_SOURCE = 1.0  # KL weight on the pretraining-side marginal (relaxed)
REG_M_TARGET = 100.0  # KL weight on the target-side marginal (near-hard)
MAX_ITER = 1000  # Sinkhorn iterations at most
STOP_THR = 1e-6  # relative change of the scalings at which the iterations stop (Liu et al.: 1000, 1e-6)


@dataclass(frozen=True)
class Selection:
    """The K pretraining classes kept, most transported mass first."""

    classes: np.ndarray  # int64 (K,): pretraining class indices
    mass: np.ndarray  # float64 (K,): mass each sends in the plan (its row sum)
    plan: np.ndarray  # float64 (N_pretrain, N_target): the transport plan
    row_mass: np.ndarray  # float64 (N_pretrain,): every pretraining class's row sum (the ranking score)


def cosine_cost(source_means: np.ndarray, target_means: np.ndarray, scale: float = COST_SCALE) -> np.ndarray:
    """(N, M) cost (1 - cos(source_i, target_j)) / scale; a zero row (a class without samples) has cosine 0."""
    if source_means.ndim != 2 or target_means.ndim != 2 or source_means.shape[1] != target_means.shape[1]:
        raise ValueError(f"class means must be (N, D) and (M, D), got {source_means.shape} and {target_means.shape}")
    if scale <= 0:
        raise ValueError(f"cost scale must be > 0, got {scale}")
    s, t = _unit_rows(source_means), _unit_rows(target_means)
    return (1.0 - s @ t.T) / scale


def unbalanced_plan(cost: np.ndarray, source_weights: np.ndarray, target_weights: np.ndarray, *,
                    reg: float = REG, reg_m: tuple[float, float] = (REG_M_SOURCE, REG_M_TARGET),
                    max_iter: int = MAX_ITER, stop_thr: float = STOP_THR) -> np.ndarray:
    """argmin_P <P, cost> + reg KL(P, 1) + reg_m[0] KL(P 1, a) + reg_m[1] KL(P^T 1, b), P >= 0 (POT)."""
    cost = np.asarray(cost, dtype=np.float64)
    a, b = np.asarray(source_weights, dtype=np.float64), np.asarray(target_weights, dtype=np.float64)
    if cost.shape != (len(a), len(b)):
        raise ValueError(f"cost is {cost.shape}, weights give ({len(a)}, {len(b)})")
    if reg <= 0 or min(reg_m) <= 0:
        raise ValueError(f"reg and reg_m must be > 0, got {reg} and {reg_m}")
    plan = ot.unbalanced.sinkhorn_unbalanced(a, b, cost, reg, tuple(float(r) for r in reg_m), method="sinkhorn",
                                             reg_type="kl", c=np.ones_like(cost), numItermax=max_iter,
                                             stopThr=stop_thr)
    if not np.all(np.isfinite(plan)):
        raise FloatingPointError("the transport plan is not finite; use a larger reg or cost scale")
    return plan


def select_classes(source_means: np.ndarray, target_means: np.ndarray, k: int, *,
                   source_weights: np.ndarray | None = None, target_weights: np.ndarray | None = None,
                   cost_scale: float = COST_SCALE, reg: float = REG,
                   reg_m: tuple[float, float] = (REG_M_SOURCE, REG_M_TARGET)) -> Selection:
    """The `k` pretraining classes that send the most mass to the target classes.

    source_weights / target_weights default to 1 per class (Liu et al.); pass counts for count-weighted marginals.
    A pretraining class with weight 0 (e.g. no samples) sends no mass and is never chosen; ties in mass go to the
    lower class index.
    """
    n = len(source_means)
    a = np.ones(n) if source_weights is None else np.asarray(source_weights, dtype=np.float64)
    b = np.ones(len(target_means)) if target_weights is None else np.asarray(target_weights, dtype=np.float64)
    if not 1 <= k <= int(np.count_nonzero(a)):
        raise ValueError(f"k={k}: choose between 1 and the {np.count_nonzero(a)} pretraining classes with weight")
    plan = unbalanced_plan(cosine_cost(source_means, target_means, cost_scale), a, b, reg=reg, reg_m=reg_m)
    row_mass = plan.sum(axis=1)
    # by mass, descending, ties by index; a zero-weight class (a zero row) ranks below every class with weight
    score = np.where(a > 0, row_mass, -np.inf)
    order = np.lexsort((np.arange(n), -score))[:k]
    return Selection(order.astype(np.int64), row_mass[order], plan, row_mass)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


__all__ = ["COST_SCALE", "REG", "REG_M_SOURCE", "REG_M_TARGET", "Selection", "cosine_cost", "select_classes",
           "unbalanced_plan"]
