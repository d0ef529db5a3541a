"""`grainsweep convert csv`: a path + levels manifest; nesting refused before anything is written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from core.format import hierarchy as hlib
from core.format.hierarchy import HierarchyError
from launch.cli import main as cli
from tests.test_bad_images import read_rows

# leaf, genus, family: 6 leaves, 3 genera, 2 families
TREE = [("a1", "A", "X"), ("a2", "A", "X"), ("b1", "B", "X"), ("b2", "B", "X"), ("c1", "C", "Y"), ("c2", "C", "Y")]


def write_manifest(path: Path, rows: list[tuple]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("path", "leaf", "genus", "family"), *rows])


@pytest.fixture
def source(tmp_path) -> Path:
    root = tmp_path / "src"
    (root / "im").mkdir(parents=True)
    train, val = [], []
    for k, labels in enumerate(TREE):
        for j in range(3):
            name = f"im/{labels[0]}_{j}.png"
            Image.new("RGB", (6 + k, 5), (k * 20, j * 50, 7)).save(root / name)
            (val if j == 2 else train).append((name, *labels))
    write_manifest(root / "train.csv", train)
    (root / "meta").mkdir()
    write_manifest(root / "meta" / "val.csv", [(f"../{p}", *ls) for p, *ls in val])  # relative to its folder
    return root


def test_levels_labels_and_val_csv(source, tmp_path, capsys):
    out = tmp_path / "ds"
    args = ["convert", "csv", str(source / "train.csv"), "--out", str(out), "--val-csv",
            str(source / "meta" / "val.csv"), "--workers", "1", "--set", "write.write_mode=raw"]
    assert cli(args) == 0
    assert "img/s" in capsys.readouterr().out
    h = hlib.load(out)
    assert h.names == ["leaf", "genus", "family"]
    assert [lv.num_classes for lv in h.levels] == [6, 3, 2]
    for leaf, (lid, genus, family) in enumerate(TREE):
        assert [c for _, c, _ in h.path(leaf)] == [family, genus, lid]
    for split, n in (("train", 12), ("val", 6)):
        data = read_rows(out / f"{split}.beton", ["leaf", "genus", "family", "index"])
        paths = (out / f"{split}_paths.txt").read_text().splitlines()
        assert len(paths) == n and sorted(data["index"]) == list(range(n))
        for row, i in enumerate(data["index"]):
            stem = Path(paths[i]).stem  # e.g. 'b1_2'
            k = [t[0] for t in TREE].index(stem.split("_")[0])
            assert (data["leaf"][row], data["genus"][row], data["family"][row]) == (
                k, h.leaf_map("genus")[k], h.leaf_map("family")[k])
            j = int(stem.split("_")[1])
            assert data["image"][row].shape == (5, 6 + k, 3)
            assert (data["image"][row].reshape(-1, 3) == (k * 20, j * 50, 7)).all()
    assert cli(args) == 0  # convert once
    assert "up to date" in capsys.readouterr().out


def test_a_class_with_two_parents_is_refused_naming_it_and_nothing_is_written(source, tmp_path, capsys):
    rows = list(csv.reader((source / "train.csv").open()))[1:]
    rows.append(("im/other.png", "b2", "B", "Y"))  # genus B under family X elsewhere, here under Y
    write_manifest(source / "bad.csv", rows)
    out = tmp_path / "ds"
    assert cli(["convert", "csv", str(source / "bad.csv"), "--out", str(out), "--max-rejects", "100"]) == 2
    err = capsys.readouterr()
    assert "'B' of level 'genus' has two parents in level 'family'" in err.err
    assert "checking images" not in err.err  # refused before the pre-pass
    assert not out.exists() and not list(tmp_path.glob("ds*")) and not list(tmp_path.glob(".ds*"))
    # the same leaf under two genera in two rows: named too
    write_manifest(source / "bad2.csv", [("im/a1_0.png", "a1", "A", "X"), ("im/a1_1.png", "a1", "B", "X")])
    from data_tools.sources import csv_manifest
    with pytest.raises(HierarchyError, match="'a1' of level 'leaf' has two parents"):
        csv_manifest.scan(source / "bad2.csv", csv_manifest.Options())


def test_empty_cells_are_rejects_and_bad_headers_are_refused(source, tmp_path):
    from data_tools import convert_source
    from data_tools.sources import csv_manifest

    write_manifest(source / "holes.csv", [("im/a1_0.png", "a1", "A", "X"), ("im/a2_0.png", "a2", "", "X"),
                                         ("im/b1_0.png", "b1", "B", "X")])
    cfg = convert_source.load_config("csv", None, ["convert.max_rejects=1", "convert.workers=1"])
    result = convert_source.convert("csv", source / "holes.csv", tmp_path / "ds", cfg)
    assert result.counts == {"train": 2}
    assert (tmp_path / "ds" / "rejects.csv").read_text().splitlines()[1:] == [
        "train,im/a2_0.png,empty value in column(s) ['genus']"]
    (source / "h.csv").write_text("file,leaf\nim/a1_0.png,a1\n")
    with pytest.raises(csv_manifest.SourceError, match="header must be 'path'"):
        csv_manifest.scan(source / "h.csv", csv_manifest.Options())


def test_relative_val_csv_is_relative_to_the_current_folder(source, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(source)
    out = tmp_path / "ds"
    assert cli(["convert", "csv", "train.csv", "--out", str(out), "--val-csv", "meta/val.csv", "--workers", "1"]) == 0
    assert not (out / "rejects.csv").exists()
    assert json.loads((out / "manifest.json").read_text())["splits"] == {"train": 12, "val": 6}
    # the same files named from elsewhere are the same conversion
    monkeypatch.chdir(source / "meta")
    assert cli(["convert", "csv", "../train.csv", "--out", str(out), "--val-csv", "val.csv"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_a_file_listed_with_two_labels_is_a_reject_naming_both(source, tmp_path):
    from data_tools import convert_source
    from data_tools.sources import csv_manifest

    rows = [("im/a1_0.png", "a1", "A", "X"), ("im/a1_1.png", "a1", "A", "X"), ("im/a1_0.png", "a2", "A", "X"),
            ("im/b1_0.png", "b1", "B", "X"), ("im/b1_0.png", "b1", "B", "X")]  # the last: twice, same labels
    write_manifest(source / "dup.csv", rows)
    catalog = csv_manifest.scan(source / "dup.csv", csv_manifest.Options())
    assert sorted(catalog.splits["train"].early_rejects) == [0, 2]
    assert "a1/A/X" in catalog.splits["train"].early_rejects[0] and "a2/A/X" in catalog.splits["train"].early_rejects[0]
    assert catalog.hierarchy.level("leaf").classes == ("a1", "b1")  # a2 has no undisputed row
    cfg = convert_source.load_config("csv", None, ["convert.max_rejects=2", "convert.workers=1"])
    result = convert_source.convert("csv", source / "dup.csv", tmp_path / "ds", cfg)
    assert result.counts == {"train": 3} and result.rejects == 2
    rejects = (tmp_path / "ds" / "rejects.csv").read_text().splitlines()[1:]
    assert [r.split(",")[1] for r in rejects] == ["im/a1_0.png", "im/a1_0.png"]
    assert all("different labels" in r for r in rejects)
