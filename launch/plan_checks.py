"""The checks of a sweep config against its dataset, run before anything is planned or submitted; each raises
ConfigError naming the key at fault."""

from __future__ import annotations

import json
from dataclasses import dataclass
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
                                     "pretrain_levels, target_dataset and target_level)")


@dataclass(frozen=True)
class Target:
    """What the transfers and the scratch baseline train and evaluate on."""

    data: Path  # the target dataset folder, absolute (the pretraining dataset's unless target_dataset is set)
    hierarchy: hlib.Hierarchy
    level: str
    shared: bool  # the level is also a level of the pretraining dataset with the same classes: a pretraining run
    # is read at it (the report's "before any transfer" rows), pretraining on it is a baseline, and pretraining
    # levels must be at least as fine


def dataset_folder(key: str, value: str) -> Path:
    """A converted dataset folder named by the config key `key`, absolute."""
    path = Path(value).resolve()
    if not path.is_dir():
        raise cfglib.ConfigError(f"{key}={value!r}: no such dataset folder")
    for name in ("train.beton", "val.beton", hlib.FILENAME):
        if not (path / name).is_file():
            raise cfglib.ConfigError(f"{key}={value!r}: missing {name}")
    return path


def target(cfg: SweepConfig, h: hlib.Hierarchy, data: Path) -> Target:
    """The target dataset and level, checked against the pretraining dataset `data` (hierarchy `h`)."""
    tdata, th = data, h
    if cfg.target_dataset:
        tdata = dataset_folder("target_dataset", cfg.target_dataset)
        try:
            th = hlib.load(tdata)
        except (hlib.HierarchyError, ValueError, KeyError) as e:
            raise cfglib.ConfigError(f"target_dataset={cfg.target_dataset!r}: {e}") from None
    level = cfg.target_level or th.names[-1]
    if level not in th.names:
        raise cfglib.ConfigError(f"target_level={level!r} is not a level of {tdata}; its levels are {th.names}")
    shared = level in h.names and h.level(level).classes == th.level(level).classes
    return Target(tdata, th, level, shared)


def levels(cfg: SweepConfig, h: hlib.Hierarchy, data: Path, goal: Target) -> list[str]:
    """The pretraining levels asked for, finest first: by default every level from the finest to the target
    (every level where the target's classes are not the pretraining dataset's)."""
    levels = list(cfg.pretrain_levels) or (h.names[:h.index(goal.level) + 1] if goal.shared else h.names)
    for i, lv in enumerate(levels):
        if lv not in h.names:
            raise cfglib.ConfigError(f"pretrain_levels[{i}]={lv!r} is not a level of {data}; its levels are "
                                     f"{h.names}")
        if goal.shared and h.index(lv) > h.index(goal.level):
            raise cfglib.ConfigError(f"pretrain_levels[{i}]={lv!r} is coarser than target_level={goal.level!r}; "
                                     "transfer goes from finer (or equal) levels to the target")
    return sorted(dict.fromkeys(levels), key=h.index)


def check_data(key: str, run: RunConfig) -> None:
    """The betons of `run`'s dataset hold labels that fit its hierarchy, and the level exists (what a run checks
    when it starts, core.train.parts.check_data), reported under the config key `key`."""
    from core.train.parts import check_data as run_check

    try:
        run_check(run)
    except cfglib.ConfigError as e:
        raise cfglib.ConfigError(f"{key}: {e}") from None


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


def check_batch_size(key: str, run: RunConfig) -> None:
    # training drops the last partial batch: a batch larger than the training set would run no step at all
    n = split_images(run.data.path, "train")
    if n is not None and run.data.batch_size > n:
        raise cfglib.ConfigError(f"{key}={run.data.batch_size} is larger than the training set of "
                                 f"{run.data.path} ({n} images)")


def split_images(data: str | Path, split: str) -> int | None:
    """A split's number of images from the dataset's manifest.json (None without one)."""
    manifest = Path(data) / MANIFEST_FILE
    if not manifest.is_file():
        return None
    n = json.loads(manifest.read_text()).get("splits", {}).get(split)
    return n if isinstance(n, int) else None
