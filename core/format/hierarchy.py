"""The class hierarchy of a dataset: label levels ordered finest first, each a function of the finer one.

On disk it is `hierarchy.json` beside the betons:

    {"levels": [{"name": "subclass", "classes": [...ids...], "titles": [...names...],
                 "leaf_to_class": [...one class index per leaf...]}, ...],
     "derived": ["kmeans32_pixels", ...]}

Level 0 is the leaf level (its `leaf_to_class` is the identity). Every coarser level must nest: the class of a
leaf at level i+1 is a function of its class at level i. Loading validates that and names the culprit.
The optional "derived" list names extra labellings stored as sidecars under derived/ (core/format/derived.py); they
need not nest and are not levels of this hierarchy. Files without it load as before.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.format.provenance import write_atomic

FILENAME = "hierarchy.json"


class HierarchyError(ValueError):
    """An inconsistent or malformed hierarchy; the message names the level and class at fault."""


@dataclass(frozen=True)
class Level:
    name: str
    classes: tuple[str, ...]  # class ids, e.g. wnids; unique within the level
    titles: tuple[str, ...]  # human-readable names, one per class
    leaf_to_class: tuple[int, ...]  # class index of every leaf

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class Hierarchy:
    levels: tuple[Level, ...]  # finest first
    derived: tuple[str, ...] = ()  # names of derived levels registered for this dataset (core/format/derived.py)

    def __post_init__(self) -> None:
        validate(self.levels)
        clash = sorted(set(self.derived) & set(self.names))
        if clash or len(set(self.derived)) != len(self.derived):
            raise HierarchyError(f"derived level names must be unique and differ from the levels {self.names}; "
                                 f"got {list(self.derived)}")

    # lookups
    @property
    def names(self) -> list[str]:
        return [lv.name for lv in self.levels]

    @property
    def num_leaves(self) -> int:
        return self.levels[0].num_classes

    def level(self, name: str) -> Level:
        for lv in self.levels:
            if lv.name == name:
                return lv
        raise HierarchyError(f"unknown level {name!r}; this hierarchy has levels {self.names}")

    def index(self, name: str) -> int:
        return self.names.index(self.level(name).name)

    def leaf_map(self, name: str) -> np.ndarray:
        """int64 array: leaf index -> class index at level `name`."""
        return np.asarray(self.level(name).leaf_to_class, dtype=np.int64)

    def parent_map(self, fine: str, coarse: str) -> np.ndarray:
        """int64 array: class index at level `fine` -> class index at the coarser level `coarse`."""
        fi, ci = self.index(fine), self.index(coarse)
        if ci < fi:
            raise HierarchyError(f"level {coarse!r} is finer than {fine!r}; levels run finest first: {self.names}")
        f, c = self.leaf_map(fine), self.leaf_map(coarse)
        out = np.full(self.levels[fi].num_classes, -1, dtype=np.int64)
        out[f] = c
        return out

    def labels(self, leaves: np.ndarray) -> dict[str, np.ndarray]:
        """Every level's class index for an array of leaf indices."""
        leaves = np.asarray(leaves, dtype=np.int64)
        return {lv.name: self.leaf_map(lv.name)[leaves] for lv in self.levels}

    def path(self, leaf: int) -> list[tuple[str, str, str]]:
        """(level name, class id, title) from the coarsest level down to `leaf`."""
        out = []
        for lv in reversed(self.levels):
            c = lv.leaf_to_class[leaf]
            out.append((lv.name, lv.classes[c], lv.titles[c]))
        return out

    # (de)serialisation
    def to_dict(self) -> dict:
        return {
            "levels": [
                {"name": lv.name, "classes": list(lv.classes), "titles": list(lv.titles),
                 "leaf_to_class": list(lv.leaf_to_class)}
                for lv in self.levels
            ],
            **({"derived": list(self.derived)} if self.derived else {}),
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "hierarchy") -> Hierarchy:
        if not isinstance(data, dict) or not isinstance(data.get("levels"), list) or not data["levels"]:
            raise HierarchyError(f"{source}: expected an object with a non-empty list 'levels'")
        levels = []
        for i, raw in enumerate(data["levels"]):
            where = f"{source}: levels[{i}]"
            if not isinstance(raw, dict):
                raise HierarchyError(f"{where}: expected an object")
            for key in ("name", "classes"):
                if key not in raw:
                    raise HierarchyError(f"{where}: missing key {key!r}")
            classes = tuple(str(c) for c in raw["classes"])
            titles = tuple(str(t) for t in raw.get("titles", classes))
            if i == 0:
                default_map = list(range(len(classes)))
            elif "leaf_to_class" not in raw:
                raise HierarchyError(f"{where} ({raw['name']!r}): missing key 'leaf_to_class'")
            else:
                default_map = raw["leaf_to_class"]
            l2c = tuple(int(x) for x in raw.get("leaf_to_class", default_map))
            levels.append(Level(name=str(raw["name"]), classes=classes, titles=titles, leaf_to_class=l2c))
        derived = data.get("derived", [])
        if not isinstance(derived, list) or not all(isinstance(d, str) for d in derived):
            raise HierarchyError(f"{source}: 'derived' must be a list of level names")
        return cls(levels=tuple(levels), derived=tuple(derived))

    @classmethod
    def from_leaf_paths(cls, names: list[str], paths: list[list[tuple[str, str]]]) -> Hierarchy:
        """Builds a hierarchy from each leaf's (class id, title) at every level, finest first.

        `paths[j][i]` is leaf j's class at level i; class order within a level is first appearance.
        Nesting is checked by the constructor (a class with two parents is refused by name).
        """
        levels = []
        for i, name in enumerate(names):
            ids: dict[str, int] = {}
            titles: list[str] = []
            l2c = []
            for p in paths:
                cid, title = p[i]
                if cid not in ids:
                    ids[cid] = len(ids)
                    titles.append(title)
                l2c.append(ids[cid])
            levels.append(Level(name, tuple(ids), tuple(titles), tuple(l2c)))
        return cls(levels=tuple(levels))

    def save(self, path: str | os.PathLike) -> None:
        """Writes atomically (temporary file, then rename)."""
        write_atomic(Path(path), json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")


def load(path: str | os.PathLike) -> Hierarchy:
    """Reads and validates `hierarchy.json`; `path` may be the file or its dataset folder."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise HierarchyError(f"no hierarchy file at {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise HierarchyError(f"{path}: not valid JSON ({e})") from None
    return Hierarchy.from_dict(data, source=str(path))


def validate(levels: tuple[Level, ...]) -> None:
    """Checks names, sizes, ranges and nesting; raises HierarchyError naming the culprit."""
    if not levels:
        raise HierarchyError("a hierarchy needs at least one level")
    names = [lv.name for lv in levels]
    if len(set(names)) != len(names):
        raise HierarchyError(f"level names must be unique, got {names}")
    for name in names:
        if not name or not name.replace("_", "a").replace("-", "a").isalnum() or name[0].isdigit():
            raise HierarchyError(f"level name {name!r} must be an identifier (letters, digits, '_' or '-')")
        if name in ("image", "index"):
            raise HierarchyError(f"level name {name!r} is reserved for a beton column")
    n_leaves = levels[0].num_classes
    for lv in levels:
        if lv.num_classes == 0:
            raise HierarchyError(f"level {lv.name!r} has no classes")
        if len(lv.titles) != lv.num_classes:
            raise HierarchyError(f"level {lv.name!r}: {lv.num_classes} classes but {len(lv.titles)} titles")
        if len(set(lv.classes)) != lv.num_classes:
            dup = sorted({c for c in lv.classes if lv.classes.count(c) > 1})
            raise HierarchyError(f"level {lv.name!r}: duplicate class ids {dup[:10]}")
        if len(lv.leaf_to_class) != n_leaves:
            raise HierarchyError(
                f"level {lv.name!r}: leaf_to_class has {len(lv.leaf_to_class)} entries, expected one per leaf "
                f"({n_leaves})")
        m = np.asarray(lv.leaf_to_class, dtype=np.int64)
        if m.size and (m.min() < 0 or m.max() >= lv.num_classes):
            bad = int(np.flatnonzero((m < 0) | (m >= lv.num_classes))[0])
            raise HierarchyError(f"level {lv.name!r}: leaf {levels[0].classes[bad]!r} maps to class index "
                                 f"{int(m[bad])}, outside 0..{lv.num_classes - 1}")
        unused = np.setdiff1d(np.arange(lv.num_classes), m)
        if unused.size:
            raise HierarchyError(f"level {lv.name!r}: class {lv.classes[int(unused[0])]!r} has no leaf under it")
    if list(levels[0].leaf_to_class) != list(range(n_leaves)):
        raise HierarchyError(f"leaf level {levels[0].name!r}: leaf_to_class must be the identity")
    # nesting: each coarser level is a function of the finer one
    for fine, coarse in zip(levels, levels[1:]):
        parent: dict[int, int] = {}
        for f, c in zip(fine.leaf_to_class, coarse.leaf_to_class):
            if parent.setdefault(f, c) != c:
                raise HierarchyError(
                    f"levels do not nest: class {fine.classes[f]!r} of level {fine.name!r} has two parents in "
                    f"level {coarse.name!r}: {coarse.classes[parent[f]]!r} and {coarse.classes[c]!r}")
        if coarse.num_classes > fine.num_classes:
            raise HierarchyError(f"level {coarse.name!r} ({coarse.num_classes} classes) is finer than the level "
                                 f"before it, {fine.name!r} ({fine.num_classes}); levels run finest first")
