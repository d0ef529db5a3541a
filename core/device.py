"""Where a run computes and in which precision: `train.device` and `train.precision` resolved to torch objects."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from core.format.config import ConfigError


@dataclass(frozen=True)
class Precision:
    """Autocast settings of a run: bf16/fp16 autocast on CUDA, none (fp32) on CPU unless asked."""

    device_type: str
    dtype: torch.dtype | None  # None = no autocast

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but no CUDA device is available")
    return dev


def resolve_precision(name: str, device: torch.device) -> Precision:
    if name == "auto":
        name = "bf16" if device.type == "cuda" else "fp32"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[name]
    return Precision(device.type, dtype)
