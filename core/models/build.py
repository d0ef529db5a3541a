"""Model construction: any timm model by name, or the Scaling-MLPs bottleneck MLP, behind one interface.

Every model built here has the three things transfer needs:
    model(x) -> (B, num_classes) logits
    model.forward_features(x) -> (B, model.feature_dim) pooled features (what a new head sees)
    model.reset_head(num_classes) -> replaces the classifier in place (new, randomly initialised)

Names: "bmlp" (kwargs depth, width, expansion) or "bmlp-<depth>-<width>" (e.g. "bmlp-6-1024", the paper's
B_6-Wi_1024); any other name goes to timm.create_model(name, pretrained=False, ...).
"""

from __future__ import annotations

import re

import timm
import torch
from torch import nn

# Scaling MLPs (Bachmann et al. 2023) defaults: B_6-Wi_1024 with a 4x bottleneck expansion.
BMLP_DEFAULTS = {"depth": 6, "width": 1024, "expansion": 4}
_BMLP_NAME = re.compile(r"^bmlp(?:-(\d+)-(\d+))?$")


class BottleneckBlock(nn.Module):
    """x + Linear(4d->d)(GELU(Linear(d->4d)(LayerNorm(x)))): the Scaling-MLPs block, pre-norm residual."""

    def __init__(self, width: int, expansion: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, expansion * width)
        self.act = nn.GELU()
        self.down = nn.Linear(expansion * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(self.act(self.up(self.norm(x))))


class BottleneckMLP(nn.Module):
    """Flattened image -> linear embedding -> `depth` bottleneck blocks -> LayerNorm -> linear head."""

    def __init__(self, image_size: int, in_chans: int, num_classes: int, depth: int, width: int, expansion: int):
        super().__init__()
        if min(image_size, in_chans, depth, width, expansion) < 1 or num_classes < 0:
            raise ValueError(f"bmlp: bad sizes image_size={image_size} in_chans={in_chans} depth={depth} "
                             f"width={width} expansion={expansion} num_classes={num_classes}")
        self.image_size, self.in_chans = image_size, in_chans
        self.embed = nn.Linear(in_chans * image_size * image_size, width)
        self.blocks = nn.Sequential(*[BottleneckBlock(width, expansion) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.feature_dim = width
        self.head = _linear_head(width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # the input size is fixed by the embedding, so say which size was expected rather than a matmul error
        if x.shape[1:] != (self.in_chans, self.image_size, self.image_size):
            raise ValueError(f"bmlp built for {self.in_chans}x{self.image_size}x{self.image_size} inputs, "
                             f"got {tuple(x.shape[1:])}")
        # reshape, not view: a channels_last batch is not contiguous in NCHW order
        return self.norm(self.blocks(self.embed(x.reshape(x.shape[0], -1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def reset_head(self, num_classes: int) -> None:
        old = self.embed.weight
        self.head = _linear_head(self.feature_dim, num_classes).to(device=old.device, dtype=old.dtype)


class TimmClassifier(nn.Module):
    """A timm model with the pooled-features interface (timm's own forward_features is unpooled)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        # head_hidden_size differs from num_features for models with a pre-logits MLP (timm >= 1.0)
        self.feature_dim = int(getattr(net, "head_hidden_size", None) or net.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)

    def reset_head(self, num_classes: int) -> None:
        # reset_classifier builds the new layer on the default device; move it where the model lives
        p = next(self.net.parameters())
        self.net.reset_classifier(num_classes)
        self.net.to(device=p.device, dtype=p.dtype)


def build_model(name: str, num_classes: int, image_size: int, in_chans: int = 3, **kwargs) -> nn.Module:
    """A freshly initialised model; `kwargs` go to the bmlp constructor or to timm.create_model."""
    m = _BMLP_NAME.match(name)
    if m:
        cfg = dict(BMLP_DEFAULTS)
        if m.group(1):
            for k in ("depth", "width"):
                if k in kwargs:
                    raise ValueError(f"model {name!r} fixes {k}; pass it either in the name or as a kwarg")
            cfg.update(depth=int(m.group(1)), width=int(m.group(2)))
        unknown = set(kwargs) - set(BMLP_DEFAULTS)
        if unknown:
            raise TypeError(f"bmlp got unknown kwargs {sorted(unknown)}; it takes {sorted(BMLP_DEFAULTS)}")
        cfg.update(kwargs)
        return BottleneckMLP(image_size, in_chans, num_classes, **cfg)
    if name.startswith("bmlp"):
        raise ValueError(f"bad bmlp name {name!r}; use 'bmlp' or 'bmlp-<depth>-<width>'")
    return TimmClassifier(_create_timm(name, num_classes, image_size, in_chans, kwargs))


def _create_timm(name: str, num_classes: int, image_size: int, in_chans: int, kwargs: dict) -> nn.Module:
    if not timm.is_model(name):
        raise ValueError(f"unknown model {name!r}: neither 'bmlp' nor a timm model name")
    common = dict(pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if "img_size" in kwargs:
        return timm.create_model(name, **common)
    # transformers fix their position embeddings to img_size; CNNs take any size and refuse the kwarg
    try:
        return timm.create_model(name, img_size=image_size, **common)
    except TypeError as e:
        if "img_size" not in str(e):
            raise
        return timm.create_model(name, **common)


def _linear_head(dim: int, num_classes: int) -> nn.Module:
    # num_classes=0 means features only, as in timm
    return nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()


def to_channels_last(model: nn.Module) -> nn.Module:
    """Channels-last weights (faster convolutions with tensor cores); inputs must be converted too."""
    return model.to(memory_format=torch.channels_last)
