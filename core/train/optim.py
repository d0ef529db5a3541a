"""The objective and the optimizer: cross-entropy with label smoothing, SGD or AdamW with decay by tensor rank.

The learning rate lives in a 0-d tensor shared by all parameter groups. A Python float that changes every step
is guarded by value in a torch.compile'd step and recompiles it (see the PyTorch tutorial "Running the compiled
optimizer with an LR scheduler"); core.train.schedule writes the tensor in place with fill_ instead.
"""

from __future__ import annotations

import torch
from torch import nn

from core.train.run_config import OPTIMIZERS


def build_loss(label_smoothing: float = 0.0) -> nn.Module:
    """Cross-entropy; targets may be class indices (B,) or probabilities (B, C), e.g. from mixup.

    nn.CrossEntropyLoss accepts both since torch 1.10 and applies the smoothing to soft targets too.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights (ndim >= 2) decay; biases and norm scales/shifts (ndim < 2) do not.

    By rank, not by name ('bn' in name misses LayerNorm and timm's naming): as in nanoGPT configure_optimizers.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return [g for g in ({"params": decay, "weight_decay": weight_decay},
                        {"params": no_decay, "weight_decay": 0.0}) if g["params"]]


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9,
                    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, nesterov: bool = False,
                    fused: bool | None = None) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW (decoupled decay) with a tensor learning rate.

    `fused` (AdamW only): None picks the fused kernel when every parameter is a floating-point tensor on a
    device that has one. Why: AdamW refuses a tensor lr with foreach=True unless capturable=True, and with
    foreach=None it silently falls back to the slow per-parameter loop; the fused kernel takes a tensor lr.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")
    if lr < 0 or weight_decay < 0:
        raise ValueError(f"lr and weight_decay must be >= 0, got lr={lr} weight_decay={weight_decay}")
    groups = param_groups(model, weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    # float64 so that the schedule's value is stored as computed (a float32 tensor rounds e.g. 0.1)
    lr_t = torch.tensor(float(lr), dtype=torch.float64)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr_t, momentum=momentum, nesterov=nesterov)
    if fused is None:
        fused = all(p.is_floating_point() and p.device.type in ("cuda", "cpu", "xpu", "mps")
                    for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr_t, betas=betas, eps=eps, fused=fused or None,
                             foreach=False if not fused else None)


def lr_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The distinct lr tensors of an optimizer's groups (one when built by build_optimizer)."""
    out, seen = [], set()
    for g in optimizer.param_groups:
        lr = g["lr"]
        if not isinstance(lr, torch.Tensor):
            raise TypeError("this optimizer holds a float lr; build it with build_optimizer for a tensor lr")
        if id(lr) not in seen:
            seen.add(id(lr))
            out.append(lr)
    return out
