"""iNaturalist 2021: the official COCO-style JSON (train.json / train_mini.json, val.json) -> seven taxonomic levels.

Each JSON has images [{id, file_name, ...}] (file_name relative to SRC, e.g. 'train/00000_Animalia_..._longipilis/
<uuid>.jpg'), annotations [{image_id, category_id}] and categories [{id, name, common_name, supercategory,
kingdom, phylum, class, order, family, genus, specific_epithet, image_dir_name}]
(https://github.com/visipedia/inat_comp/tree/master/2021).

Levels, finest first: species, genus, family, order, class, phylum, kingdom. Class ids are stable taxon names:
a species is its scientific name (the category's `name`, 'Abrothrix longipilis'); a coarser taxon is its
lineage joined by '/' ('Animalia/Chordata/Mammalia'), because a bare name is not unique across kingdoms (the
same genus name can be a plant and an animal) and the lineage makes every level nest by construction. Titles
are human readable: 'Abrothrix longipilis (Long-haired Grass Mouse)' and the bare taxon name.

The `supercategory` ('Birds', 'Plants', 'Animalia' for other animals, ...) is added as a level only where it
nests: right after the finest level L such that it is a function of L and the next level is a function of it.
In the official 2021 data it does not (it is a function of class, but 'Animalia' spans several phyla and phylum
Chordata spans several supercategories), so it is left out and the conversion says so in a note (and in
manifest.json); its classes are recoverable from `class` for the nesting targets.

Classes are ordered by category id; val's categories must agree with train's. An image with no annotation, or
with more than one, is a reject.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.format.hierarchy import Hierarchy
from data_tools import beton
from data_tools.sources.catalog import Catalog, Listing, SourceError, SplitRows

RANKS = ("genus", "family", "order", "class", "phylum", "kingdom")  # coarser levels, finest first
LEAF_LEVEL = "species"
WRITE = beton.WriteOptions(write_mode="jpg", max_resolution=256, jpeg_quality=90)


@dataclass(frozen=True)
class Options:
    train_json: str = "train.json"  # relative to SRC; 'train_mini.json' for the 50-per-species subset
    val_json: str = "val.json"  # relative to SRC; "" = no val split


def scan(src: Path, opts: Options) -> Catalog:
    if not src.is_dir():
        raise SourceError(f"{src}: expected the iNat2021 folder holding {opts.train_json}")
    listing = Listing(src)
    files = {"train": opts.train_json, **({"val": opts.val_json} if opts.val_json else {})}
    docs = {split: _read(src / name, listing) for split, name in files.items()}
    categories = _categories(docs["train"], src / files["train"])
    for split, doc in docs.items():
        other = _categories(doc, src / files[split])
        if split != "train" and any(categories.get(k) != v for k, v in other.items()):
            raise SourceError(f"{src / files[split]}: categories differ from {files['train']}'s")

    # hierarchy: one path per category, in id order
    cat_ids = sorted(categories)
    leaf_of = {cid: i for i, cid in enumerate(cat_ids)}
    names = [LEAF_LEVEL, *RANKS]
    paths = [_path(categories[c]) for c in cat_ids]
    leaf_ids = [p[0][0] for p in paths]
    dups = sorted({n for n in leaf_ids if leaf_ids.count(n) > 1})
    if dups:
        raise SourceError(f"{src / files['train']}: species names used by more than one category: {dups[:10]}")
    names, paths, note = _with_supercategory(names, paths, [categories[c] for c in cat_ids])
    hierarchy = Hierarchy.from_leaf_paths(names, paths)

    # rows: one per image, in the JSON's order
    splits = {}
    for split, doc in docs.items():
        where = src / files[split]
        labels: dict[int, list[int]] = {}
        for a in doc["annotations"]:
            if a["category_id"] not in categories:
                raise SourceError(f"{where}: annotation of image {a['image_id']} has unknown category "
                                  f"{a['category_id']}")
            labels.setdefault(a["image_id"], []).append(a["category_id"])
        rows = SplitRows(refs=[], leaves=[])
        for img in doc["images"]:
            got = labels.get(img["id"], [])
            if len(got) == 1:
                rows.leaves.append(leaf_of[got[0]])
                listing.add(src / img["file_name"])
            else:
                rows.early_rejects[len(rows.refs)] = ("no annotation" if not got else
                                                      f"{len(got)} annotations: categories {got}")
                rows.leaves.append(-1)
            rows.refs.append(img["file_name"])
        splits[split] = rows
    return Catalog(root=src, hierarchy=hierarchy, splits=splits, fingerprint=listing.fingerprint(),
                   notes=[note])


def _read(path: Path, listing: Listing) -> dict:
    if not path.is_file():
        raise SourceError(f"{path}: missing")
    listing.add(path)
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SourceError(f"{path}: not valid JSON ({e})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
            raise SourceError(f"{path}: expected a COCO-style object with a list {key!r}")
    return doc


def _categories(doc: dict, path: Path) -> dict[int, dict]:
    out = {}
    for c in doc["categories"]:
        missing = [k for k in ("id", "name", "supercategory", *RANKS) if not str(c.get(k, "")).strip()]
        if missing:
            raise SourceError(f"{path}: category {c.get('id', '?')} lacks {missing}")
        if c["id"] in out:
            raise SourceError(f"{path}: category id {c['id']} appears twice")
        out[c["id"]] = c
    if not out:
        raise SourceError(f"{path}: no categories")
    return out


def _path(c: dict) -> list[tuple[str, str]]:
    """(id, title) per level, species first; coarse ids are the lineage from the kingdom down."""
    common = str(c.get("common_name") or "").strip()
    species = (c["name"], f"{c['name']} ({common})" if common else c["name"])
    lineage = [str(c[r]) for r in reversed(RANKS)]  # kingdom first
    coarse = [("/".join(lineage[: len(RANKS) - k]), lineage[len(RANKS) - k - 1]) for k in range(len(RANKS))]
    return [species, *coarse]


def _with_supercategory(names: list[str], paths: list, cats: list[dict]) -> tuple[list[str], list, str]:
    """Inserts 'supercategory' after the finest level where it nests; else leaves it out. Returns a note."""
    sup = [str(c["supercategory"]) for c in cats]

    def function_of(a: list, b: list) -> bool:  # is b a function of a, over the categories?
        seen: dict = {}
        return all(seen.setdefault(x, y) == y for x, y in zip(a, b))

    cols = [[p[i][0] for p in paths] for i in range(len(names))]
    for i in range(len(names)):
        nxt_ok = i + 1 == len(names) or function_of(sup, cols[i + 1])
        if function_of(cols[i], sup) and nxt_ok:
            new = [p[: i + 1] + [(s, s)] + p[i + 1:] for p, s in zip(paths, sup)]
            return (names[: i + 1] + ["supercategory"] + names[i + 1:], new,
                    f"supercategory nests between {names[i]!r} and "
                    f"{names[i + 1] if i + 1 < len(names) else 'the top'!r}; added as a level")
    return names, paths, ("supercategory does not nest in species > genus > ... > kingdom (no level it is a "
                          "function of is followed by one that is a function of it); left out")
