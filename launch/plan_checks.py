"""The checks of a sweep config against its dataset, run before anything is planned or submitted; each raises
ConfigError naming the key at fault."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


from core.format import config as cfglib
from core.format import hierarchy as hlib
from core.format.run_folder import MANIFEST_FILE
from core.train.run_config import RunConfig
from launch.sweep_config import SweepConfig


def check_run(cfg: SweepConfig) -> None:
    for key, value, default in (("run.data.path", cfg.run.data.path, RunConfig().data.path),
                                ("run.data.level", cfg.run.data.level, RunConfig().data.level)):
        if value != default:
            raise cfglib.ConfigError(f"{key}={value!r}: the sweep sets it per job (use dataset.path, "
                                     "pretrain_levels and target_level)")


def levels(cfg: SweepConfig, h: hlib.Hierarchy, data: Path) -> tuple[str, list[str]]:
    """(target level, pretraining levels asked for, finest first)."""
    target = cfg.target_level or h.names[-1]
    if target not in h.names:
        raise cfglib.ConfigError(f"target_level={target!r} is not a level of {data}; its levels are {h.names}")
    levels = list(cfg.pretrain_levels) or h.names[:h.index(target) + 1]
    for i, lv in enumerate(levels):
        if lv not in h.names:
            raise cfglib.ConfigError(f"pretrain_levels[{i}]={lv!r} is not a level of {data}; its levels are "
                                     f"{h.names}")
        if h.index(lv) > h.index(target):
            raise cfglib.ConfigError(f"pretrain_levels[{i}]={lv!r} is coarser than target_level={target!r}; "
                                     "transfer goes from finer (or equal) levels to the target")
    return target, sorted(dict.fromkeys(levels), key=h.index)


def parse_sets(key: str, sets: tuple[str, ...], fixed: tuple[str, ...]) -> dict[str, Any]:
    """A list of the user's 'a.b=value' overrides as {dotted key: value}, values read as YAML (as `--set`)."""
    out: dict[str, Any] = {}
    for item in sets:
        try:
            dotted, value = cfglib.parse_override(item)
        except cfglib.ConfigError as e:
            raise cfglib.ConfigError(f"{key}: {e}") from None
        if any(dotted == f or dotted.startswith(f + ".") or f.startswith(dotted + ".") for f in fixed):
            raise cfglib.ConfigError(f"{key}: {item!r} cannot be changed here ({', '.join(fixed)} are fixed: a "
                                     "transfer keeps the pretrained model, the sweep sets the data)")
        out[dotted] = value
    return out


def check_model(run: RunConfig, num_classes: int) -> None:
    # building the model once on the CPU catches an unknown name or bad kwargs before any job is submitted
    from core.models.build import build_model

    try:
        build_model(run.model.name, num_classes, run.data.resolution, **run.model.kwargs)
    except (ValueError, TypeError, RuntimeError) as e:
        raise cfglib.ConfigError(f"run.model.name={run.model.name!r} / run.model.kwargs={run.model.kwargs}: "
                                 f"{e}") from None


def check_batch_size(cfg: SweepConfig, data: Path) -> None:
    # training drops the last partial batch: a batch larger than the training set would run no step at all
    manifest = data / MANIFEST_FILE
    if not manifest.is_file():
        return
    n = json.loads(manifest.read_text()).get("splits", {}).get("train")
    if isinstance(n, int) and cfg.run.data.batch_size > n:
        raise cfglib.ConfigError(f"run.data.batch_size={cfg.run.data.batch_size} is larger than the training set "
                                 f"of {data} ({n} images)")
