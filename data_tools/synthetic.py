"""Synthetic images from the "hierarchical multi-view" distribution of Hong et al. (arXiv 2303.16887).

Every node of a class tree (e.g. 4 superclasses x 4 classes x 4 subclasses) owns a visual feature: a coloured,
possibly striped shape. An image of leaf `l` shows the features of every node on l's path, drawn at random
places on a textured background:
- the features of the coarser nodes are the *common* features: large and strong in easy samples;
- the leaf's own feature is the *fine-grained* feature: smaller and fainter, present in every sample;
- a *hard* sample has its common features missing or weak (strength below `hard_common_strength`), so only
  the fine-grained feature tells its class apart. Coarse-label training can reach high accuracy on easy samples
  from the common features alone; the theory predicts it then fails on hard samples, which fine-label
  training (which must learn the fine features) gets right.
Distractors (another leaf's fine feature, faint) make the fine features noisy rather than trivially sufficient.

Sample `i` of a split depends only on (seed, split, i), so any subset renders in any order, in parallel, and
identically every time.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from core.format.hierarchy import Hierarchy, Level

GENERATOR_VERSION = 1  # bump when the images for a given config change

SHAPES = ("disc", "square", "triangle", "ring", "cross", "diamond", "bar", "x")
HUES = ("red", "orange", "yellow", "lime", "green", "teal", "cyan", "azure", "blue", "violet", "magenta", "pink")
TEXTURES = ("solid", "striped")
SPLITS = {"train": 0, "val": 1}


@dataclass(frozen=True)
class SyntheticConfig:
    branching: tuple[int, ...] = (4, 4, 4)  # children per node, coarsest level first: 4 x 4 x 4 = 64 leaves
    level_names: tuple[str, ...] = ("subclass", "class", "superclass")  # finest first, one per branching entry
    image_size: int = 32  # pixels, square
    train_per_leaf: int = 64  # images per leaf in train
    val_per_leaf: int = 24  # images per leaf in val
    hard_fraction_train: float = 0.02  # share of hard samples in train (the theory has a few)
    hard_fraction_val: float = 0.5  # share of hard samples in val, marked in the `hard` column
    common_size: float = 0.42  # feature size of coarse (common) features, as a fraction of the image side
    fine_size: float = 0.3  # feature size of the leaf's fine-grained feature
    common_strength: tuple[float, float] = (0.75, 1.0)  # opacity range of common features in easy samples
    hard_common_strength: float = 0.15  # in hard samples common features have opacity in [0, this]
    fine_strength: tuple[float, float] = (0.55, 0.9)  # opacity range of the fine-grained feature
    distractor_prob: float = 0.3  # chance of one faint fine feature of another leaf
    distractor_strength: float = 0.35  # its opacity
    background_noise: float = 0.06  # std of per-pixel noise, in [0, 1] intensity units
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.level_names) != len(self.branching):
            raise ValueError(f"level_names has {len(self.level_names)} names for {len(self.branching)} levels "
                             f"(branching={list(self.branching)})")
        if any(b < 1 for b in self.branching):
            raise ValueError(f"branching entries must be >= 1, got {list(self.branching)}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8 pixels, got {self.image_size}")
        if self.train_per_leaf < 1 or self.val_per_leaf < 1:
            raise ValueError("train_per_leaf and val_per_leaf must be >= 1")
        for name in ("hard_fraction_train", "hard_fraction_val", "distractor_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        nodes = sum(int(np.prod(self.branching[: i + 1])) for i in range(len(self.branching)))
        if nodes > len(SHAPES) * len(HUES) * len(TEXTURES):
            raise ValueError(f"the tree has {nodes} nodes but only {len(SHAPES) * len(HUES) * len(TEXTURES)} "
                             "distinct features exist; use fewer levels or smaller branching")


@dataclass(frozen=True)
class Feature:
    shape: int
    hue: int
    texture: int

    @property
    def title(self) -> str:
        tex = "" if TEXTURES[self.texture] == "solid" else "striped "
        return f"{HUES[self.hue]} {tex}{SHAPES[self.shape]}"

    @property
    def rgb(self) -> np.ndarray:
        return np.array(colorsys.hsv_to_rgb(self.hue / len(HUES), 0.85, 0.95), dtype=np.float32)


class SyntheticTree:
    """The class tree and each node's feature, fixed by the config's seed."""

    def __init__(self, cfg: SyntheticConfig):
        self.cfg = cfg
        depth = len(cfg.branching)
        # nodes per depth (coarsest first), as paths of child indices
        self.paths_by_depth: list[list[tuple[int, ...]]] = []
        paths: list[tuple[int, ...]] = [()]
        for b in cfg.branching:
            paths = [p + (c,) for p in paths for c in range(b)]
            self.paths_by_depth.append(paths)
        rng = np.random.default_rng([cfg.seed, 7919])
        combos = [(s, h, t) for t in range(len(TEXTURES)) for s in range(len(SHAPES)) for h in range(len(HUES))]
        # solid features first so small trees use only solid shapes; order within shuffled by seed
        n_solid = len(SHAPES) * len(HUES)
        order = np.concatenate([rng.permutation(n_solid), n_solid + rng.permutation(len(combos) - n_solid)])
        all_nodes = [p for d in range(depth) for p in self.paths_by_depth[d]]
        self.features = {p: Feature(*combos[order[k]]) for k, p in enumerate(all_nodes)}
        self.leaves = self.paths_by_depth[-1]

    def hierarchy(self) -> Hierarchy:
        depth = len(self.cfg.branching)
        levels = []
        for li, name in enumerate(self.cfg.level_names):  # finest first
            d = depth - 1 - li  # tree depth of this level
            nodes = self.paths_by_depth[d]
            pos = {p: k for k, p in enumerate(nodes)}
            levels.append(Level(
                name=name,
                classes=tuple(".".join(map(str, p)) for p in nodes),
                titles=tuple(self._title(p) for p in nodes),
                leaf_to_class=tuple(pos[leaf[: d + 1]] for leaf in self.leaves),
            ))
        return Hierarchy(levels=tuple(levels))

    def _title(self, path: tuple[int, ...]) -> str:
        return " / ".join(self.features[path[: k + 1]].title for k in range(len(path)))


class SyntheticSplit:
    """An indexable split: item i is (HxWx3 uint8 image, leaf index, {'hard': 0|1})."""

    extra_columns = ("hard",)

    def __init__(self, tree: SyntheticTree, split: str):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
        self.tree, self.split, self.cfg = tree, split, tree.cfg
        per_leaf = self.cfg.train_per_leaf if split == "train" else self.cfg.val_per_leaf
        self.n_leaves = len(tree.leaves)
        self.length = per_leaf * self.n_leaves
        self.hard_fraction = self.cfg.hard_fraction_train if split == "train" else self.cfg.hard_fraction_val
        s = self.cfg.image_size
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        self._grid = (yy + 0.5, xx + 0.5)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[np.ndarray, int, dict[str, int]]:
        if not 0 <= i < self.length:
            raise IndexError(i)
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, SPLITS[self.split], int(i)])
        leaf = int(i) % self.n_leaves  # interleaved: every prefix of the split is nearly balanced
        hard = bool(rng.random() < self.hard_fraction)
        img = self._background(rng)
        path = self.tree.leaves[leaf]
        # common features (coarser nodes), then the fine-grained one on top
        for k in range(len(path) - 1):
            lo, hi = (0.0, cfg.hard_common_strength) if hard else cfg.common_strength
            self._draw(img, rng, self.tree.features[path[: k + 1]], cfg.common_size, rng.uniform(lo, hi))
        if rng.random() < cfg.distractor_prob and self.n_leaves > 1:
            other = (leaf + 1 + int(rng.integers(self.n_leaves - 1))) % self.n_leaves
            self._draw(img, rng, self.tree.features[self.tree.leaves[other]], cfg.fine_size,
                       cfg.distractor_strength)
        self._draw(img, rng, self.tree.features[path], cfg.fine_size, rng.uniform(*cfg.fine_strength))
        out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return out, leaf, {"hard": int(hard)}

    # drawing
    def _background(self, rng: np.random.Generator) -> np.ndarray:
        s = self.cfg.image_size
        base = rng.uniform(0.15, 0.45, size=3).astype(np.float32)
        # low-frequency blotches: a 4x4 random grid upsampled by repetition and smoothed by averaging shifts
        coarse = rng.normal(0.0, 0.08, size=(4, 4, 3)).astype(np.float32)
        reps = -(-s // 4)
        blot = np.repeat(np.repeat(coarse, reps, 0), reps, 1)[:s, :s]
        blot = (blot + np.roll(blot, reps // 2, 0) + np.roll(blot, reps // 2, 1)) / 3.0
        noise = rng.normal(0.0, self.cfg.background_noise, size=(s, s, 3)).astype(np.float32)
        return base + blot + noise

    def _draw(self, img: np.ndarray, rng: np.random.Generator, feat: Feature, size: float, alpha: float) -> None:
        s = self.cfg.image_size
        r = 0.5 * size * s * rng.uniform(0.85, 1.15)
        cy, cx = rng.uniform(r, s - r, size=2)
        yy, xx = self._grid
        y, x = (yy - cy) / r, (xx - cx) / r
        mask = _shape_mask(SHAPES[feat.shape], y, x)
        if TEXTURES[feat.texture] == "striped":
            mask &= (np.floor((yy + xx) / max(1.0, r / 2.5)) % 2) == 0
        colour = feat.rgb * rng.uniform(0.9, 1.1)
        a = (alpha * mask)[..., None]
        img *= 1.0 - a
        img += a * colour


def _shape_mask(shape: str, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    ay, ax = np.abs(y), np.abs(x)
    d = np.sqrt(y * y + x * x)
    if shape == "disc":
        return d <= 1.0
    if shape == "square":
        return np.maximum(ay, ax) <= 0.8
    if shape == "triangle":
        return (y >= -0.9) & (y <= 0.8) & (ax <= (y + 0.9) * 0.6)
    if shape == "ring":
        return (d <= 1.0) & (d >= 0.55)
    if shape == "cross":
        return ((ax <= 0.3) & (ay <= 1.0)) | ((ay <= 0.3) & (ax <= 1.0))
    if shape == "diamond":
        return ay + ax <= 1.0
    if shape == "bar":
        return (ay <= 0.35) & (ax <= 1.0)
    if shape == "x":
        return (np.abs(ay - ax) <= 0.3) & (d <= 1.1)
    raise ValueError(f"unknown shape {shape!r}")


def build(cfg: SyntheticConfig) -> tuple[Hierarchy, dict[str, SyntheticSplit]]:
    tree = SyntheticTree(cfg)
    return tree.hierarchy(), {name: SyntheticSplit(tree, name) for name in SPLITS}
