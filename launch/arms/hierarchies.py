"""Derived control hierarchies as pretraining arms (Hong et al. 2303.16887, their iNat2021 comparison): k-means
within each target class ("aligned"), k-means over the whole set ("misaligned"), the leaves dealt into random
groups, one class per training sample.

`prepare` derives every level the `hierarchies` section asks for into the dataset folder (data_tools/derive.py;
the same derivation again is a no-op, so a rerun reuses them), after checking all of them; `plan` then plans one
pretraining run per derived level and seed, which the transfer, probe and clustering arms follow like taxonomy
levels. Each job carries its hierarchy's kind (a key of KINDS) as JobSpec.arm, so run names, the report's curves
and launch.arms.runner tell the hierarchies apart; the kinds' levels are named from their parameters as
`grainsweep derive` names them by default.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from core.format import config as cfglib
from core.format import derived as dlib
from core.format import hierarchy as hlib
from core.format.run_folder import MANIFEST_FILE, RunFolder
from launch.arms.base import SOURCE_KIND, Arm

if TYPE_CHECKING:
    from launch.plan import JobSpec, PlanContext
    from launch.sweep_config import SweepConfig

# hierarchy kind (its config key and its runs' JobSpec.arm) -> its name in the report
KINDS = {"kmeans_aligned": "k-means within target classes (aligned)",
         "kmeans_misaligned": "k-means on the whole set (misaligned)",
         "random": "random groups of leaves", "per_sample": "one class per sample"}


def _counts(key: str, values: tuple[int, ...] | None) -> None:
    if values is None:
        return
    if not values:
        raise ValueError(f"{key}: an empty list; give at least one value or leave the key out")
    for i, v in enumerate(values):
        if v < 1:
            raise ValueError(f"{key}[{i}]={v} must be >= 1")
    if len(set(values)) != len(values):
        raise ValueError(f"{key}: {list(values)} repeats a value")


@dataclass(frozen=True)
class AlignedConfig:
    k: tuple[int, ...] | None = None  # clusters per class of `within`, one derived level per value; None = none
    within: str = ""  # the level whose classes k-means runs within; '' = target_level (else the coarsest level)

    def __post_init__(self) -> None:
        _counts("k", self.k)


@dataclass(frozen=True)
class MisalignedConfig:
    k: tuple[int, ...] | None = None  # clusters over the whole training set, one derived level per value

    def __post_init__(self) -> None:
        _counts("k", self.k)


@dataclass(frozen=True)
class RandomConfig:
    groups: tuple[int, ...] | None = None  # groups the leaves are dealt into, one derived level per value

    def __post_init__(self) -> None:
        _counts("groups", self.groups)


@dataclass(frozen=True)
class HierarchiesConfig:
    enabled: bool = False  # pretrain on the derived levels below too (one run per level and seed)
    features: str = "pixels"  # k-means features: 'pixels' (images at 8x8) or a run folder (its forward_features)
    seed: int = 0  # seed of k-means and of the random dealing: the hierarchy is data, the same for every run seed
    kmeans_aligned: AlignedConfig = field(default_factory=AlignedConfig)
    kmeans_misaligned: MisalignedConfig = field(default_factory=MisalignedConfig)
    random: RandomConfig = field(default_factory=RandomConfig)
    per_sample: bool = False  # one class per training sample (pretraining only)

    def __post_init__(self) -> None:
        if self.enabled and not wanted_kinds(self):
            raise ValueError(f"enabled but no hierarchy asked for; set one of {list(KINDS)}")


def wanted_kinds(h: HierarchiesConfig) -> list[str]:
    return [kind for kind, on in (("kmeans_aligned", h.kmeans_aligned.k), ("kmeans_misaligned", h.kmeans_misaligned.k),
                                  ("random", h.random.groups), ("per_sample", h.per_sample)) if on]


class Level(NamedTuple):
    """One derived level the section asks for."""

    kind: str  # a key of KINDS
    key: str  # the config key that asks for it (named in messages)
    name: str  # the derived level's name in the dataset
    size: int  # k or groups (0 for per_sample)


def levels(cfg: SweepConfig, h: hlib.Hierarchy, data: Path) -> list[Level]:
    """The derived levels asked for, named as `grainsweep derive` names them by default (reads no beton)."""
    s, out = cfg.hierarchies, []
    tag = feature_tag(s.features) if s.kmeans_aligned.k or s.kmeans_misaligned.k else ""
    within = aligned_within(cfg, h, data)
    for i, k in enumerate(s.kmeans_aligned.k or ()):
        out.append(Level("kmeans_aligned", f"hierarchies.kmeans_aligned.k[{i}]", dlib.kmeans_name(k, within, tag), k))
    for i, k in enumerate(s.kmeans_misaligned.k or ()):
        out.append(Level("kmeans_misaligned", f"hierarchies.kmeans_misaligned.k[{i}]", dlib.kmeans_name(k, None, tag), k))
    for i, g in enumerate(s.random.groups or ()):
        out.append(Level("random", f"hierarchies.random.groups[{i}]", dlib.random_name(g, s.seed), g))
    if s.per_sample:
        out.append(Level("per_sample", "hierarchies.per_sample", "per_sample", 0))
    return out


def aligned_within(cfg: SweepConfig, h: hlib.Hierarchy, data: Path) -> str:
    within = cfg.hierarchies.kmeans_aligned.within or cfg.target_level or h.names[-1]
    if cfg.hierarchies.kmeans_aligned.k and within not in h.names:
        key = "hierarchies.kmeans_aligned.within" if cfg.hierarchies.kmeans_aligned.within else "target_level"
        raise cfglib.ConfigError(f"{key}={within!r} is not a level of {data}; its levels are {h.names}"
                                 + ("" if cfg.hierarchies.kmeans_aligned.within else
                                    " (set hierarchies.kmeans_aligned.within: the level k-means runs within)"))
    return within


def feature_tag(features: str) -> str:
    """'pixels', or 'run-<run folder name>-<newest checkpoint>' as `grainsweep derive --features RUN` tags it."""
    if features == "pixels":
        return features
    run = Path(features)
    if not (run / "config.yaml").is_file():
        raise cfglib.ConfigError(f"hierarchies.features={features!r}: no run folder there (a finished "
                                 "`grainsweep train` run, or 'pixels')")
    newest = RunFolder(run).newest_checkpoint()
    if newest is None:
        raise cfglib.ConfigError(f"hierarchies.features={features!r}: the run has no checkpoint")
    return f"run-{run.resolve().name}-{newest.stem}"


def check(cfg: SweepConfig, data: Path, wanted: list[Level]) -> None:
    """What the dataset allows, checked for every level before any is derived (reads the train beton's labels)."""
    from data_tools import derive

    h = hlib.load(data)
    n_train = json.loads((data / MANIFEST_FILE).read_text())["splits"]["train"]
    within = aligned_within(cfg, h, data)
    smallest = None
    for lv in wanted:
        if lv.kind == "kmeans_misaligned" and lv.size > n_train:
            raise cfglib.ConfigError(f"{lv.key}={lv.size} is larger than the training set of {data} ({n_train} "
                                     "images): k-means makes at most one cluster per image")
        if lv.kind == "kmeans_aligned":
            if smallest is None:
                import numpy as np

                labels = derive.read_int_columns(data / "train.beton", [within])[within]
                counts = np.bincount(labels, minlength=h.level(within).num_classes)
                smallest = int(counts.min())
            if lv.size > smallest:
                raise cfglib.ConfigError(f"{lv.key}={lv.size} clusters per class, but the smallest class of "
                                         f"{within} has {smallest} training images: k-means makes at most one "
                                         "cluster per image")
        if lv.kind == "random" and lv.size > h.num_leaves:
            raise cfglib.ConfigError(f"{lv.key}={lv.size} groups, but {data} has only {h.num_leaves} leaves")


def derive_all(cfg: SweepConfig, data: Path, wanted: list[Level]) -> None:
    """Derives each level (a no-op for one already there)."""
    from data_tools import derive

    s = cfg.hierarchies
    tag = feature_tag(s.features) if any(lv.kind.startswith("kmeans") for lv in wanted) else ""
    # computed at most once per split for all k (derive computes them only for a level not already there)
    features = functools.cache(lambda split: derive.pixel_features(data / f"{split}.beton"))
    if tag and s.features != "pixels":
        from launch.cli_derive import run_features

        features, loaded = run_features(Path(s.features), data, "auto")
        if loaded != tag:  # names were planned from the newest checkpoint file, which did not load
            raise cfglib.ConfigError(f"hierarchies.features={s.features!r}: its newest checkpoint did not load "
                                     f"({loaded} did); remove the damaged file or train the run again")
    within = aligned_within(cfg, hlib.load(data), data)
    for lv in wanted:
        try:
            if lv.kind == "kmeans_aligned":
                d = derive.kmeans(data, lv.size, within=within, features=features, feature_tag=tag, name=lv.name,
                                  seed=s.seed)
            elif lv.kind == "kmeans_misaligned":
                d = derive.kmeans(data, lv.size, features=features, feature_tag=tag, name=lv.name, seed=s.seed)
            elif lv.kind == "random":
                d = derive.random_groups(data, lv.size, seed=s.seed, name=lv.name)
            else:
                d = derive.per_sample(data, name=lv.name)
        except hlib.HierarchyError as e:
            raise cfglib.ConfigError(f"{lv.key}: {e}") from None
        print(f"hierarchy level {d.name}: {d.num_classes} classes, {'derived' if d.written else 'already there'}",
              flush=True)


class Hierarchies(Arm):
    name = "hierarchies"
    switch = "hierarchies"
    stage = 1
    kind = SOURCE_KIND
    table = "pretrained"
    tag = "hierarchies"  # the registry's instance; each job carries its hierarchy's kind instead (owns)
    suffix = ""  # the derived level's name says which hierarchy it is
    plot = "line"

    def __init__(self, tag: str = "") -> None:
        if tag:  # the arm as seen by the jobs of one hierarchy kind (PlanContext.job names them by arm.tag)
            self.tag = tag

    def owns(self, tag: str) -> bool:
        return tag == Hierarchies.tag or tag in KINDS

    def prepare(self, cfg: SweepConfig, data: Path) -> None:
        wanted = levels(cfg, hlib.load(data), data)
        check(cfg, data, wanted)
        derive_all(cfg, data, wanted)

    def plan(self, ctx: PlanContext, sources: list[JobSpec]) -> list[JobSpec]:
        wanted = levels(ctx.cfg, ctx.hierarchy, ctx.data)
        for lv in wanted:
            if lv.name not in ctx.hierarchy.derived:
                raise cfglib.ConfigError(f"{lv.key}: the derived level {lv.name!r} is not in {ctx.data}; "
                                         "`grainsweep sweep` derives it first (launch.plan.prepare)")
        return [ctx.job(Hierarchies(lv.kind), ctx.run_config(lv.name, seed, key=lv.key), lv.name, seed,
                        pretrain_level=lv.name) for seed in ctx.cfg.seeds for lv in wanted]

    def setting(self, pretrain_level: str, target: str) -> str:
        return "control hierarchy"

    def hierarchy(self, tag: str) -> str:
        return KINDS.get(tag, "control hierarchy")
