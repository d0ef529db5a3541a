"""The registry of extra batch augmentations, applied after the fused flip + mixup/cutmix stage
(core.data.device_stage) on the training batch only, in the order data.augment lists them.

`data.augment` maps a registered name to its parameters, e.g. in a run's YAML
    data:
      augment: {random_erasing: {p: 0.25}}
or `--set data.augment.random_erasing.p=0.25` (`{}` for the defaults). An unknown name fails when the config is
loaded (DataConfig types its keys with `AugmentName`), naming the key and the registered names; an unknown or
badly typed parameter fails where the augment is built (`build`), naming `data.augment.<name>.<param>`.

Each augmentation is a frozen dataclass of its parameters (the schema, as for every config) with two methods:
  draw(shape, device, generator=None) -> the random tensors of one batch; `shape` is the batch's (B, C, H, W);
      torch's global generator when `generator` is None; a tuple (NamedTuple) of tensors. The draws are made
      outside the compiled graph, which then holds no RNG (as core.data.device_stage.Draws); 4-d draws are
      (B, C, H, W)-shaped like the batch and marked dynamic in H and W with it (core.data.augment).
  apply(x, targets, drawn) -> (x, targets): a pure batched tensor function. x: the normalised float NCHW batch
      (in the stage's dtype); targets: the list of per-level targets (float (B, C) soft targets when mixing,
      else class indices (B,)), in the order of the labels given to GpuAugment.
GpuAugment (core.data.augment) calls them inside the compiled stage when it compiles, eagerly otherwise.

To add one:
  1. write core/data/batch_augment/<name>.py with that dataclass (see random_erasing.py);
  2. add one line `"<name>": "core.data.batch_augment.<name>:<Class>"` to AUGMENTS below.

This module imports neither torch nor the augmentations (core.train.run_config imports it and stays torch-free);
`build` imports the one it needs.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Literal

# name -> "module:class" of every extra batch augmentation
AUGMENTS: dict[str, str] = {
    "random_erasing": "core.data.batch_augment.random_erasing:RandomErasing",
}

AugmentName = Literal[tuple(AUGMENTS)]  # type: ignore[valid-type]  # the names a config may use


def build(name: str, params: Mapping[str, Any], key: str = "data.augment") -> Any:
    """The augmentation registered as `name` with `params`, checked as a config section (unknown or badly typed
    parameters raise core.format.config.ConfigError naming `key.name.param`)."""
    from core.format.config import ConfigError, parse

    if name not in AUGMENTS:
        raise ConfigError(f"config key {f'{key}.{name}'!r}: unknown augmentation; registered: {sorted(AUGMENTS)}")
    module, cls = AUGMENTS[name].split(":")
    return parse(getattr(importlib.import_module(module), cls), dict(params), key=f"{key}.{name}")


def build_all(augment: Mapping[str, Mapping[str, Any]], key: str = "data.augment") -> tuple[Any, ...]:
    """Every augmentation of a config's `data.augment`, in its order."""
    return tuple(build(name, params, key) for name, params in augment.items())
