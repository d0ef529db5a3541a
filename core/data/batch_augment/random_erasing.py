"""Random erasing (Zhong et al. 2017, arXiv:1708.04896) on a normalised NCHW batch, as timm's RandomErasing
(timm/data/random_erasing.py) with one box per image: with probability `p`, a box of `area` x H x W pixels
(area uniform in the range) and aspect ratio h / w (log-uniform in `ratio`) is placed uniformly inside the image
and filled with zeros (the mean colour after normalisation, mode "const") or per-pixel N(0, 1) noise ("pixel",
timm train.py's default `--remode pixel`). As in timm, a box must be smaller than the image on both sides; up to
ATTEMPTS draws are made per image (all at once here) and the first that fits is used, none = not erased.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

ATTEMPTS = 10  # box draws per image before giving up (timm's)


class Erasure(NamedTuple):
    """One batch's draws: which images are erased, their boxes, and the fill."""

    erase: torch.Tensor  # bool (B,)
    top: torch.Tensor  # int64 (B,): first row of the box
    left: torch.Tensor  # int64 (B,): first column
    height: torch.Tensor  # int64 (B,): rows
    width: torch.Tensor  # int64 (B,): columns
    fill: torch.Tensor  # float32 (B, C, H, W) noise, or a 0-d zero for mode "const"


def erase(x: torch.Tensor, drawn: Erasure) -> torch.Tensor:
    """`x` (B, C, H, W) with each drawn box set to the fill, in x's dtype."""
    rows = torch.arange(x.shape[2], device=x.device)
    cols = torch.arange(x.shape[3], device=x.device)
    in_rows = (rows >= drawn.top[:, None]) & (rows < (drawn.top + drawn.height)[:, None])  # (B, H)
    in_cols = (cols >= drawn.left[:, None]) & (cols < (drawn.left + drawn.width)[:, None])  # (B, W)
    mask = drawn.erase[:, None, None] & in_rows[:, :, None] & in_cols[:, None, :]
    return torch.where(mask[:, None], drawn.fill.to(x.dtype), x)


@dataclass(frozen=True)
class RandomErasing:
    p: float = 0.25  # probability that an image is erased (DeiT's recipe; timm's RandomErasing default is 0.5)
    area: tuple[float, float] = (0.02, 1 / 3)  # box area range as a fraction of the image (timm's min/max_area)
    ratio: tuple[float, float] = (0.3, 1 / 0.3)  # box aspect ratio h / w range, drawn log-uniform
    mode: Literal["const", "pixel"] = "pixel"  # fill: zeros (the mean colour) or per-pixel N(0, 1) noise

    def __post_init__(self) -> None:
        if not 0 <= self.p <= 1:
            raise ValueError(f"p must be in [0, 1], got {self.p}")
        if not 0 < self.area[0] <= self.area[1] <= 1:
            raise ValueError(f"area must be (low, high) with 0 < low <= high <= 1, got {list(self.area)}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must be (low, high) with 0 < low <= high, got {list(self.ratio)}")

    def draw(self, shape: tuple[int, ...] | torch.Size, device: str | torch.device,
             generator: torch.Generator | None = None) -> Erasure:
        batch, channels, height, width = shape
        rand = dict(generator=generator, device=device)
        area = (self.area[0] + (self.area[1] - self.area[0]) * torch.rand(batch, ATTEMPTS, **rand)) * height * width
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(lo + (hi - lo) * torch.rand(batch, ATTEMPTS, **rand))
        h = torch.round(torch.sqrt(area * aspect)).long()
        w = torch.round(torch.sqrt(area / aspect)).long()
        fits = (h < height) & (w < width)
        first = fits.int().argmax(1, keepdim=True)  # the first attempt that fits (0 where none does)
        h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]
        # uniform over the H - h + 1 places; minimum: float32 rounding may give u * n == n for u just below 1
        top = torch.minimum((torch.rand(batch, **rand) * (height - h + 1)).long(), height - h)
        left = torch.minimum((torch.rand(batch, **rand) * (width - w + 1)).long(), width - w)
        chosen = (torch.rand(batch, **rand) < self.p) & fits.any(1)
        if self.mode == "pixel":
            fill = torch.empty(shape, device=device, memory_format=torch.channels_last).normal_(generator=generator)
        else:
            fill = torch.zeros((), device=device)
        return Erasure(chosen, top, left, h, w, fill)

    def apply(self, x: torch.Tensor, targets: list[torch.Tensor],
              drawn: Erasure) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return erase(x, drawn), targets
