"""`grainsweep tree DIR`: the levels of a dataset, their class counts, and a few paths down the tree."""

from __future__ import annotations

import argparse
import sys

from core.format import hierarchy as hlib
from data_tools.publish import read_manifest


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tree", help="print a dataset's levels, class counts and example paths")
    p.add_argument("dir", help="dataset folder (with hierarchy.json)")
    p.add_argument("--examples", type=int, default=2, help="children shown per node (default 2)")
    p.set_defaults(run=run)


def render(h: hlib.Hierarchy, manifest: dict | None, examples: int) -> list[str]:
    lines = ["levels (finest first):"]
    for lv in h.levels:
        lines.append(f"  {lv.name:<16} {lv.num_classes:>7} classes")
    if manifest and manifest.get("splits"):
        lines.append("samples: " + ", ".join(f"{k} {v}" for k, v in manifest["splits"].items()))
    lines.append("example paths:")
    # children of each class, level by level from the coarsest
    order = list(reversed(h.levels))
    children: list[dict[int, list[int]]] = []
    for coarse, fine in zip(order, order[1:]):
        pm = h.parent_map(fine.name, coarse.name)
        kids: dict[int, list[int]] = {}
        for f, c in enumerate(pm):
            kids.setdefault(int(c), []).append(f)
        children.append(kids)

    def walk(depth: int, classes: list[int]) -> None:
        lv = order[depth]
        for c in classes[:examples]:
            lines.append(f"{'  ' * (depth + 1)}{lv.name} {lv.classes[c]}: {lv.titles[c]}")
            if depth + 1 < len(order):
                walk(depth + 1, children[depth].get(c, []))
        if len(classes) > examples:
            lines.append(f"{'  ' * (depth + 1)}... and {len(classes) - examples} more {lv.name} classes")

    walk(0, list(range(order[0].num_classes)))
    return lines


def run(args: argparse.Namespace) -> int:
    try:
        h = hlib.load(args.dir)
    except PermissionError as e:
        print(f"grainsweep tree: error: {e.filename}: permission denied; make it readable (chmod) or run as its "
              f"owner", file=sys.stderr)
        return 2
    print("\n".join(render(h, read_manifest(hlib.Path(args.dir)), args.examples)))
    return 0
