"""ImageNet wnids -> label levels cut from WordNet 3.0's noun hierarchy, for `core.format.hierarchy.Hierarchy`.

A wnid such as 'n01440764' is 'n' + the 8-digit offset of a WordNet 3.0 noun synset (tench.n.01). Every class id
written here is a wnid; its title is the synset's first lemma with underscores as spaces ('tench', 'Genet').

From DAG to tree (deterministic, needs nothing but WordNet):
- a synset's parents are hypernyms() + instance_hypernyms() (4 classes of ImageNet-21k have only the latter);
- its depth is the length of its shortest parent chain to the root entity.n.01 (n00001740);
- its tree parent is the parent of least depth, ties broken by the smallest offset, so every tree path is a
  shortest path to the root and a node's tree depth is its WordNet shortest-path depth (YOLO9000's WordTree
  also keeps shortest paths).
Listed classes that are ancestors of other listed classes (ImageNet-21k lists internal nodes) stay leaves of
their own: the leaf level holds every wnid once, and every coarser level maps each leaf, internal or not, through
its own tree path. A listed internal class X may therefore be a coarse class of its descendants while X itself,
as a leaf, maps to its own ancestor (hops) or stays alone (depth, num_classes) until its subtree is merged.

Cuts, each computed on that one tree, so every coarser level is a function of the finer one:
- `hops(ks)`: level 'hop{k}' maps a leaf to its ancestor k steps up its tree path, clipped at the root.
- `depth(ds)`: level 'depth{d}' maps a leaf to its ancestor at depth d; a leaf shallower than d keeps itself
  (it is the deepest node on its path), so shallow leaves are singleton classes there.
- `num_classes(ns)`: level 'n{N}' is a greedy merge from the leaves upward. Every internal tree node is merged in
  the order (deepest first, then fewest listed leaves under it, then smallest offset); merging a node puts all
  leaves under it into its class. Level 'n{N}' is the state at the first moment there are at most N classes, so
  it has at most N classes (fewer when one merge removes several; N >= the number of leaves gives the leaves).
  Merging deepest first makes the result lie between two depth cuts; fewest leaves first merges small groups
  before large ones at the same depth.
Each cut function returns `(names, paths)` for `Hierarchy.from_leaf_paths`, leaf level 'wnid' first; the
levels are ordered finest first whatever order the values come in.

Synset work (parents, depth, title) is cached per WordNet reader, so ImageNet-21k's 21,843 classes take a few
seconds once and the cuts after that are cheap.
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable

from core.format.hierarchy import Hierarchy

ROOT = 1740  # entity.n.01, the single root of WordNet 3.0's nouns
LEAF_LEVEL = "wnid"
WNID = re.compile(r"n\d{8}")

Paths = list[list[tuple[str, str]]]


class WnidError(ValueError):
    """One or more wnids are malformed, duplicated, or not WordNet 3.0 noun offsets; the message lists them all."""


@dataclass(frozen=True)
class Node:
    offset: int
    parent: int  # tree parent's offset; -1 at the root
    depth: int  # shortest-path length to the root
    title: str


def wnid(offset: int) -> str:
    return f"n{offset:08d}"


class Tree:
    """WordNet 3.0's noun DAG as a shortest-path tree, built lazily and cached per synset."""

    def __init__(self, wn) -> None:
        self.wn = wn
        self.nodes: dict[int, Node] = {}

    def _synset(self, offset: int):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nltk warns and returns None for an offset that is no synset
            try:
                return self.wn.synset_from_pos_and_offset("n", offset)
            except Exception:  # an offset past the end of data.noun, or inside a line
                return None

    def node(self, offset: int) -> Node:
        got = self.nodes.get(offset)
        if got is not None:
            return got
        s = self._synset(offset)
        if s is None:
            raise WnidError(f"{wnid(offset)} is not a WordNet 3.0 noun synset")
        parents = sorted({p.offset() for p in s.hypernyms() + s.instance_hypernyms()})
        if offset == ROOT:
            parent, depth = -1, 0
        elif not parents:
            raise WnidError(f"{wnid(offset)} ({s.name()}) has no hypernym but is not entity.n.01")
        else:
            # recursion is as deep as WordNet (under 20 levels)
            depth, parent = min((self.node(p).depth + 1, p) for p in parents)
        node = Node(offset, parent, depth, s.lemma_names()[0].replace("_", " "))
        self.nodes[offset] = node
        return node

    def path(self, offset: int) -> list[int]:
        """Offsets from `offset` up to the root, itself first."""
        out = [offset]
        while (p := self.node(out[-1]).parent) >= 0:
            out.append(p)
        return out

    def label(self, offset: int) -> tuple[str, str]:
        return wnid(offset), self.node(offset).title


def tree(wn=None) -> Tree:
    """The cached tree of a reader (default: `data_tools.wordnet_data.wordnet()`)."""
    if wn is None:
        from data_tools.wordnet_data import wordnet
        wn = wordnet()
    return _tree(wn)


@functools.lru_cache(maxsize=4)
def _tree(wn) -> Tree:
    return Tree(wn)


