"""`grainsweep convert inat2021`: the official COCO-style JSON layout, two kingdoms, read back through ffcv."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from core.format import hierarchy as hlib
from data_tools import convert_source
from data_tools.sources import inat2021
from tests.test_bad_images import read_rows

RANKS = ["kingdom", "phylum", "class", "order", "family", "genus"]
# (kingdom, phylum, class, order, family, genus, epithet, common name, supercategory), as in iNat2021
TAXA = [
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Paridae", "Parus", "major", "Great Tit", "Birds"),
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Paridae", "Poecile", "atricapillus",
     "Black-capped Chickadee", "Birds"),
    ("Animalia", "Chordata", "Aves", "Anseriformes", "Anatidae", "Anas", "platyrhynchos", "Mallard", "Birds"),
    ("Animalia", "Arthropoda", "Insecta", "Lepidoptera", "Nymphalidae", "Danaus", "plexippus", "Monarch",
     "Insects"),
    ("Animalia", "Arthropoda", "Insecta", "Coleoptera", "Coccinellidae", "Coccinella", "septempunctata",
     "Seven-spotted Lady Beetle", "Insects"),
    ("Plantae", "Tracheophyta", "Magnoliopsida", "Asterales", "Asteraceae", "Helianthus", "annuus",
     "Common Sunflower", "Plants"),
    ("Plantae", "Tracheophyta", "Liliopsida", "Asparagales", "Orchidaceae", "Ophrys", "apifera", "", "Plants"),
]


def categories(taxa) -> list[dict]:
    out = []
    for i, t in enumerate(taxa):
        c = dict(zip(RANKS, t[:6]))
        dir_name = f"{i:05d}_" + "_".join([*t[:6], t[6]])
        c.update(id=i, name=f"{t[5]} {t[6]}", common_name=t[7], supercategory=t[8], specific_epithet=t[6],
                 image_dir_name=dir_name)
        out.append(c)
    return out


def write_inat(root: Path, taxa=TAXA, per_class: dict[str, int] | None = None) -> Path:
    per_class = per_class or {"train_mini": 2, "val": 1}
    cats = categories(taxa)
    image_id = 0
    for split, n in per_class.items():
        images, annotations = [], []
        for c in cats:
            for j in range(n):
                rel = f"{split}/{c['image_dir_name']}/{image_id:04x}-uuid.jpg"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (12, 9), (c["id"] * 30, j * 60, 5)).save(root / rel, quality=95)
                images.append({"id": image_id, "width": 12, "height": 9, "file_name": rel, "license": 0,
                               "rights_holder": "x", "date": "2017-01-01", "latitude": 0.0, "longitude": 0.0,
                               "location_uncertainty": 10})
                annotations.append({"id": image_id, "image_id": image_id, "category_id": c["id"]})
                image_id += 1
        doc = {"info": {"year": 2021}, "licenses": [], "images": images, "annotations": annotations,
               "categories": cats}
        (root / f"{split}.json").write_text(json.dumps(doc))
    return root


def test_levels_names_and_labels(tmp_path):
    src = write_inat(tmp_path / "inat")
    cfg = convert_source.load_config("inat2021", None, ["inat2021.train_json=train_mini.json",
                                                         "convert.workers=1"])
    out = convert_source.convert("inat2021", src, tmp_path / "ds", cfg, log=lambda s: None).out
    h = hlib.load(out)
    # supercategory nests here (Birds/Insects/Plants: a function of class, phylum a function of it)
    assert h.names == ["species", "genus", "family", "order", "class", "supercategory", "phylum", "kingdom"]
    assert [lv.num_classes for lv in h.levels] == [7, 7, 6, 6, 4, 3, 3, 2]
    sp = h.level("species")
    assert sp.classes[0] == "Parus major" and sp.titles[0] == "Parus major (Great Tit)"
    assert sp.titles[6] == "Ophrys apifera"  # no common name
    for leaf, t in enumerate(TAXA):
        path = {name: (cid, title) for name, cid, title in h.path(leaf)}
        assert path["kingdom"] == (t[0], t[0])
        assert path["class"] == ("/".join(t[:3]), t[2])  # lineage id, bare title
        assert path["genus"] == ("/".join(t[:6]), t[5])
        assert path["supercategory"] == (t[8], t[8])
    for split, n in (("train", 14), ("val", 7)):
        data = read_rows(out / f"{split}.beton", h.names + ["index"])
        doc = json.loads((src / f"{'train_mini' if split == 'train' else 'val'}.json").read_text())
        cat_of = {a["image_id"]: a["category_id"] for a in doc["annotations"]}
        paths = (out / f"{split}_paths.txt").read_text().splitlines()
        assert len(data["index"]) == n == len(paths)
        for row, i in enumerate(data["index"]):
            img = doc["images"][i]
            assert paths[i] == img["file_name"]
            leaf = cat_of[img["id"]]  # category ids are in order, so leaf index == category id
            for lv in h.levels:
                assert data[lv.name][row] == lv.leaf_to_class[leaf]
            assert data["image"][row].shape == (9, 12, 3)
            assert abs(int(data["image"][row][4, 6, 0]) - leaf * 30) <= 8  # jpg: close to the source colour


def test_supercategory_that_does_not_nest_is_left_out_with_a_note(tmp_path):
    # as in the real data: a catch-all 'Animalia' supercategory spanning two phyla
    taxa = [t if t[5] != "Anas" and t[5] != "Coccinella" else (*t[:8], "Animalia") for t in TAXA]
    src = write_inat(tmp_path / "inat", taxa, {"train": 1, "val": 1})
    cat = inat2021.scan(src, inat2021.Options())
    assert cat.hierarchy.names == ["species", "genus", "family", "order", "class", "phylum", "kingdom"]
    assert "does not nest" in cat.notes[0]


def test_unannotated_images_are_rejects_and_bad_json_refused(tmp_path):
    src = write_inat(tmp_path / "inat", per_class={"train": 1, "val": 1})
    doc = json.loads((src / "train.json").read_text())
    doc["annotations"] = doc["annotations"][1:]  # image 0 loses its label
    (src / "train.json").write_text(json.dumps(doc))
    cat = inat2021.scan(src, inat2021.Options())
    assert cat.splits["train"].early_rejects == {0: "no annotation"}
    doc["categories"][0].pop("genus")
    (src / "train.json").write_text(json.dumps(doc))
    with pytest.raises(inat2021.SourceError, match=r"category 0 lacks \['genus'\]"):
        inat2021.scan(src, inat2021.Options())
