"""Derived label levels: extra labellings of an existing dataset, stored beside its betons as sidecars.

Written by data_tools/derive.py (k-means clusters, random groupings of the leaves, one class per sample), read
here so that training can use a derived level like a beton column. Adding an IntField to a beton would mean
rewriting it, so a derived level lives in the dataset folder as

    derived/<name>.json         {"format": 1, "name", "kind", "params", "classes", "titles",
                                 "parent_level": level it nests under or null, "parent_of_class": [...] or null,
                                 "leaf_to_class": [...] or null (set when the level is a function of the leaf),
                                 "splits": {"train": {"file": "<name>.train.npy", "entries": N,
                                                      "labelled": M},
                                            "val": {...}}}
    derived/<name>.<split>.npy  int64 labels indexed by the beton's `index` column; -1 = no class

and is registered by name under "derived" in hierarchy.json (core/format/hierarchy.py). The registry entry is written
last, so a level is usable only once all its files are complete.

Evaluation (`eval_hierarchy`): a derived level becomes the finest level of a small hierarchy made of itself
and, when it nests (`parent_level`, e.g. k-means within each superclass), every level from `parent_level` up,
so accuracy is reported at the derived level and at the coarser levels it nests under. A level that does not
nest (whole-set k-means, random groups, per-sample) is evaluated at itself only. A split with no labelled row
(the per-sample level's val split: val samples are not training samples, so they have no class) is evaluated
on the train beton instead (`eval_beton`): the per-sample level is for pretraining only.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.format import hierarchy as hlib

DIR_NAME = "derived"
FORMAT = 1


def kmeans_name(k: int, within: str | None, feature_tag: str) -> str:
    """The default name of a k-means level (`grainsweep derive kmeans`, a sweep's `hierarchies`)."""
    tag = re.sub(r"[^A-Za-z0-9_-]+", "-", feature_tag).strip("-") or "features"
    return f"kmeans{k}" + (f"_in_{within}" if within else "") + f"_{tag}"


def random_name(groups: int, seed: int) -> str:
    """The default name of a random grouping of the leaves."""
    return f"random{groups}_seed{seed}"


class DerivedError(hlib.HierarchyError):
    """A derived level that is missing, inconsistent with its dataset, or clashes with an existing name."""


@dataclass(frozen=True)
class DerivedLevel:
    name: str
    kind: str  # 'kmeans', 'random', 'per_sample'
    params: dict
    classes: tuple[str, ...]
    titles: tuple[str, ...]
    parent_level: str | None  # the hierarchy level this one nests under, if any
    parent_of_class: tuple[int, ...] | None  # class index at parent_level of each derived class
    leaf_to_class: tuple[int, ...] | None  # set when the level is a function of the leaf
    splits: dict  # split -> {"file", "entries" (table size), "labelled" (entries with a class)}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def labelled(self, split: str) -> int:
        return int(self.splits.get(split, {}).get("labelled", 0))


def sidecar_path(data_dir: str | os.PathLike, name: str) -> Path:
    return Path(data_dir) / DIR_NAME / f"{name}.json"


def is_registered(data_dir: str | os.PathLike, name: str) -> bool:
    h_file = Path(data_dir) / hlib.FILENAME
    return h_file.is_file() and name in hlib.load(h_file).derived


def load(data_dir: str | os.PathLike, name: str) -> DerivedLevel:
    """The sidecar of the registered derived level `name` of the dataset in `data_dir`."""
    data_dir = Path(data_dir)
    h = hlib.load(data_dir)
    if name not in h.derived:
        raise DerivedError(f"{data_dir}: no derived level {name!r}; registered: {list(h.derived)}")
    path = sidecar_path(data_dir, name)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DerivedError(f"derived level {name!r} is registered but its sidecar cannot be read: {e}") from None
    if raw.get("format") != FORMAT or raw.get("name") != name:
        raise DerivedError(f"{path}: expected format {FORMAT} and name {name!r}")
    opt = lambda k: tuple(int(x) for x in raw[k]) if raw.get(k) is not None else None  # noqa: E731
    return DerivedLevel(name=name, kind=str(raw["kind"]), params=dict(raw["params"]),
                        classes=tuple(map(str, raw["classes"])), titles=tuple(map(str, raw["titles"])),
                        parent_level=raw.get("parent_level"), parent_of_class=opt("parent_of_class"),
                        leaf_to_class=opt("leaf_to_class"), splits=dict(raw["splits"]))


def labels(data_dir: str | os.PathLike, name: str, split: str) -> np.ndarray:
    """int64 lookup table of split `split`: beton `index` value -> class (-1 = none)."""
    d = load(data_dir, name)
    if split not in d.splits:
        raise DerivedError(f"derived level {name!r} has no labels for split {split!r}; it has {sorted(d.splits)}")
    path = Path(data_dir) / DIR_NAME / d.splits[split]["file"]
    lut = np.load(path, allow_pickle=False)
    if lut.ndim != 1 or lut.dtype != np.int64:
        raise DerivedError(f"{path}: expected a 1-d int64 array, got {lut.dtype} {lut.shape}")
    return lut


def check_rows(lut: np.ndarray, index: np.ndarray, name: str, beton: str | os.PathLike) -> None:
    """The table covers every `index` value of the beton (and a split with labels labels every row)."""
    if index.size and (index.min() < 0 or index.max() >= lut.size):
        raise DerivedError(f"derived level {name!r} does not cover {beton}: its `index` runs up to "
                           f"{int(index.max())} but the sidecar has {lut.size} entries; was the dataset "
                           "reconverted? derive the level again")
    got = lut[index]
    if (got >= 0).any() and (got < 0).any():
        raise DerivedError(f"derived level {name!r}: {int((got < 0).sum())} rows of {beton} have no class")


def nests_under(h: hlib.Hierarchy, d: DerivedLevel) -> list[str]:
    """The hierarchy levels a derived level nests under, finest first (empty when it does not nest)."""
    return h.names[h.index(d.parent_level):] if d.parent_level else []


def info(data_dir: str | os.PathLike, name: str) -> tuple[int, list[str]]:
    """(number of classes, coarser levels it nests under) of the derived level `name`."""
    d = load(data_dir, name)
    return d.num_classes, nests_under(hlib.load(data_dir), d)


def eval_hierarchy(data_dir: str | os.PathLike, name: str) -> hlib.Hierarchy:
    """The derived level as the finest level of a hierarchy of itself and the levels it nests under."""
    h, d = hlib.load(data_dir), load(data_dir, name)
    n = d.num_classes
    levels = [hlib.Level(name, d.classes, d.titles, tuple(range(n)))]
    if d.parent_level:
        parent = np.asarray(d.parent_of_class, dtype=np.int64)
        for coarse in nests_under(h, d):
            lv = h.level(coarse)
            up = h.parent_map(d.parent_level, coarse)[parent]
            levels.append(hlib.Level(coarse, lv.classes, lv.titles, tuple(int(x) for x in up)))
    return hlib.Hierarchy(levels=tuple(levels))


def eval_beton(data_dir: str | os.PathLike, name: str) -> str:
    """The beton level `name` is evaluated on: 'val.beton', but 'train.beton' for a derived level that labels no
    val sample (per-sample)."""
    if not is_registered(data_dir, name) or load(data_dir, name).labelled("val") > 0:
        return "val.beton"
    return "train.beton"