def leaf_offsets(wnids: Iterable[str], t: Tree) -> list[int]:
    """Offsets of `wnids`, refusing malformed, duplicated or unknown ones all in one error."""
    wnids = [str(w) for w in wnids]
    if not wnids:
        raise WnidError("no wnids given")
    malformed = [w for w in wnids if not WNID.fullmatch(w)]
    seen: set[str] = set()
    dups = sorted({w for w in wnids if w in seen or seen.add(w)})
    unknown = []
    for w in wnids:
        if w not in malformed:
            try:
                t.node(int(w[1:]))
            except WnidError:
                unknown.append(w)
    problems = []
    if malformed:
        problems.append(f"{len(malformed)} malformed (expected 'n' + 8 digits): {malformed}")
    if unknown:
        problems.append(f"{len(unknown)} not WordNet 3.0 noun synsets: {unknown}")
    if dups:
        problems.append(f"{len(dups)} listed more than once: {dups}")
    if problems:
        raise WnidError("bad wnids: " + "; ".join(problems))
    return [int(w[1:]) for w in wnids]


def _values(values: Iterable[int], lowest: int, what: str, finest_first: Callable[[list[int]], list[int]]):
    vals = [int(v) for v in values]
    if not vals:
        raise ValueError(f"{what}: give at least one value")
    if len(set(vals)) != len(vals):
        raise ValueError(f"{what}: repeated values {sorted(vals)}")
    if min(vals) < lowest:
        raise ValueError(f"{what}: values must be >= {lowest}, got {sorted(vals)}")
    return finest_first(vals)


def _cut(wnids, t: Tree, prefix: str, vals: list[int], pick: Callable[[list[int], int], int]):
    """Leaf level plus one level per value; `pick(path, v)` chooses the class offset on a leaf's tree path."""
    names = [LEAF_LEVEL] + [f"{prefix}{v}" for v in vals]
    paths = []
    for off in leaf_offsets(wnids, t):
        p = t.path(off)
        paths.append([t.label(off)] + [t.label(pick(p, v)) for v in vals])
    return names, paths


def hops(wnids: Iterable[str], ks: Iterable[int], wn=None) -> tuple[list[str], Paths]:
    """Levels 'hop{k}': each leaf's ancestor k steps up its tree path (clipped at the root), k ascending."""
    ks = _values(ks, 1, "hops", sorted)
    return _cut(wnids, tree(wn), "hop", ks, lambda p, k: p[min(k, len(p) - 1)])


def depth(wnids: Iterable[str], ds: Iterable[int], wn=None) -> tuple[list[str], Paths]:
    """Levels 'depth{d}': each leaf's ancestor at depth d from entity.n.01 (itself if shallower), d descending."""
    ds = _values(ds, 0, "depth", lambda v: sorted(v, reverse=True))
    # p[-1] is the root at depth 0, so the node at depth d is p[len(p) - 1 - d]
    return _cut(wnids, tree(wn), "depth", ds, lambda p, d: p[max(len(p) - 1 - d, 0)])


def num_classes(wnids: Iterable[str], ns: Iterable[int], wn=None) -> tuple[list[str], Paths]:
    """Levels 'n{N}': the greedy bottom-up merge (see the module docstring) stopped at <= N classes, N descending."""
    t = tree(wn)
    ns = _values(ns, 1, "num_classes", lambda v: sorted(v, reverse=True))
    leaves = leaf_offsets(wnids, t)
    paths = {off: t.path(off) for off in leaves}

    # the tree restricted to the leaves' paths: children and listed leaves under each node
    children: dict[int, set[int]] = {}
    under: dict[int, int] = {}
    for p in paths.values():
        for child, parent in zip(p, p[1:]):
            children.setdefault(parent, set()).add(child)
        for n in p:
            under[n] = under.get(n, 0) + 1
    is_leaf = set(leaves)

    # merge order; when a node's turn comes every deeper node is merged, so each child holds exactly one class
    order = sorted(children, key=lambda n: (-t.node(n).depth, under[n], n))
    rank = {n: i for i, n in enumerate(order)}
    count, stop = len(leaves), []  # stop[j]: how many merges level ns[j] has
    for i in range(len(order) + 1):
        while len(stop) < len(ns) and count <= ns[len(stop)]:
            stop.append(i)
        if i < len(order):
            n = order[i]
            count -= len(children[n]) + (n in is_leaf) - 1

    def pick(p: list[int], merged: int) -> int:
        # the shallowest merged node on the path, else the leaf itself
        for n in reversed(p):
            if rank.get(n, merged) < merged:
                return n
        return p[0]

    names = [LEAF_LEVEL] + [f"n{n}" for n in ns]
    out = [[t.label(off)] + [t.label(pick(paths[off], m)) for m in stop] for off in leaves]
    return names, out


CUTS = {"hops": hops, "depth": depth, "num_classes": num_classes}


def build_hierarchy(wnids: Iterable[str], cut: str, values: list[int], wn=None) -> Hierarchy:
    """The leaf level 'wnid' plus one level per value of `cut` ('hops', 'depth' or 'num_classes')."""
    if cut not in CUTS:
        raise ValueError(f"unknown cut {cut!r}; choose one of {sorted(CUTS)}")
    return Hierarchy.from_leaf_paths(*CUTS[cut](list(wnids), values, wn=wn))
