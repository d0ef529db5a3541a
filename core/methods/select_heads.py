"""Two heads on one backbone for fine-tuning with selected pretraining data (Liu et al., NeurIPS 2022).

A training batch is the target batch followed by the selected batch (core/methods/select_data.py): its first
`target_rows` rows are target images, the rest selected pretraining images. The model puts both heads on the
shared features; the objective scores the target head on the target rows and the selected head on the selected
rows: loss = CE_target + lambda * CE_selected.

    TwoHeadModel  - in training mode, output (B, C_target + K): target head then selected head, on every row;
                    in eval mode, output (B, C_target): the plain target classifier, so evaluation, `eval` and
                    feature extraction see only the target head.
    SelectedObjective - the core/train/objective.py interface: loss as above; logits(output) = the target head's
                    scores of the target rows in training (C_target + K columns), the output itself in eval.

Evaluation (core/engine.evaluate) runs the model in eval mode on val batches that hold only target rows, so
logits(output) there is the whole (B, C_target) output. Training batches have a fixed number of target rows
(the training loader drops its last partial batch), which is how logits finds them.
"""

from __future__ import annotations

import torch
from torch import nn

from core.train.optim import build_loss

SELECTED = "selected"  # key of the selected rows' labels (0..K-1) in a training batch's targets


def classify(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """`model`'s own classifier applied to its pooled features (core/models/build.py: bmlp `head`, timm's classifier).

    For timm models this skips the head's dropout (forward_head drops before the classifier, after
    pre_logits); timm models are built with drop_rate 0 unless model.kwargs asks for it."""
    net = getattr(model, "net", None)
    if net is not None and hasattr(net, "get_classifier"):
        return net.get_classifier()(features)
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise TypeError(f"{type(model).__name__}: no classifier to put beside a second head (expected a "
                        "core.models.build model: bmlp's `head` or a timm model's get_classifier())")
    return head(features)


class TwoHeadModel(nn.Module):
    """`model` (with its target head) plus a linear head for the K selected pretraining classes.

    The wrapped model's submodules are registered directly on this module (not under a prefix), so a checkpoint
    holds the target model's own keys plus `selected_head.weight` / `selected_head.bias`: the target network
    can be read from it as from a plain run by dropping those two keys.
    """

    def __init__(self, model: nn.Module, num_selected: int, seed: int = 0) -> None:
        super().__init__()
        if num_selected < 1:
            raise ValueError(f"num_selected must be >= 1, got {num_selected}")
        if any(True for _ in model.parameters(recurse=False)) or any(True for _ in model.buffers(recurse=False)):
            raise TypeError(f"{type(model).__name__} holds parameters outside its submodules; cannot share them")
        for name, child in model.named_children():
            if name == "selected_head":
                raise ValueError("the model already has a submodule named 'selected_head'")
            self.add_module(name, child)
        object.__setattr__(self, "target", model)  # not registered: its submodules are ours (above)
        self.feature_dim = int(model.feature_dim)
        ref = next(model.parameters())
        # a seeded head: the same source, config and selection give the same initial weights
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = nn.Linear(self.feature_dim, num_selected)
        self.selected_head = head.to(device=ref.device, dtype=ref.dtype)

    def train(self, mode: bool = True) -> TwoHeadModel:
        super().train(mode)
        self.target.training = mode  # its submodules are ours and already switched; this is its own flag
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.target.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.target.forward_features(x)
        logits = classify(self.target, features)
        if not self.training:
            return logits
        return torch.cat([logits, self.selected_head(features).to(logits.dtype)], dim=1)


class SelectedObjective:
    """loss = CE(target head, target rows) + lam * CE(selected head, selected rows); see the module docstring."""

    def __init__(self, level: str, num_classes: int, num_selected: int, target_rows: int, lam: float,
                 label_smoothing: float = 0.0) -> None:
        if min(num_classes, num_selected, target_rows) < 1 or lam < 0:
            raise ValueError(f"bad sizes: num_classes={num_classes} num_selected={num_selected} "
                             f"target_rows={target_rows} lam={lam}")
        self.level = level
        self.train_levels = (level,)
        self.num_classes, self.num_selected = num_classes, num_selected
        self.target_rows, self.lam = target_rows, lam
        self._ce = build_loss(label_smoothing)

    def loss(self, output: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        n, c = self.target_rows, self.num_classes
        y_t, y_s = targets[self.level], targets[SELECTED]
        if output.shape[1] != c + self.num_selected or (len(y_t), len(y_s)) != (n, output.shape[0] - n):
            raise ValueError(f"expected {n} target rows then selected rows with {c}+{self.num_selected} scores "
                             f"(the model in training mode); got output {tuple(output.shape)}, {len(y_t)} target "
                             f"and {len(y_s)} selected labels")
        out = output.float()
        return self._ce(out[:n, :c], y_t) + self.lam * self._ce(out[n:, c:], y_s)

    def logits(self, output: torch.Tensor) -> torch.Tensor:
        if output.shape[1] == self.num_classes:  # eval mode: the target head only, every row a target row
            return output
        return output[:self.target_rows, :self.num_classes]


__all__ = ["SELECTED", "SelectedObjective", "TwoHeadModel", "classify"]
