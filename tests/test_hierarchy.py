"""The hierarchy model: nesting is validated on load, and errors name the culprit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.format import hierarchy as hlib
from core.format.hierarchy import Hierarchy, HierarchyError

NAMES = ["species", "genus", "family"]
PATHS = [
    [("sp_a", "A"), ("g1", "G1"), ("f1", "F1")],
    [("sp_b", "B"), ("g1", "G1"), ("f1", "F1")],
    [("sp_c", "C"), ("g2", "G2"), ("f1", "F1")],
    [("sp_d", "D"), ("g3", "G3"), ("f2", "F2")],
]


def test_from_paths_round_trip(tmp_path):
    h = Hierarchy.from_leaf_paths(NAMES, PATHS)
    assert h.names == NAMES
    assert [lv.num_classes for lv in h.levels] == [4, 3, 2]
    h.save(tmp_path / "hierarchy.json")
    again = hlib.load(tmp_path)
    assert again == h
    data = json.loads((tmp_path / "hierarchy.json").read_text())
    assert [lv["name"] for lv in data["levels"]] == NAMES
    assert {"name", "classes", "titles"} <= set(data["levels"][0])


def test_maps_agree_with_paths():
    h = Hierarchy.from_leaf_paths(NAMES, PATHS)
    for j, path in enumerate(PATHS):
        got = [(cid, title) for _, cid, title in reversed(h.path(j))]
        assert got == path
    pm = h.parent_map("species", "family")
    for leaf in range(4):
        assert pm[leaf] == h.leaf_map("family")[leaf]
    labels = h.labels(np.array([0, 3]))
    assert labels["genus"].tolist() == [h.leaf_map("genus")[0], h.leaf_map("genus")[3]]


def test_two_parents_are_refused_by_name():
    bad = [list(p) for p in PATHS]
    bad[2] = [("sp_c", "C"), ("g1", "G1"), ("f2", "F2")]  # g1 under f1 and f2
    with pytest.raises(HierarchyError, match=r"'g1'.*'f1'.*'f2'"):
        Hierarchy.from_leaf_paths(NAMES, bad)


def test_malformed_files_are_named(tmp_path):
    f = tmp_path / "hierarchy.json"
    f.write_text("{nope")
    with pytest.raises(HierarchyError, match="not valid JSON"):
        hlib.load(f)
    f.write_text(json.dumps({"levels": [{"name": "leaf", "classes": ["a", "b"]},
                                        {"name": "top", "classes": ["x"], "leaf_to_class": [0, 1]}]}))
    with pytest.raises(HierarchyError, match=r"'top'.*outside"):
        hlib.load(f)
    f.write_text(json.dumps({"levels": [{"name": "leaf", "classes": ["a", "a"]}]}))
    with pytest.raises(HierarchyError, match="duplicate"):
        hlib.load(f)
    with pytest.raises(HierarchyError, match="no hierarchy file"):
        hlib.load(tmp_path / "missing")


def test_unknown_level_lists_known_ones():
    h = Hierarchy.from_leaf_paths(NAMES, PATHS)
    with pytest.raises(HierarchyError, match="genus"):
        h.level("order")


def test_reserved_and_bad_level_names():
    for name in ("image", "index", "3d", ""):
        with pytest.raises(HierarchyError):
            Hierarchy.from_leaf_paths([name], [[("a", "A")]])
