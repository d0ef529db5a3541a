"""What a source reader returns: the hierarchy, each split's rows, and a fingerprint of the files it read.

A row is a sample of the source: a `ref` (an image path relative to the source root, or e.g. 'train#12' for
images held in memory), its leaf class index, or a reason it is rejected before any decoding (a missing label,
say). Rows keep the source's order; the converter decodes, rejects and writes them in that order.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.format.hierarchy import Hierarchy


class SourceError(ValueError):
    """The source is malformed or does not fit its kind; the message names the file and what is wrong."""


@dataclass
class SplitRows:
    refs: list[str]  # per row: path relative to `Catalog.root` (or an in-memory reference)
    leaves: list[int]  # per row: leaf class index, -1 where `early_rejects` has a reason
    early_rejects: dict[int, str] = field(default_factory=dict)  # row -> reason found while reading the source
    images: np.ndarray | None = None  # N x H x W x 3 uint8 when the source holds decoded pixels (CIFAR)

    def __len__(self) -> int:
        return len(self.refs)


@dataclass
class Catalog:
    root: Path  # image paths are relative to it
    hierarchy: Hierarchy
    splits: dict[str, SplitRows]  # 'train', and 'val' where the source has one
    fingerprint: dict  # what the output depends on: a digest of the listing and its file count
    notes: list[str] = field(default_factory=list)  # decisions worth telling the user (kept in the manifest)


class Listing:
    """Collects (relative path, size, mtime) of every file read, hashed for the convert-once manifest."""

    def __init__(self, root: Path):
        self.root, self.items = root, []

    def add(self, path: Path) -> None:
        rel = os.path.relpath(path, self.root)
        try:
            st = path.stat()
            self.items.append((rel, st.st_size, st.st_mtime_ns))
        except OSError:
            self.items.append((rel, -1, -1))  # missing: becomes a reject, and its later arrival a new hash

    def fingerprint(self) -> dict:
        blob = json.dumps(sorted(self.items), separators=(",", ":")).encode()
        return {"files": len(self.items), "listing_sha256": hashlib.sha256(blob).hexdigest()}


def check_nesting(level_names: list[str], rows: list[list[str]]) -> None:
    """Refuses (HierarchyError naming the class) a class with two parents, over every row, before any writing.

    `rows[j][i]` is row j's class id at level i, finest first. Hierarchy.from_leaf_paths sees one path per
    leaf, so a leaf with two different paths in different rows must be caught here.
    """
    from core.format.hierarchy import HierarchyError

    for i in range(len(level_names) - 1):
        parent: dict[str, str] = {}
        for r in rows:
            got = parent.setdefault(r[i], r[i + 1])
            if got != r[i + 1]:
                raise HierarchyError(
                    f"levels do not nest: class {r[i]!r} of level {level_names[i]!r} has two parents in level "
                    f"{level_names[i + 1]!r}: {got!r} and {r[i + 1]!r}")
