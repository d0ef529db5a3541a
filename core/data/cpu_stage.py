"""`cpu_stage`: core.data.device_stage.device_stage for CPU tensors run eagerly, in one numba pass over the pixels,
with equal results (torch.equal, tests/test_augment.py). core.data.augment.GpuAugment calls it when it runs eager
on the CPU (what `grainsweep train` does there); the measurements that justify it are in core/data/augment.py's
docstring and benchmarks/RESULTS.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
import torch

from core.data.device_stage import Draws, cutmix_box, mix_targets, normalize

CPU_CHUNK_ELEMENTS = 2**18  # float32 values per chunk of the CPU path when casting to bf16/fp16 (1 MiB, in L2)


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
