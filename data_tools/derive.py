"""Derived hierarchies added to an existing dataset without re-encoding its images (Hong et al. 2303.16887).

Hong et al. compare, on iNaturalist 2021, pretraining on the manual taxonomy with pretraining on labels made by
k-means on image embeddings within each target superclass ("aligned"), k-means on the whole set ("misaligned"),
random labels, and one label per sample. This module makes those labellings for any grainsweep dataset:

    kmeans        k-means on per-sample features (whole set, or `within` each class of a level: k clusters per
                  class, so the result nests under that level); val samples get their nearest training centroid
    random_groups the leaves shuffled (seeded) and dealt into N groups of near-equal size (sizes differ by at
                  most one leaf); a function of the leaf, the control of Hong et al.'s "random labels"
    per_sample    one class per training sample; val samples get -1 (no class): for pretraining only, and a run
                  on it is evaluated on its own training images (core/derived.eval_beton)

Each is written as a sidecar under DIR/derived/ and registered in hierarchy.json (format: core/format/derived.py);
files are written under temporary names and renamed, and the registry entry comes last, all under the dataset's
lock (core.format.lock; hierarchy.json is re-read there, so concurrent derives all register). Rerunning the same
derivation (same name, kind and parameters) is a no-op; a name that is a level, a beton column or a derived
level made with other parameters is refused. Features are either the images downscaled to 8x8 (read here from
the betons) or an array computed elsewhere (launch/cli_derive.py computes a run's `forward_features`: this
package never imports core's training code).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

from core.format import beton_file
from core.format import derived as dlib
from core.format import hierarchy as hlib
from core.format import kmeans as kmeans_lib
from core.format.ffcv_types import mend_os_cache_types
from core.format.lock import FolderLock, LockedError
from core.format.provenance import write_atomic

SPLITS = ("train", "val")
REGISTER_WAIT_S = 90  # another derive registering (seconds) or a convert publishing holds the folder
PIXEL_SIZE = 8  # side in pixels of the downscaled images used as 'pixels' features (8 x 8 x 3 = 192 values)

# split -> (index values, (N, D) features); or a callable that computes them for a split, called only when
# the derivation is not already on disk
Features = Mapping[str, tuple[np.ndarray, np.ndarray]] | Callable[[str], tuple[np.ndarray, np.ndarray]]


class Derived(NamedTuple):
    name: str
    written: bool  # False when an identical derivation was already there
    num_classes: int


# reading betons
def open_beton(beton: str | os.PathLike):
    """ffcv's Reader of `beton` after core.format.beton_file's structure checks; a file that cannot be read
    (permissions, truncated, damaged, not a beton) is a DerivedError naming it, shown as one line."""
    try:
        return beton_file.open_beton(beton)
    except PermissionError:
        raise dlib.DerivedError(f"{beton}: permission denied; make it readable (chmod) or run as its owner") from None
    except (OSError, beton_file.BetonError) as e:
        raise dlib.DerivedError(f"{e}; convert the dataset again (grainsweep convert ... --force)") from None


def read_int_columns(beton: str | os.PathLike, names: list[str]) -> dict[str, np.ndarray]:
    """IntField columns of a beton, read from its metadata table (no image is decoded)."""
    r = open_beton(beton)
    missing = [n for n in names if n not in r.field_names]
    if missing:
        raise dlib.DerivedError(f"{beton}: no column(s) {missing}; it has {r.field_names}")
    return {n: r.metadata[f"f{r.field_names.index(n)}"].astype(np.int64) for n in names}


def pixel_features(beton: str | os.PathLike, size: int = PIXEL_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(index values, (N, size*size*3) float32 in [0, 1]): every image centre-cropped to a square and resized."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import CenterCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    mend_os_cache_types()  # before any ffcv Loader in the process (core/format/ffcv_types.py)
    columns = open_beton(beton).field_names
    pipelines: dict = {c: None for c in columns}
    pipelines["image"] = [CenterCropRGBImageDecoder((size, size), ratio=1.0)]
    pipelines["index"] = [IntDecoder()]
    loader = Loader(str(beton), batch_size=512, num_workers=1, order=OrderOption.SEQUENTIAL,
                    pipelines=pipelines, drop_last=False)
    out_index, out_feats = [], []
    order = [c for c in columns if pipelines[c] is not None]
    for batch in loader:
        by_name = dict(zip(order, batch))
        out_feats.append(np.asarray(by_name["image"], dtype=np.float32).reshape(len(by_name["image"]), -1) / 255)
        out_index.append(np.asarray(by_name["index"]).reshape(-1).astype(np.int64))
    return np.concatenate(out_index), np.concatenate(out_feats)


def _aligned(features: Features, split: str, index: np.ndarray) -> np.ndarray:
    """The features of each beton row, in row order, matched through the `index` values."""
    f_index, feats = features(split) if callable(features) else features[split]
    f_index, feats = np.asarray(f_index, dtype=np.int64), np.asarray(feats, dtype=np.float32)
    if feats.ndim != 2 or len(feats) != len(f_index):
        raise dlib.DerivedError(f"{split}: expected (N, D) features and N index values, got {feats.shape}, "
                         f"{f_index.shape}")
    order = np.argsort(f_index, kind="stable")
    pos = np.searchsorted(f_index[order], index)
    pos = np.minimum(pos, len(order) - 1)
    if not np.array_equal(f_index[order][pos], index):
        raise dlib.DerivedError(f"{split}: the features do not cover every row's index value")
    return feats[order][pos]


# the derivations
def kmeans(data_dir: str | os.PathLike, k: int, *, within: str | None = None, features: Features | None = None,
           feature_tag: str = "pixels", name: str | None = None, seed: int = 0) -> Derived:
    """k-means clusters of the training features (k per class of `within`, else k in all)."""
    data_dir = Path(data_dir)
    if k < 1:
        raise dlib.DerivedError(f"k must be >= 1, got {k}")
    name = name or dlib.kmeans_name(k, within, feature_tag)
    params = {"k": int(k), "within": within, "features": feature_tag, "seed": int(seed)}
    h = hlib.load(data_dir)
    if within is not None:
        h.level(within)  # refuses an unknown level by name
    done = _existing(data_dir, h, name, "kmeans", params)
    if done is not None:
        return done
    n_train = len(read_int_columns(data_dir / "train.beton", ["index"])["index"])
    if not within and k > n_train:  # refused before any feature is computed
        raise dlib.DerivedError(f"{data_dir}: k={k} clusters but only {n_train} training samples; "
                                f"choose k <= {n_train}")
    if features is None:
        features = lambda split: pixel_features(data_dir / f"{split}.beton")  # noqa: E731

    # every split's rows: index values, the grouping level (or one group), features
    rows = {}
    for split in _splits(data_dir):
        cols = read_int_columns(data_dir / f"{split}.beton", ["index", *([within] if within else [])])
        group = cols[within] if within else np.zeros(len(cols["index"]), dtype=np.int64)
        rows[split] = (cols["index"], group, _aligned(features, split, cols["index"]))

    # cluster each group's training rows; val rows go to the nearest centroid of their group
    n_groups = h.level(within).num_classes if within else 1
    labels = {s: np.full(len(r[0]), -1, dtype=np.int64) for s, r in rows.items()}
    classes, titles, parent_of_class = [], [], []
    for g in range(n_groups):
        train_rows = np.flatnonzero(rows["train"][1] == g)
        if train_rows.size == 0:
            continue
        # within a class of fewer than k training samples: one cluster per sample (README, Derived hierarchies)
        model = kmeans_lib.fit(rows["train"][2][train_rows], min(k, train_rows.size), seed,
                               what=f"class {g} of {within}" if within else "the training set")
        found = np.unique(model.labels_)  # compact: clusters that hold a training sample, in id order
        remap = np.full(model.n_clusters, -1, dtype=np.int64)
        remap[found] = np.arange(found.size) + len(classes)
        for s, (_, group, feats) in rows.items():
            sel = np.flatnonzero(group == g)
            if sel.size:
                labels[s][sel] = remap[model.labels_] if s == "train" else remap[model.predict(feats[sel])]
        prefix = f"{h.level(within).classes[g]}/" if within else ""
        tprefix = f"{h.level(within).titles[g]} / " if within else ""
        for j in range(found.size):
            classes.append(f"{prefix}c{j}")
            titles.append(f"{tprefix}cluster {j}")
            parent_of_class.append(g)
    tables = {s: _table(r[0], labels[s]) for s, r in rows.items()}
    return _write(data_dir, h, name, "kmeans", params, classes, titles, tables,
                  parent_level=within, parent_of_class=parent_of_class if within else None)


def random_groups(data_dir: str | os.PathLike, groups: int, *, seed: int = 0, name: str | None = None) -> Derived:
    """The leaves shuffled with `seed` and dealt round-robin into `groups` groups of near-equal size."""
    data_dir = Path(data_dir)
    name = name or dlib.random_name(groups, seed)
    params = {"groups": int(groups), "seed": int(seed)}
    h = hlib.load(data_dir)
    if not 1 <= groups <= h.num_leaves:
        raise dlib.DerivedError(f"groups must lie in 1..{h.num_leaves} (the number of leaves), got {groups}")
    done = _existing(data_dir, h, name, "random", params)
    if done is not None:
        return done
    perm = np.random.default_rng(seed).permutation(h.num_leaves)
    leaf_to_group = np.empty(h.num_leaves, dtype=np.int64)
    leaf_to_group[perm] = np.arange(h.num_leaves) % groups
    leaf = h.names[0]
    tables = {}
    for split in _splits(data_dir):
        cols = read_int_columns(data_dir / f"{split}.beton", ["index", leaf])
        tables[split] = _table(cols["index"], leaf_to_group[cols[leaf]])
    return _write(data_dir, h, name, "random", params, [f"g{j}" for j in range(groups)],
                  [f"random group {j}" for j in range(groups)], tables, leaf_to_class=leaf_to_group.tolist())


def per_sample(data_dir: str | os.PathLike, *, name: str = "per_sample") -> Derived:
    """One class per training sample (class j = train row j); val samples get -1."""
    data_dir = Path(data_dir)
    h = hlib.load(data_dir)
    done = _existing(data_dir, h, name, "per_sample", {})
    if done is not None:
        return done
    tables, classes = {}, []
    for split in _splits(data_dir):
        index = read_int_columns(data_dir / f"{split}.beton", ["index"])["index"]
        if split == "train":
            tables[split] = _table(index, np.arange(len(index)))
            classes = [f"s{i}" for i in index]
        else:
            tables[split] = _table(index, np.full(len(index), -1))
    return _write(data_dir, h, name, "per_sample", {}, classes, classes, tables)


# helpers
def _splits(data_dir: Path) -> list[str]:
    out = [s for s in SPLITS if (data_dir / f"{s}.beton").is_file()]
    if "train" not in out:
        raise FileNotFoundError(f"{data_dir}: no train.beton")
    return out


def _table(index: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """int64 lookup table: index value -> label, -1 where no row has that index."""
    out = np.full(int(index.max()) + 1 if index.size else 0, -1, dtype=np.int64)
    out[index] = labels
    return out


def _existing(data_dir: Path, h: hlib.Hierarchy, name: str, kind: str, params: dict) -> Derived | None:
    """The level when the same derivation is already registered; refuses a clash with anything else."""
    try:
        hlib.validate((hlib.Level(name, ("x",), ("x",), (0,)),))
    except hlib.HierarchyError as e:
        raise dlib.DerivedError(f"derived level name {name!r}: {e}") from None
    taken = set(h.names)
    for split in _splits(data_dir):
        taken |= set(open_beton(data_dir / f"{split}.beton").field_names)
    if name in taken:
        raise dlib.DerivedError(f"{name!r} is already a level or column of {data_dir}; choose another --name")
    if name in h.derived:
        d = dlib.load(data_dir, name)
        if d.kind == kind and d.params == params:
            return Derived(name, False, d.num_classes)
        raise dlib.DerivedError(f"{data_dir} already has a derived level {name!r} made by {d.kind} {d.params}; "
                                f"choose another --name")
    return None


def _write(data_dir: Path, h: hlib.Hierarchy, name: str, kind: str, params: dict, classes: list[str],
           titles: list[str], tables: dict[str, np.ndarray], parent_level: str | None = None,
           parent_of_class: list[int] | None = None, leaf_to_class: list[int] | None = None) -> Derived:
    try:
        with FolderLock(data_dir, what=f"derive {name}", wait_s=REGISTER_WAIT_S):
            # hierarchy.json as it is now: another derive may have registered a level (even this one) since `h`
            h = hlib.load(data_dir)
            done = _existing(data_dir, h, name, kind, params)
            if done is not None:
                return done
            return _write_locked(data_dir, h, name, kind, params, classes, titles, tables, parent_level,
                                 parent_of_class, leaf_to_class)
    except LockedError as e:
        raise dlib.DerivedError(f"{e}; {name!r} was not registered, run the same command again later") from None


def _write_locked(data_dir: Path, h: hlib.Hierarchy, name: str, kind: str, params: dict, classes: list[str],
                  titles: list[str], tables: dict[str, np.ndarray], parent_level: str | None,
                  parent_of_class: list[int] | None, leaf_to_class: list[int] | None) -> Derived:
    out = data_dir / dlib.DIR_NAME
    out.mkdir(exist_ok=True)
    pid = os.getpid()
    splits = {}
    for split, table in tables.items():
        file = f"{name}.{split}.npy"
        tmp = out / f".{file}.tmp-{pid}"
        with open(tmp, "wb") as f:
            np.save(f, table.astype(np.int64), allow_pickle=False)
        os.replace(tmp, out / file)
        splits[split] = {"file": file, "entries": int(table.size), "labelled": int((table >= 0).sum())}
    sidecar = {"format": dlib.FORMAT, "name": name, "kind": kind, "params": params, "classes": list(classes),
               "titles": list(titles), "parent_level": parent_level, "parent_of_class": parent_of_class,
               "leaf_to_class": leaf_to_class, "splits": splits}
    write_atomic(dlib.sidecar_path(data_dir, name), json.dumps(sidecar, ensure_ascii=False) + "\n")
    # registering is the commit point: the level is usable from here on
    hlib.Hierarchy(levels=h.levels, derived=(*h.derived, name)).save(data_dir / hlib.FILENAME)
    return Derived(name, True, len(classes))
