"""ImageNet-style folders: SRC/train/<wnid>/<image> and optionally SRC/val/<wnid>/<image> -> WordNet levels.

The leaf level 'wnid' holds every class folder of SRC/train; the coarser levels are cut from WordNet 3.0 by
`data_tools.wordnet_tree` (`cut` = hops, depth or num_classes; `levels` = its values, e.g. hops 1,2,3). Every
folder name must be a WordNet 3.0 noun wnid: unknown ones are refused, all listed, before anything is read.

Without SRC/val, the first `val_per_class` files of each class, in sorted file-name order, are held out as val
(ImageNet-21K-P holds out 50 per class the same way); a class needs more files than that. Val class folders
must be train classes. Files and folders whose names start with '.' are not rows; any other file in a class
folder is (a non-image becomes a reject). The official flat ILSVRC val folder must first be sorted into
<wnid>/ folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from data_tools import beton
from data_tools.sources.catalog import Catalog, Listing, SourceError, SplitRows

WRITE = beton.WriteOptions(write_mode="jpg", max_resolution=256, jpeg_quality=90)


@dataclass(frozen=True)
class Options:
    cut: Literal["hops", "depth", "num_classes"] = "hops"  # how coarser WordNet levels are cut
    levels: tuple[int, ...] = (1, 2, 3)  # hops up the tree / depths from the root / class counts
    val_per_class: int = 50  # without SRC/val: files per class held out as val (first in sorted order)

    def __post_init__(self) -> None:
        if self.val_per_class < 0:
            raise ValueError(f"val_per_class must be >= 0, got {self.val_per_class}")


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _class_folders(split_dir: Path) -> dict[str, list[Path]]:
    entries = _visible(split_dir)
    stray = [p.name for p in entries if not p.is_dir()]
    if stray:
        raise SourceError(f"{split_dir}: expected only <wnid>/ class folders, found files {stray[:10]}")
    return {p.name: [f for f in _visible(p)] for p in entries}


def scan(src: Path, opts: Options) -> Catalog:
    from data_tools.wordnet_tree import WnidError, build_hierarchy

    train_dir, val_dir = src / "train", src / "val"
    if not train_dir.is_dir():
        raise SourceError(f"{src}: expected SRC/train/<wnid>/ folders (and optionally SRC/val/<wnid>/)")
    train = _class_folders(train_dir)
    if not train:
        raise SourceError(f"{train_dir}: no class folders")
    val = _class_folders(val_dir) if val_dir.is_dir() else None
    wnids = sorted(train)
    try:
        hierarchy = build_hierarchy(wnids, opts.cut, list(opts.levels))
    except WnidError as e:
        raise SourceError(f"{train_dir}: class folders must be WordNet 3.0 noun wnids; {e}") from None
    except ValueError as e:  # bad cut values
        raise SourceError(f"--cut {opts.cut} --levels {','.join(map(str, opts.levels))}: {e}") from None

    notes = []
    if val is None:
        short = [w for w in wnids if len(train[w]) <= opts.val_per_class]
        if short:
            raise SourceError(f"{train_dir}: no SRC/val, and {len(short)} classes have no more than "
                              f"--val-per-class {opts.val_per_class} files to hold out: {short[:10]}")
        val = {w: train[w][: opts.val_per_class] for w in wnids}
        train = {w: train[w][opts.val_per_class:] for w in wnids}
        notes.append(f"no {val_dir}: held out the first {opts.val_per_class} files of each class as val")
    else:
        unknown = sorted(set(val) - set(train))
        if unknown:
            raise SourceError(f"{val_dir}: class folders with no train folder: {unknown[:10]}")

    listing = Listing(src)
    leaf = {w: i for i, w in enumerate(hierarchy.levels[0].classes)}
    splits = {}
    for split, folders in (("train", train), ("val", val)):
        rows = SplitRows(refs=[], leaves=[])
        for w in sorted(folders):
            for f in folders[w]:
                listing.add(f)
                rows.refs.append(str(f.relative_to(src)))
                rows.leaves.append(leaf[w])
        if rows.refs:
            splits[split] = rows
    return Catalog(root=src, hierarchy=hierarchy, splits=splits, fingerprint=listing.fingerprint(), notes=notes)
