"""`grainsweep convert imagenet`: wnid folders, WordNet 3.0 levels, val folder or deterministic hold-out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from timm.data import ImageNetInfo

from core.format import hierarchy as hlib
from data_tools import convert_source, wordnet_tree
from data_tools.sources import imagenet
from launch.cli import main as cli
from tests.test_bad_images import read_rows

# real ImageNet-1k classes from timm's shipped imagenet_synsets.txt: tench, goldfish, and three dogs
WNIDS = [ImageNetInfo("imagenet-1k").index_to_label_name(i) for i in (0, 1, 151, 152, 207)]


def write_folders(root: Path, wnids: list[str], per_class: int, with_val: bool) -> Path:
    for k, w in enumerate(wnids):
        for split, n in (("train", per_class), ("val", 1 if with_val else 0)):
            folder = root / split / w
            for j in range(n):
                folder.mkdir(parents=True, exist_ok=True)
                img = Image.new("RGB", (10, 8), (k * 40, j * 30, 0))
                img.save(folder / f"{w}_{j}.JPEG", "JPEG", quality=95) if j % 2 else img.save(folder / f"{w}_{j}.png")
    return root


def test_levels_follow_wordnet_and_val_folder(tmp_path):
    assert WNIDS[0] == "n01440764" and len(set(WNIDS)) == 5
    src = write_folders(tmp_path / "in", WNIDS, per_class=2, with_val=True)
    cfg = convert_source.load_config("imagenet", None, ["imagenet.levels=[1,3]", "convert.workers=1"])
    out = convert_source.convert("imagenet", src, tmp_path / "ds", cfg, log=lambda s: None).out
    h = hlib.load(out)
    assert h.names == ["wnid", "hop1", "hop3"] and list(h.level("wnid").classes) == sorted(WNIDS)
    t = wordnet_tree.tree()
    for leaf, w in enumerate(h.level("wnid").classes):
        path = t.path(int(w[1:]))  # itself first, up to entity.n.01
        for k in (1, 3):
            lv = h.level(f"hop{k}")
            assert lv.classes[lv.leaf_to_class[leaf]] == wordnet_tree.wnid(path[k]), (w, k)
    assert h.level("wnid").titles[0] == "tench"
    for split, n in (("train", 10), ("val", 5)):
        data = read_rows(out / f"{split}.beton", h.names + ["index"])
        paths = (out / f"{split}_paths.txt").read_text().splitlines()
        assert len(data["index"]) == n
        for row, i in enumerate(data["index"]):
            w = Path(paths[i]).parent.name
            assert paths[i].startswith(f"{split}/") and data["wnid"][row] == h.level("wnid").classes.index(w)
            assert abs(int(np.median(data["image"][row][..., 0])) - WNIDS.index(w) * 40) <= 8


def test_hold_out_without_val_folder_is_first_files_in_sorted_order(tmp_path):
    src = write_folders(tmp_path / "in", WNIDS[:2], per_class=4, with_val=False)
    cat = imagenet.scan(src, imagenet.Options(val_per_class=1))
    val, train = cat.splits["val"].refs, cat.splits["train"].refs
    assert val == [f"train/{w}/{w}_0.png" for w in sorted(WNIDS[:2])]
    assert len(train) == 6 and not set(val) & set(train)
    assert "held out the first 1" in cat.notes[0]
    with pytest.raises(imagenet.SourceError, match="no more than --val-per-class 4"):
        imagenet.scan(src, imagenet.Options(val_per_class=4))


def test_folder_not_in_wordnet_is_refused_listing_them_before_writing(tmp_path, capsys):
    src = write_folders(tmp_path / "in", [*WNIDS[:2], "n99999999", "n00000002"], per_class=1, with_val=False)
    out = tmp_path / "ds"
    assert cli(["convert", "imagenet", str(src), "--out", str(out), "--val-per-class", "0"]) == 2
    err = capsys.readouterr().err
    assert "n99999999" in err and "n00000002" in err and "WordNet 3.0" in err
    assert "checking images" not in err
    assert not out.exists() and not list(tmp_path.glob("ds*")) and not list(tmp_path.glob(".ds*"))
