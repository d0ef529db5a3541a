"""A CSV manifest: header `path,<finest level>,...,<coarsest level>`, one row per image.

Paths are relative to the CSV's folder (absolute paths are kept as they are). Every other column is a level,
named by its header (an identifier such as 'species'), finest first; a cell is the class id at that level and
also its title. The val split, if any, is a second manifest with the same header (`--val-csv`, relative to the
current folder or absolute). Levels must nest over every row of both files: a class with two different parents
is refused, naming it, before anything is read or written. A row with an empty cell is a reject, and so is every
row of a file listed with two different label paths (in one file or both: which one is right cannot be known);
a file listed twice with the same labels is kept twice.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from core.format.hierarchy import Hierarchy
from data_tools import beton
from data_tools.sources.catalog import Catalog, Listing, SourceError, SplitRows, check_nesting

WRITE = beton.WriteOptions(write_mode="jpg", max_resolution=256, jpeg_quality=90)


@dataclass(frozen=True)
class Options:
    val_csv: str = ""  # manifest of the val split (same header); "" = no val split


def read(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        raise SourceError(f"{path}: no such CSV file")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    rows = [r for r in rows if any(c.strip() for c in r)]  # blank lines are not rows
    if not rows:
        raise SourceError(f"{path}: empty; expected a header 'path,<finest level>,...'")
    header = [h.strip() for h in rows[0]]
    if len(header) < 2 or header[0] != "path":
        raise SourceError(f"{path}: the header must be 'path' then one column per level, finest first; "
                          f"got {header}")
    for n, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise SourceError(f"{path}: line {n} has {len(r)} cells, the header {len(header)}")
    return header, [[c.strip() for c in r] for r in rows[1:]]


def scan(src: Path, opts: Options) -> Catalog:
    files = {"train": src}
    if opts.val_csv:  # relative to the current folder, like SRC (its rows are then relative to its own folder)
        files["val"] = Path(opts.val_csv).expanduser().resolve()
    listing = Listing(src.parent)
    header, per_split = None, {}
    for split, path in files.items():
        h, rows = read(path)
        if header is not None and h != header:
            raise SourceError(f"{path}: header {h} differs from {src}'s {header}")
        header = h
        listing.add(path)
        per_split[split] = (path, rows)
    names = header[1:]

    # a file with two label paths: all its rows are rejects, and take no part in the hierarchy
    labels_of: dict[str, set[tuple[str, ...]]] = {}
    for path, rows in per_split.values():
        for r in rows:
            if r[0]:
                labels_of.setdefault(_file(path, r[0]), set()).add(tuple(r[1:]))
    disputed = {f: ls for f, ls in labels_of.items() if len(ls) > 1}

    # labels first: nesting is checked over every complete row before any image is looked at
    complete = [r[1:] for path, rows in per_split.values() for r in rows
                if all(r[1:]) and r[0] and _file(path, r[0]) not in disputed]
    check_nesting(names, complete)
    leaf_ids: dict[str, int] = {}
    paths = []
    for labels in complete:
        if labels[0] not in leaf_ids:
            leaf_ids[labels[0]] = len(leaf_ids)
            paths.append([(c, c) for c in labels])
    if not paths:
        raise SourceError(f"{src}: no row with a path and every label")
    hierarchy = Hierarchy.from_leaf_paths(names, paths)

    splits = {}
    for split, (path, rows) in per_split.items():
        out = SplitRows(refs=[], leaves=[])
        for r in rows:
            full = path.parent / r[0]
            ref = str(full.relative_to(src.parent)) if full.is_relative_to(src.parent) else str(full)
            empty = [n for n, c in zip(header, r) if not c]
            disputed_labels = disputed.get(_file(path, r[0])) if r[0] else None
            if empty:
                out.early_rejects[len(out.refs)] = f"empty value in column(s) {empty}"
                out.leaves.append(-1)
            elif disputed_labels:
                shown = " and ".join("/".join(ls) for ls in sorted(disputed_labels))
                out.early_rejects[len(out.refs)] = f"listed with different labels: {shown}"
                out.leaves.append(-1)
            else:
                out.leaves.append(leaf_ids[r[1]])
                listing.add(full)
            out.refs.append(ref)
        splits[split] = out
    return Catalog(root=src.parent, hierarchy=hierarchy, splits=splits, fingerprint=listing.fingerprint())


def _file(csv_path: Path, ref: str) -> str:
    """The file a row names (relative to its CSV's folder), normalised so that two spellings compare equal."""
    return os.path.normpath(csv_path.parent / ref)
