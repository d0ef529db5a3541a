"""The per-batch device stage: uint8 NHWC batch -> normalised NCHW (channels_last) in bf16/fp16/fp32, with an
optional horizontal flip and mixup / cutmix on soft targets.

The stage itself (`device_stage`) is a pure tensor function of the batch and of the random draws (`Draws`); the
draws are made outside it, so the compiled graph holds no RNG, compiled and eager agree on the same draws, and
no Python number reaches the graph (mixup's lambda is a 0-d tensor: a Python float would be guarded by value and
recompile every batch). `GpuAugment` holds the fixed work (mean/std tensors on the device, built once), makes
the draws and calls the stage, compiled with torch.compile unless `compile=False`.

Recompiles under progressive resizing (measured here: torch 2.14.1, CPU, inductor, counted with
torch._dynamo.utils.counters["stats"]["unique_graphs"], batches of 8 at 32, 48, 32, 64, 48 px, then a batch of
6 at 40 px and of 8 at 56 px, flip + mixup + cutmix on):
  dynamic_spatial=True (default): H and W are marked dynamic (torch._dynamo.mark_dynamic) before every call, so
      the first call compiles one graph symbolic in H and W and no resolution compiles again: 1 graph for all
      five resolutions; the batch of another size added one graph (dynamo's automatic dynamic shapes then makes
      the batch dim symbolic), and the last call none: 2 graphs in all.
  dynamic_spatial=False: a static graph for the first size, one recompile at the second size with H and W made
      dynamic automatically ("automatic_dynamic_shapes"), then none for further sizes; the odd batch size adds
      one: 3 graphs in all.
  Either way the count is bounded, well under the default recompile limit of 8 (tests/test_augment.py asserts
  the bound). A first compile from a cold inductor cache took about 18 s on CPU here, 4-5 s warm.
  Use drop_last on train loaders so that the batch size stays fixed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # per RGB channel, fraction of 255
IMAGENET_STD = (0.229, 0.224, 0.225)  # per RGB channel, fraction of 255
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


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


def cutmix_keep(height: int, width: int, lam: torch.Tensor, centre: torch.Tensor) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
    """Cutmix's box as a float (H, W) map, 1 where the sample keeps its own pixels, and the kept area fraction.

    The box has area (1 - lam) * H * W before clipping at the borders (timm's rand_bbox); the returned fraction
    is measured after clipping, so the target weights match the pixels.
    """
    device = centre.device
    cut = torch.sqrt(1.0 - lam)
    half_h, half_w = height * cut / 2, width * cut / 2
    cy, cx = centre[0] * height, centre[1] * width
    y0, y1 = torch.round(cy - half_h).clamp(0, height), torch.round(cy + half_h).clamp(0, height)
    x0, x1 = torch.round(cx - half_w).clamp(0, width), torch.round(cx + half_w).clamp(0, width)
    rows = torch.arange(height, device=device, dtype=torch.float32)
    cols = torch.arange(width, device=device, dtype=torch.float32)
    in_box = ((rows >= y0) & (rows < y1)).view(-1, 1) & ((cols >= x0) & (cols < x1)).view(1, -1)
    kept = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    return (~in_box).float(), kept


def mix(x: torch.Tensor, targets: Sequence[torch.Tensor], draws: Draws) -> tuple[torch.Tensor,
                                                                                   list[torch.Tensor]]:
    """Mixup or cutmix of an NCHW float batch with its partners `x[perm]`; soft targets mixed with the same weight."""
    keep_map, kept = cutmix_keep(x.shape[2], x.shape[3], draws.lam, draws.centre)
    pixel_weight = torch.where(draws.use_cutmix, keep_map, draws.lam)  # (H, W), or 0-d broadcast to (H, W)
    target_weight = torch.where(draws.use_cutmix, kept, draws.lam)
    x = x * pixel_weight + x[draws.perm] * (1.0 - pixel_weight)
    return x, [t * target_weight + t[draws.perm] * (1.0 - target_weight) for t in targets]


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


class GpuAugment:
    """Callable `(images_u8_nhwc, labels) -> (x, targets)` for one device, dtype and set of augmentations.

    labels: {level: int64 (B,) class indices or float (B, C) soft targets}, or None.
    targets: without mixing, `labels` unchanged; with mixing, {level: float32 (B, C)} soft targets that sum to 1
    (class indices become one-hot with C = `num_classes[level]`).
    mixup_alpha / cutmix_alpha: Beta(alpha, alpha) for lambda; 0 turns that one off. With both on, a batch uses
    cutmix with probability `switch_prob`. `mix_prob`: probability that a batch is mixed at all.
    """

    def __init__(self, *, device: str | torch.device, dtype: torch.dtype = torch.bfloat16,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, flip: bool = False,
                 mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, mix_prob: float = 1.0,
                 switch_prob: float = 0.5, num_classes: Mapping[str, int] | None = None, compile: bool = True,
                 dynamic_spatial: bool = True) -> None:
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be one of {list(DTYPES.values())}, got {dtype}")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {mean} and {std}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.flip = flip
        self.mixing = mixup_alpha > 0 or cutmix_alpha > 0
        self.mix_prob, self.switch_prob = mix_prob, switch_prob
        self.num_classes = dict(num_classes or {})
        self.dynamic_spatial = dynamic_spatial
        # fixed work, once: per-channel constants on the device, broadcast over NHWC's last dim
        self.mean255 = torch.tensor(mean, dtype=torch.float32, device=self.device) * 255
        self.inv_std255 = 1.0 / (torch.tensor(std, dtype=torch.float32, device=self.device) * 255)
        self._mixup = _beta(mixup_alpha, self.device)
        self._cutmix = _beta(cutmix_alpha, self.device)
        if not self._mixup and self._cutmix:
            self.switch_prob = 1.0
        self.stage = torch.compile(device_stage) if compile else device_stage

    def draw(self, batch_size: int) -> Draws:
        """The random numbers of one batch, drawn on the device from torch's global generator."""
        dev = self.device
        flip = torch.rand(batch_size, device=dev) < 0.5
        perm = torch.randperm(batch_size, device=dev)
        use_cutmix = torch.rand((), device=dev) < self.switch_prob
        one = torch.ones((), device=dev)
        lam_mixup = self._mixup.sample() if self._mixup else one
        lam_cutmix = self._cutmix.sample() if self._cutmix else one
        lam = torch.where(use_cutmix, lam_cutmix, lam_mixup)
        lam = torch.where(torch.rand((), device=dev) < self.mix_prob, lam, one).float()
        return Draws(flip, perm, lam, use_cutmix, torch.rand(2, device=dev))

    def __call__(self, images: torch.Tensor, labels: Mapping[str, torch.Tensor] | None = None,
                 draws: Draws | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"expected uint8 (B, H, W, 3) images, got {images.dtype} {tuple(images.shape)}")
        if draws is None:
            draws = self.draw(images.shape[0])
        names = list(labels or {})
        if self.mixing:
            targets = [self._soft(name, labels[name]) for name in names]
        else:
            targets = []
        if self.dynamic_spatial and self.stage is not device_stage:
            torch._dynamo.mark_dynamic(images, 1)
            torch._dynamo.mark_dynamic(images, 2)
        x, mixed = self.stage(images, targets, draws, self.mean255, self.inv_std255, dtype=self.dtype,
                              flip=self.flip, mixing=self.mixing)
        if labels is None:
            return x, None
        return x, (dict(zip(names, mixed)) if self.mixing else dict(labels))

    def _soft(self, name: str, labels: torch.Tensor) -> torch.Tensor:
        if labels.is_floating_point():
            return labels.float()
        if name not in self.num_classes:
            raise ValueError(f"mixing needs num_classes for level {name!r}; got {sorted(self.num_classes)}")
        return torch.nn.functional.one_hot(labels.long(), self.num_classes[name]).float()


def _beta(alpha: float, device: torch.device) -> torch.distributions.Beta | None:
    if alpha <= 0:
        return None
    a = torch.tensor(float(alpha), device=device)
    return torch.distributions.Beta(a, a)
