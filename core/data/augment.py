"""The per-batch device stage: uint8 NHWC batch -> normalised NCHW (channels_last) in bf16/fp16/fp32, with an
optional horizontal flip and mixup / cutmix on soft targets.

The stage itself (`device_stage`) is a pure tensor function of the batch and of the random draws (`Draws`); the
draws are made outside it, so the compiled graph holds no RNG, compiled and eager agree on the same draws, and
no Python number reaches the graph (mixup's lambda is a 0-d tensor: a Python float would be guarded by value and
recompile every batch). `GpuAugment` holds the fixed work (mean/std tensors on the device, built once), makes
the draws and calls the stage, compiled with torch.compile unless `compile=False`. Eager on the CPU (what
`grainsweep train` does there: it compiles on CUDA only), it calls `cpu_stage` instead, a numba kernel with the
same results (torch.equal, tests/test_augment.py) at a fraction of the cost: 224 px, batch 64, flip, 2 shared
cores at load ~4, 14 ms a batch against 216 ms for the eager reference (benchmarks/RESULTS.md; ~120 ms at load
1), and nothing to compile: the compiled reference took 104 ms a batch against cpu_stage's 11 ms, side by side at
load 2.5 (and 20-60 s to compile from a cold cache), so compiling never pays on the CPU.

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

import numba
import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # per RGB channel, fraction of 255
IMAGENET_STD = (0.229, 0.224, 0.225)  # per RGB channel, fraction of 255
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CPU_CHUNK_ELEMENTS = 2**18  # float32 values per chunk of the CPU path when casting to bf16/fp16 (1 MiB, in L2)
CPU_OUTPUT_BUFFERS = 2  # output buffers the CPU path recycles: the consumer's batch and the one being made


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


def cpu_stage(images: torch.Tensor, targets: Sequence[torch.Tensor], draws: Draws, mean255: torch.Tensor,
              inv_std255: torch.Tensor, *, dtype: torch.dtype, flip: bool, mixing: bool,
              out: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`device_stage` for CPU tensors run eagerly: equal results (tests/test_augment.py checks torch.equal), in
    one pass over the pixels. `out`: an optional (B, H, W, 3) buffer of `dtype` to write into (returned as its
    channels_last NCHW view); a new one otherwise.

    Why the reference is slow on the CPU (2 cores, 224 px, batch 64: 120-160 ms a batch eager): each of its ops
    writes a new 38 MB float batch, and a fresh 38 MB buffer costs ~17 ms of page faults here against ~2.5 ms
    to fill a reused one; the channel constants broadcast over a last dim of 3, which does not vectorise; the
    float flip and `where` copy the batch twice more; and each op is an OpenMP region over both cores, which
    stalls when the loader's decode threads (or other jobs) hold them. Here one numba kernel (no GIL, one
    thread, so it overlaps with ffcv's decode threads) reads each uint8 value once and writes each output once:
      - normalisation is a table of the 3 x 256 possible values made by `normalize` itself, so every value is
        the reference's, bit for bit (16-bit dtypes: the table is cast once, as `.to(dtype)` would cast x);
      - the flip is an index change; cutmix's box takes the (mirrored) partner's values, which is what
        x * 1 + y * 0 gives exactly, a normalised value never being -0;
      - mixup is x * lam + x[perm] * (1 - lam) in float32, the ops of `mix` (numba contracts a * b + c into a
        fused multiply-add only under fastmath, which is off); into bf16/fp16 through float32 chunks of
        CPU_CHUNK_ELEMENTS values cast by torch (numba has no 16-bit floats; not the default on CPU).
    """
    if images.device.type != "cpu":
        raise ValueError(f"cpu_stage needs CPU tensors, got {images.device}")
    b, h, w, _ = images.shape
    if out is None:
        out = torch.empty((b, h, w, 3), dtype=dtype)
    values = torch.arange(256, dtype=torch.uint8).view(1, 256, 1, 1).expand(1, 256, 1, 3)
    table = normalize(values, mean255, inv_std255)[0, :, :, 0].contiguous()  # (3, 256): channel, uint8 value
    flips = (draws.flip if flip else torch.zeros(b, dtype=torch.bool)).numpy()
    src, perm = images.contiguous().numpy(), draws.perm.numpy()

    # the batch's mix, from the scalars `mix_weights` uses (its (H, W) maps cost more than the kernel here)
    box, lam = (0, 0, 0, 0), None  # cutmix's y0, y1, x0, x1 (empty), mixup's weight (None: no blend)
    if mixing:
        *corners, kept = cutmix_box(h, w, draws.lam, draws.centre)
        targets = mix_targets(targets, draws.perm, torch.where(draws.use_cutmix, kept, draws.lam))
        if bool(draws.use_cutmix):
            box = tuple(int(v) for v in corners)
        elif bool(draws.lam != 1):  # x * 1 + y * 0 == x: lam == 1 (mix_prob's unmixed batches) is no blend
            lam = draws.lam

    # one pass: a table lookup (16-bit dtypes: the table cast once, copied as bits), or mixup in float32
    if lam is None:
        bits = dtype != torch.float32
        lookup = table.to(dtype).view(torch.int16) if bits else table
        dst = out.view(torch.int16) if bits else out
        _lookup_pixels(src, flips, perm, lookup.numpy(), *box, dst.numpy())
        return out.permute(0, 3, 1, 2), list(targets)
    weights = (lam.float().item(), (1.0 - lam).float().item())
    if dtype == torch.float32:
        _mixup_pixels(src, flips, perm, table.numpy(), *weights, 0, b, out.numpy())
    else:
        chunk = max(1, CPU_CHUNK_ELEMENTS // (h * w * 3))
        scratch = torch.empty((min(chunk, b), h, w, 3), dtype=torch.float32)
        for start in range(0, b, chunk):
            end = min(b, start + chunk)
            _mixup_pixels(src, flips, perm, table.numpy(), *weights, start, end, scratch.numpy())
            out[start:end].copy_(scratch[:end - start])
    return out.permute(0, 3, 1, 2), list(targets)


@numba.njit(nogil=True, cache=True)
def _lookup_pixels(src: np.ndarray, flips: np.ndarray, perm: np.ndarray, table: np.ndarray, y0: int, y1: int,
                   x0: int, x1: int, dst: np.ndarray) -> None:
    """dst[n, y, x, c] = table[c, src[n, y, x', c]], x' mirrored where flips[n]; inside the box y0:y1, x0:x1
    the partner perm[n]'s pixels instead (mirrored where flips[perm[n]]).

    Rows are walked as flat (W * 3) arrays with one 1-d table per channel: ~20% faster than 4-d indexing
    (224 px, batch 64: 9.2 against 11.4 ms here)."""
    b, h, w, _ = src.shape
    t0, t1, t2 = table[0], table[1], table[2]
    for n in range(b):
        for y in range(h):
            inside = y0 <= y < y1
            row = dst[n, y].reshape(-1)
            _lookup_row(src[n, y].reshape(-1), flips[n], t0, t1, t2, 0, w, w, row)
            if inside:
                p = perm[n]
                _lookup_row(src[p, y].reshape(-1), flips[p], t0, t1, t2, x0, x1, w, row)


@numba.njit(nogil=True, cache=True, inline="always")
def _lookup_row(s: np.ndarray, flipped: bool, t0: np.ndarray, t1: np.ndarray, t2: np.ndarray, start: int, end: int,
                w: int, row: np.ndarray) -> None:
    """row[3x + c] = t_c[s[3x' + c]] for start <= x < end, x' = w - 1 - x where flipped, else x."""
    if flipped:
        for x in range(start, end):
            o, i = 3 * x, 3 * (w - 1 - x)
            row[o], row[o + 1], row[o + 2] = t0[s[i]], t1[s[i + 1]], t2[s[i + 2]]
    else:
        for x in range(start, end):
            o = 3 * x
            row[o], row[o + 1], row[o + 2] = t0[s[o]], t1[s[o + 1]], t2[s[o + 2]]


@numba.njit(nogil=True, cache=True)
def _mixup_pixels(src: np.ndarray, flips: np.ndarray, perm: np.ndarray, table: np.ndarray, own: float, other: float,
                  start: int, end: int, dst: np.ndarray) -> None:
    """dst[n - start] = x[n] * own + x[perm[n]] * other in float32 (as `mix`), x = the looked-up, mirrored pixels,
    for start <= n < end."""
    _, h, w, _ = src.shape
    own, other = numba.float32(own), numba.float32(other)
    for n in range(start, end):
        p = perm[n]
        for y in range(h):
            row = dst[n - start, y]
            for x in range(w):
                xs = w - 1 - x if flips[n] else x
                xp = w - 1 - x if flips[p] else x
                for c in range(3):
                    row[x, c] = table[c, src[n, y, xs, c]] * own + table[c, src[p, y, xp, c]] * other


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
        # compiled: the pure graph; eager on the CPU: the fast path with the same values; eager elsewhere: as is
        if compile:
            self.stage = torch.compile(device_stage)
        else:
            self.stage = cpu_stage if self.device.type == "cpu" else device_stage
        self._buffers: list[tuple[torch.Tensor, int]] = []  # cpu_stage's outputs and their storage refs when free

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
        options: dict = {}
        if self.stage is cpu_stage:
            options["out"] = self._output_buffer(images.shape[0], images.shape[1], images.shape[2])
        elif self.dynamic_spatial and self.stage is not device_stage:
            torch._dynamo.mark_dynamic(images, 1)
            torch._dynamo.mark_dynamic(images, 2)
        x, mixed = self.stage(images, targets, draws, self.mean255, self.inv_std255, dtype=self.dtype,
                              flip=self.flip, mixing=self.mixing, **options)
        if labels is None:
            return x, None
        return x, (dict(zip(names, mixed)) if self.mixing else dict(labels))

    def _output_buffer(self, batch: int, height: int, width: int) -> torch.Tensor:
        """The CPU path's NHWC output: one of the last CPU_OUTPUT_BUFFERS buffers when nothing outside this object
        still refers to its storage (the caller dropped that x and every view of it), else a new one. A new 38 MB
        buffer costs ~17 ms of page faults here (224 px, batch 64), more than the stage's own work. Two buffers:
        a training loop still holds batch k (its loop variable, the generator's frame) while batch k + 1 is made.
        """
        shape = (batch, height, width, 3)
        for buf, refs in self._buffers:
            if buf.shape == shape and _storage_refs(buf) == refs:
                return buf
        buf = torch.empty(shape, dtype=self.dtype, device=self.device)
        refs = _storage_refs(buf)
        if refs > 0:
            self._buffers = [*self._buffers[max(0, len(self._buffers) + 1 - CPU_OUTPUT_BUFFERS):], (buf, refs)]
        return buf

    def _soft(self, name: str, labels: torch.Tensor) -> torch.Tensor:
        if labels.is_floating_point():
            return labels.float()
        if name not in self.num_classes:
            raise ValueError(f"mixing needs num_classes for level {name!r}; got {sorted(self.num_classes)}")
        return torch.nn.functional.one_hot(labels.long(), self.num_classes[name]).float()


def _storage_refs(t: torch.Tensor) -> int:
    """References to `t`'s storage (tensors and views of it), or -1 where torch does not say: the private
    counter that inductor's cudagraph trees read to know whether an output is still alive."""
    counter = getattr(torch._C, "_storage_Use_Count", None)
    if counter is None:
        return -1
    return int(counter(t.untyped_storage()._cdata))


def _beta(alpha: float, device: torch.device) -> torch.distributions.Beta | None:
    if alpha <= 0:
        return None
    a = torch.tensor(float(alpha), device=device)
    return torch.distributions.Beta(a, a)
