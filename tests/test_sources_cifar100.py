"""`grainsweep convert cifar100`: pickles in the official python-version layout, read back through ffcv."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from core.format import hierarchy as hlib
from core.format.hierarchy import HierarchyError
from data_tools import convert_source
from data_tools.sources import cifar100
from tests.test_convert_synthetic import read_beton

# the canonical CIFAR-100 superclasses and their five classes each (https://www.cs.toronto.edu/~kriz/cifar.html),
# with the label names spelled as in the official `meta` file
COARSE_TO_FINE = {
    "aquatic_mammals": "beaver dolphin otter seal whale",
    "fish": "aquarium_fish flatfish ray shark trout",
    "flowers": "orchid poppy rose sunflower tulip",
    "food_containers": "bottle bowl can cup plate",
    "fruit_and_vegetables": "apple mushroom orange pear sweet_pepper",
    "household_electrical_devices": "clock keyboard lamp telephone television",
    "household_furniture": "bed chair couch table wardrobe",
    "insects": "bee beetle butterfly caterpillar cockroach",
    "large_carnivores": "bear leopard lion tiger wolf",
    "large_man-made_outdoor_things": "bridge castle house road skyscraper",
    "large_natural_outdoor_scenes": "cloud forest mountain plain sea",
    "large_omnivores_and_herbivores": "camel cattle chimpanzee elephant kangaroo",
    "medium_mammals": "fox porcupine possum raccoon skunk",
    "non-insect_invertebrates": "crab lobster snail spider worm",
    "people": "baby boy girl man woman",
    "reptiles": "crocodile dinosaur lizard snake turtle",
    "small_mammals": "hamster mouse rabbit shrew squirrel",
    "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "vehicles_1": "bicycle bus motorcycle pickup_truck train",
    "vehicles_2": "lawn_mower rocket streetcar tank tractor",
}
COARSE = sorted(COARSE_TO_FINE)  # the official lists are alphabetical
FINE = sorted(f for fs in COARSE_TO_FINE.values() for f in fs.split())
PARENT = {f: c for c, fs in COARSE_TO_FINE.items() for f in fs.split()}


def write_cifar(root: Path, per_class: dict[str, int], seed: int = 0, swap: tuple[str, str] | None = None) -> Path:
    """root/cifar-100-python/{train,test,meta} as the official pickles (bytes keys, lists of labels)."""
    folder = root / cifar100.FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": FINE, b"coarse_label_names": COARSE}, f)
    for name, n in per_class.items():
        fine = np.repeat(np.arange(len(FINE)), n)
        coarse = [COARSE.index(PARENT[FINE[i]]) for i in fine]
        if swap and name == swap[0]:  # one sample of class swap[1] gets the wrong superclass
            k = int(np.flatnonzero(fine == FINE.index(swap[1]))[0])
            coarse[k] = (coarse[k] + 1) % len(COARSE)
        d = {b"batch_label": f"{name} batch".encode(), b"fine_labels": fine.tolist(), b"coarse_labels": coarse,
             b"filenames": [f"img_{i}.png".encode() for i in range(len(fine))],
             b"data": rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f)
    return folder


def test_names_nesting_labels_and_raw_pixels(tmp_path):
    assert len(FINE) == 100 and len(COARSE) == 20
    folder = write_cifar(tmp_path / "src", {"train": 2, "test": 1})
    cfg = convert_source.load_config("cifar100", None, ["convert.workers=1"])
    out = convert_source.convert("cifar100", tmp_path / "src", tmp_path / "ds", cfg).out  # SRC = the parent
    h = hlib.load(out)
    assert h.names == ["fine", "coarse"]
    assert list(h.level("fine").classes) == FINE and list(h.level("coarse").classes) == COARSE
    assert h.level("fine").titles[FINE.index("aquarium_fish")] == "aquarium fish"
    parent = h.parent_map("fine", "coarse")
    assert [COARSE[parent[i]] for i in range(100)] == [PARENT[f] for f in FINE]  # canonical fine -> coarse
    for split, fname, n in (("train", "train", 200), ("val", "test", 100)):
        with open(folder / fname, "rb") as f:
            src = pickle.load(f, encoding="bytes")
        data = read_beton(out / f"{split}.beton", ["fine", "coarse", "index"])
        assert sorted(data["index"][:, 0].tolist()) == list(range(n))
        i = data["index"][:, 0]
        np.testing.assert_array_equal(data["fine"][:, 0], np.asarray(src[b"fine_labels"])[i])
        np.testing.assert_array_equal(data["coarse"][:, 0], np.asarray(src[b"coarse_labels"])[i])
        pixels = src[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)[i]
        np.testing.assert_array_equal(data["image"], pixels)  # raw mode: exact, channel order included
    # SRC may also be the cifar-100-python folder itself: same catalog
    a = cifar100.scan(folder, cifar100.Options())
    assert a.hierarchy == h and a.fingerprint == cifar100.scan(tmp_path / "src", cifar100.Options()).fingerprint


def test_a_fine_class_under_two_superclasses_is_refused_by_name(tmp_path):
    write_cifar(tmp_path / "src", {"train": 1, "test": 1}, swap=("test", "otter"))
    cfg = convert_source.load_config("cifar100", None, [])
    with pytest.raises(HierarchyError, match="'otter' of level 'fine' has two parents"):
        convert_source.convert("cifar100", tmp_path / "src", tmp_path / "ds", cfg)
    assert not (tmp_path / "ds").exists()


def test_wrong_layout_is_refused(tmp_path):
    with pytest.raises(cifar100.SourceError, match="no CIFAR-100 'meta'"):
        cifar100.scan(tmp_path, cifar100.Options())
    folder = write_cifar(tmp_path / "src", {"train": 1, "test": 1})
    (folder / "test").unlink()
    with pytest.raises(cifar100.SourceError, match="test: missing"):
        cifar100.scan(folder, cifar100.Options())
