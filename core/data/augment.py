"""The per-batch device stage as one callable: uint8 NHWC batch -> normalised NCHW (channels_last) in
bf16/fp16/fp32, with an optional horizontal flip and mixup / cutmix on soft targets.

The stage itself is core.data.device_stage.device_stage, a pure tensor function of the batch and of the random
draws (`Draws`). `GpuAugment` holds the fixed work (mean/std tensors on the device, built once), makes the
draws and calls the stage, compiled with torch.compile unless `compile=False`. Eager on the CPU (what
`grainsweep train` does there: it compiles on CUDA only), it calls core.data.cpu_stage.cpu_stage instead, a numba
kernel with the same results (torch.equal, tests/test_augment.py) at a fraction of the cost: 224 px, batch 64,
flip, 2 shared cores at load ~4, 14 ms a batch against 216 ms for the eager reference (benchmarks/RESULTS.md;
~120 ms at load 1), and nothing to compile: the compiled reference took 104 ms a batch against cpu_stage's 11 ms,
side by side at load 2.5 (and 20-60 s to compile from a cold cache), so compiling never pays on the CPU.

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

Extra batch augmentations (core.data.batch_augment, chosen by data.augment; random erasing, ...) run after the
fused stage: inside the compiled function when compiling (one graph: `with_extras`), eagerly after cpu_stage or
device_stage otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from core.data.batch_augment import build_all
from core.data.cpu_stage import cpu_stage
from core.data.device_stage import Draws, device_stage

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # per RGB channel, fraction of 255
IMAGENET_STD = (0.229, 0.224, 0.225)  # per RGB channel, fraction of 255
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CPU_OUTPUT_BUFFERS = 2  # output buffers the CPU path recycles: the consumer's batch and the one being made


class RngStream:
    """Random numbers of one's own from torch's global generators: inside `with stream:` the CPU generator (and
    `device`'s CUDA generator) continue this stream; outside, the caller's state is as it was.

    Why: draws that must not depend on what else runs in the process. The device stage's draws (flip, mixup) would
    otherwise depend on how many numbers model init and dropout took before them, and several models trained in
    one process (core/train/fused.py) would each shift the others' draws. Swapping the state costs a copy of a few
    KB per use; it lets any code draw (torch.distributions, the extra augmentations) without a generator argument.
    `seeded(seed, epoch)` starts a stream that is a function of (seed, epoch) alone; `capture` one that continues
    the global state of now."""

    def __init__(self, device: str | torch.device, states: tuple[torch.Tensor, ...] | None = None,
                 seed: int = 0) -> None:
        self.device = torch.device(device)
        self.seed = seed
        self._states = states

    @classmethod
    def capture(cls, device: str | torch.device) -> RngStream:
        """A stream that continues from the global generators' state now."""
        stream = cls(device)
        stream._states = stream._get()
        return stream

    def set_epoch(self, epoch: int) -> None:
        """Restarts the stream at a function of (seed, epoch): what a resumed run at `epoch` draws again."""
        words = np.random.SeedSequence([int(self.seed) % 2**64, int(epoch)]).generate_state(2, np.uint32)
        previous = self._get()
        try:
            torch.default_generator.manual_seed(int(words[0]) << 32 | int(words[1]))
            if self.device.type == "cuda":
                with torch.cuda.device(self.device):
                    torch.cuda.manual_seed(int(words[0]) << 32 | int(words[1]))
            self._states = self._get()
        finally:
            self._set(previous)

    def _get(self) -> tuple[torch.Tensor, ...]:
        if self.device.type == "cuda":
            return torch.get_rng_state(), torch.cuda.get_rng_state(self.device)
        return (torch.get_rng_state(),)

    def _set(self, states: tuple[torch.Tensor, ...]) -> None:
        torch.set_rng_state(states[0])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(states[1], self.device)

    def __enter__(self) -> RngStream:
        self._outer = self._get()
        if self._states is None:
            self.set_epoch(0)
        self._set(self._states)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._states = self._get()
        self._set(self._outer)


class GpuAugment:
    """Callable `(images_u8_nhwc, labels) -> (x, targets)` for one device, dtype and set of augmentations.

    labels: {level: int64 (B,) class indices or float (B, C) soft targets}, or None.
    targets: without mixing, `labels` unchanged; with mixing, {level: float32 (B, C)} soft targets that sum to 1
    (class indices become one-hot with C = `num_classes[level]`).
    mixup_alpha / cutmix_alpha: Beta(alpha, alpha) for lambda; 0 turns that one off. With both on, a batch uses
    cutmix with probability `switch_prob`. `mix_prob`: probability that a batch is mixed at all.
    augment: extra batch augmentations, registered name -> parameters (data.augment; core.data.batch_augment),
    applied in order after the fused stage; their targets are the soft targets when mixing, else the labels as
    given. A bad name or parameter raises core.format.config.ConfigError naming `data.augment.<name>...`.
    rng: where the random draws come from: a `RngStream` (a training run's: restarted each epoch from the seed and
    the epoch, so a resumed run draws again what it drew, whatever else ran in the process), or None: torch's
    global generator.
    """

    def __init__(self, *, device: str | torch.device, dtype: torch.dtype = torch.bfloat16,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, flip: bool = False,
                 mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, mix_prob: float = 1.0,
                 switch_prob: float = 0.5, num_classes: Mapping[str, int] | None = None, compile: bool = True,
                 dynamic_spatial: bool = True, augment: Mapping[str, Mapping[str, Any]] | None = None,
                 rng: RngStream | None = None) -> None:
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
        self.rng = rng
        self.augments = build_all(augment or {})
        # fixed work, once: per-channel constants on the device, broadcast over NHWC's last dim
        self.mean255 = torch.tensor(mean, dtype=torch.float32, device=self.device) * 255
        self.inv_std255 = 1.0 / (torch.tensor(std, dtype=torch.float32, device=self.device) * 255)
        self._mixup = _beta(mixup_alpha, self.device)
        self._cutmix = _beta(cutmix_alpha, self.device)
        if not self._mixup and self._cutmix:
            self.switch_prob = 1.0
        # compiled: the pure graph; eager on the CPU: the fast path with the same values; eager elsewhere: as is
        self.compiled = compile
        if compile:
            self.stage = torch.compile(with_extras if self.augments else device_stage)
        else:
            self.stage = cpu_stage if self.device.type == "cpu" else device_stage
        self._buffers: list[tuple[torch.Tensor, int]] = []  # cpu_stage's outputs and their storage refs when free

    def draw(self, batch_size: int) -> Draws:
        """The random numbers of one batch, drawn on the device from `rng` (or torch's global generator)."""
        if self.rng is not None:
            with self.rng:
                return self._draw(batch_size)
        return self._draw(batch_size)

    def _draw(self, batch_size: int) -> Draws:
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

    def draw_extras(self, shape: tuple[int, ...] | torch.Size) -> tuple[Any, ...]:
        """The random tensors of each extra augmentation for an NCHW batch of `shape`, from `rng` (or torch's global
        generator)."""
        if self.rng is not None:
            with self.rng:
                return tuple(a.draw(shape, self.device) for a in self.augments)
        return tuple(a.draw(shape, self.device) for a in self.augments)

    def __call__(self, images: torch.Tensor, labels: Mapping[str, torch.Tensor] | None = None,
                 draws: Draws | None = None,
                 extra_draws: Sequence[Any] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
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
        elif self.dynamic_spatial and self.compiled:
            torch._dynamo.mark_dynamic(images, 1)
            torch._dynamo.mark_dynamic(images, 2)
        if self.augments:
            if extra_draws is None:
                extra_draws = self.draw_extras((images.shape[0], 3, images.shape[1], images.shape[2]))
            if self.dynamic_spatial and self.compiled:  # batch-shaped draws (noise) share the batch's H and W
                for t in (t for drawn in extra_draws for t in drawn):
                    if isinstance(t, torch.Tensor) and t.ndim == 4:
                        torch._dynamo.mark_dynamic(t, 2)
                        torch._dynamo.mark_dynamic(t, 3)
            options.update(labels=[labels[name] for name in names], augments=self.augments,
                           extra_draws=tuple(extra_draws))
            stage = self.stage if self.compiled else functools.partial(with_extras, stage=self.stage)
        else:
            stage = self.stage
        x, out = stage(images, targets, draws, self.mean255, self.inv_std255, dtype=self.dtype,
                       flip=self.flip, mixing=self.mixing, **options)
        if labels is None:
            return x, None
        return x, (dict(zip(names, out)) if self.mixing or self.augments else dict(labels))

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


def with_extras(images: torch.Tensor, targets: Sequence[torch.Tensor], draws: Draws, mean255: torch.Tensor,
                inv_std255: torch.Tensor, *, dtype: torch.dtype, flip: bool, mixing: bool,
                labels: Sequence[torch.Tensor], augments: Sequence[Any], extra_draws: Sequence[Any],
                stage: Any = device_stage, **options: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The fused stage, then each extra augmentation on its output; the function compiled when there are extras.
    Their targets: the mixed soft targets when `mixing`, else `labels` (each level's labels as given)."""
    x, mixed = stage(images, targets, draws, mean255, inv_std255, dtype=dtype, flip=flip, mixing=mixing,
                     **options)
    out = list(mixed) if mixing else list(labels)
    for augment, drawn in zip(augments, extra_draws):
        x, out = augment.apply(x, out, drawn)
    return x.contiguous(memory_format=torch.channels_last), out


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
