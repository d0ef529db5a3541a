"""The device stage as pure batched tensor functions: uint8 NHWC batch -> normalised NCHW (channels_last) in
bf16/fp16/fp32, with an optional horizontal flip and mixup / cutmix on soft targets.

`device_stage` is a pure function of the batch and of the random draws (`Draws`); the draws are made outside it
(core.data.augment.GpuAugment.draw), so the compiled graph holds no RNG, compiled and eager agree on the same
draws, and no Python number reaches the graph (mixup's lambda is a 0-d tensor: a Python float would be guarded by
value and recompile every batch). core/data/cpu_stage.py computes the same values on the CPU in one numba pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch


class Draws(NamedTuple):
    """Every random number one batch needs; made by `GpuAugment.draw` (or by hand in tests)."""

    flip: torch.Tensor  # bool (B,): flip sample i
    perm: torch.Tensor  # int64 (B,): partner of sample i in the mix
    lam: torch.Tensor  # float32 0-d: weight of the sample itself (1 = no mixing)
    use_cutmix: torch.Tensor  # bool 0-d: cutmix (True) or mixup (False) for this batch
    centre: torch.Tensor  # float32 (2,): cutmix box centre as fractions of (H, W)


# pure batched functions
def normalize(images: torch.Tensor, mean255: torch.Tensor, inv_std255: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) as a channels_last view: (x - mean) / std per channel."""
    return ((images.float() - mean255) * inv_std255).permute(0, 3, 1, 2)


def flip_where(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirrors the samples of an NCHW batch where `mask` (bool (B,)) is set (airbench's batch_flip_lr)."""
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)


def cutmix_box(height: int, width: int, lam: torch.Tensor, centre: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Cutmix's box, rows y0:y1 and columns x0:x1 (float 0-d tensors holding whole numbers), and the area
    fraction the sample keeps outside it.

    The box has area (1 - lam) * H * W before clipping at the borders (timm's rand_bbox); the returned fraction
    is measured after clipping, so the target weights match the pixels.
    """
    cut = torch.sqrt(1.0 - lam)
    half_h, half_w = height * cut / 2, width * cut / 2
    cy, cx = centre[0] * height, centre[1] * width
    y0, y1 = torch.round(cy - half_h).clamp(0, height), torch.round(cy + half_h).clamp(0, height)
    x0, x1 = torch.round(cx - half_w).clamp(0, width), torch.round(cx + half_w).clamp(0, width)
    kept = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    return y0, y1, x0, x1, kept


def cutmix_keep(height: int, width: int, lam: torch.Tensor, centre: torch.Tensor) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
    """Cutmix's box as a float (H, W) map, 1 where the sample keeps its own pixels, and the kept area fraction."""
    y0, y1, x0, x1, kept = cutmix_box(height, width, lam, centre)
    rows = torch.arange(height, device=centre.device, dtype=torch.float32)
    cols = torch.arange(width, device=centre.device, dtype=torch.float32)
    in_box = ((rows >= y0) & (rows < y1)).view(-1, 1) & ((cols >= x0) & (cols < x1)).view(1, -1)
    return (~in_box).float(), kept


def mix_weights(height: int, width: int, draws: Draws) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight of each sample's own pixels, float (H, W) (the cutmix map, or lam everywhere for mixup), and of
    its own targets, float 0-d (the kept area fraction, or lam)."""
    keep_map, kept = cutmix_keep(height, width, draws.lam, draws.centre)
    return torch.where(draws.use_cutmix, keep_map, draws.lam), torch.where(draws.use_cutmix, kept, draws.lam)


def mix_targets(targets: Sequence[torch.Tensor], perm: torch.Tensor, weight: torch.Tensor) -> list[torch.Tensor]:
    """Soft targets mixed with their partners' `t[perm]`: `weight` for the sample's own, 1 - weight for its partner."""
    return [t * weight + t[perm] * (1.0 - weight) for t in targets]


def mix(x: torch.Tensor, targets: Sequence[torch.Tensor], draws: Draws) -> tuple[torch.Tensor,
                                                                                   list[torch.Tensor]]:
    """Mixup or cutmix of an NCHW float batch with its partners `x[perm]`; soft targets mixed with the same weight."""
    pixel_weight, target_weight = mix_weights(x.shape[2], x.shape[3], draws)
    x = x * pixel_weight + x[draws.perm] * (1.0 - pixel_weight)
    return x, mix_targets(targets, draws.perm, target_weight)


def device_stage(images: torch.Tensor, targets: Sequence[torch.Tensor], draws: Draws, mean255: torch.Tensor,
                 inv_std255: torch.Tensor, *, dtype: torch.dtype, flip: bool,
                 mixing: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The whole stage, the function that is compiled. `targets` are float (B, C) soft targets when `mixing`."""
    x = normalize(images, mean255, inv_std255)
    if flip:
        x = flip_where(x, draws.flip)
    if mixing:
        x, targets = mix(x, targets, draws)
    return x.to(dtype).contiguous(memory_format=torch.channels_last), list(targets)
