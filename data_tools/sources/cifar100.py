"""CIFAR-100, python version: SRC/cifar-100-python/{train,test,meta} pickles -> levels 'fine' (100) and 'coarse' (20).

Each of train/test is a dict with b'data' (N x 3072 uint8, channel-major 32x32: 1024 red, 1024 green, 1024 blue),
b'fine_labels', b'coarse_labels' and b'filenames'; meta holds b'fine_label_names' and b'coarse_label_names'
(https://www.cs.toronto.edu/~kriz/cifar.html). Class indices are CIFAR's own label numbers and class ids its
names ('aquarium_fish'); titles replace '_' with ' '. 'test' becomes the val split. SRC may be the
cifar-100-python folder or its parent. The pickles are read with an unpickler that only builds numpy arrays and
plain containers, so a crafted file cannot run code.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.format.hierarchy import Hierarchy, HierarchyError, Level
from data_tools import beton
from data_tools.sources.catalog import Catalog, Listing, SourceError, SplitRows

FOLDER = "cifar-100-python"
SPLITS = {"train": "train", "val": "test"}  # our split -> CIFAR file
LEVELS = ("fine", "coarse")
WRITE = beton.WriteOptions(write_mode="raw", max_resolution=32)  # lossless; 3 KiB a sample


@dataclass(frozen=True)
class Options:
    """CIFAR-100 has nothing to choose: its two levels are fixed."""


def find_root(src: Path) -> Path:
    for cand in (src / FOLDER, src):
        if (cand / "meta").is_file():
            return cand
    raise SourceError(f"{src}: no CIFAR-100 'meta' file here or in {src / FOLDER}; expected the extracted "
                      f"cifar-100-python.tar.gz (train, test, meta)")


def scan(src: Path, opts: Options) -> Catalog:
    root = find_root(src)
    listing = Listing(root)
    meta = _load(root / "meta", listing)
    names = {lv: [_text(n) for n in _get(meta, f"{lv}_label_names", root / "meta")] for lv in LEVELS}

    splits, parent = {}, {}
    for split, fname in SPLITS.items():
        path = root / fname
        d = _load(path, listing)
        data = np.asarray(_get(d, "data", path))
        fine = np.asarray(_get(d, "fine_labels", path), dtype=np.int64)
        coarse = np.asarray(_get(d, "coarse_labels", path), dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise SourceError(f"{path}: b'data' must be N x 3072 uint8, got {data.shape} {data.dtype}")
        if not len(data) == len(fine) == len(coarse):
            raise SourceError(f"{path}: {len(data)} images but {len(fine)} fine and {len(coarse)} coarse labels")
        for lv, labels in (("fine", fine), ("coarse", coarse)):
            if labels.size and (labels.min() < 0 or labels.max() >= len(names[lv])):
                raise SourceError(f"{path}: {lv} labels must lie in 0..{len(names[lv]) - 1}")
        # nesting, over every sample of both files: one coarse class per fine class
        for f, c in zip(fine.tolist(), coarse.tolist()):
            if parent.setdefault(f, c) != c:
                raise HierarchyError(
                    f"levels do not nest: class {names['fine'][f]!r} of level 'fine' has two parents in level "
                    f"'coarse': {names['coarse'][parent[f]]!r} and {names['coarse'][c]!r} ({path})")
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # channel-major -> HxWx3
        splits[split] = SplitRows(refs=[f"{fname}#{i}" for i in range(len(data))], leaves=fine.tolist(),
                                  images=np.ascontiguousarray(images))

    missing = [names["fine"][f] for f in range(len(names["fine"])) if f not in parent]
    if missing:
        raise SourceError(f"{root}: fine classes with no sample, so no known coarse class: {missing[:10]}")
    levels = tuple(
        Level(lv, tuple(names[lv]), tuple(n.replace("_", " ") for n in names[lv]),
              tuple(range(len(names["fine"]))) if lv == "fine" else tuple(parent[f] for f in range(len(names["fine"]))))
        for lv in LEVELS)
    return Catalog(root=root, hierarchy=Hierarchy(levels=levels), splits=splits, fingerprint=listing.fingerprint())


class _SafeUnpickler(pickle.Unpickler):
    """Builds only numpy arrays/dtypes and builtins containers (what the official pickles hold)."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load(path: Path, listing: Listing) -> dict:
    listing.add(path)
    if not path.is_file():
        raise SourceError(f"{path}: missing (a CIFAR-100 folder holds train, test and meta)")
    try:
        with open(path, "rb") as f:
            d = _SafeUnpickler(f, encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a broken file
        raise SourceError(f"{path}: not a CIFAR-100 pickle ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise SourceError(f"{path}: expected a pickled dict, got {type(d).__name__}")
    return {_text(k): v for k, v in d.items()}


def _get(d: dict, key: str, path: Path):
    if key not in d:
        raise SourceError(f"{path}: missing key b'{key}' (has {sorted(d)})")
    return d[key]


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
