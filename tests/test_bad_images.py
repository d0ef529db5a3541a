"""Bad input: odd image modes become RGB and are kept; broken files are rejects; strict mode publishes nothing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_tools import convert_source, images
from launch.cli import main as cli


def read_rows(path: Path, columns: list[str]) -> dict[str, list]:
    """Every row of a beton in file order: int columns through ffcv's Loader, images (any size) from the file.

    ffcv's SimpleRGBImageDecoder needs one image size per beton, so images are read from the raw storage that
    ffcv's Reader points at (raw mode) or decoded with OpenCV (jpg mode), exactly as ffcv's decoders do.
    """
    import cv2
    from ffcv.fields.basics import IntDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.reader import Reader

    reader = Reader(str(path))
    pipelines = {f: None for f in reader.field_names}
    pipelines.update({c: [IntDecoder()] for c in columns})
    loader = Loader(str(path), batch_size=64, num_workers=1, order=OrderOption.SEQUENTIAL, drop_last=False,
                    pipelines=pipelines)
    names = [f for f in reader.field_names if f in columns]
    out: dict[str, list] = {c: [] for c in names}
    for batch in loader:
        for name, arr in zip(names, batch):
            out[name].extend(np.asarray(arr)[:, 0].tolist())
    out["image"] = []
    for meta in reader.metadata[f"f{reader.field_names.index('image')}"]:  # metadata fields are positional
        h, w, ptr = int(meta["height"]), int(meta["width"]), int(meta["data_ptr"])
        if meta["mode"] == 1:  # raw
            out["image"].append(np.fromfile(path, np.uint8, count=h * w * 3, offset=ptr).reshape(h, w, 3))
        else:  # jpg: ffcv allocated exactly the encoded bytes, which OpenCV decodes
            size = int(reader.alloc_table["size"][reader.alloc_table["ptr"] == ptr][0])
            bgr = cv2.imdecode(np.fromfile(path, np.uint8, count=size, offset=ptr), cv2.IMREAD_COLOR)
            out["image"].append(bgr[..., ::-1])
    return out


# each kept file: (how to write it, expected RGB of every pixel after conversion)
def _save(img: Image.Image, path: Path, **kw) -> None:
    img.save(path, **kw)


def _palette(path: Path, transparent: bool) -> None:
    p = Image.new("P", (3, 2), 1)
    p.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
    if transparent:
        p.info["transparency"] = 0
        p.putpixel((0, 0), 0)
    p.save(path)


GOOD = {
    "rgb.jpg": (lambda p: _save(Image.new("RGB", (6, 4), (30, 160, 90)), p, quality=100), (30, 160, 90)),
    "grey_L.png": (lambda p: _save(Image.new("L", (5, 5), 77), p), (77, 77, 77)),
    "bilevel_1.png": (lambda p: _save(Image.new("1", (4, 4), 1), p), (255, 255, 255)),
    "cmyk.tif": (lambda p: _save(Image.new("CMYK", (4, 3), (0, 255, 255, 0)), p), (255, 0, 0)),
    "cmyk.jpg": (lambda p: _save(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), p, quality=100), (255, 255, 255)),
    # alpha is composited on white: a*rgb + (1-a)*255
    "rgba_half.png": (lambda p: _save(Image.new("RGBA", (3, 3), (200, 0, 0, 128)), p), (227, 127, 127)),
    "rgba_clear.png": (lambda p: _save(Image.new("RGBA", (3, 3), (0, 0, 0, 0)), p), (255, 255, 255)),
    "rgba_opaque.png": (lambda p: _save(Image.new("RGBA", (3, 3), (1, 2, 3, 255)), p), (1, 2, 3)),
    "grey_alpha_LA.png": (lambda p: _save(Image.new("LA", (2, 2), (100, 128)), p), (177, 177, 177)),
    # 16-bit grey: round(v / 257)
    "grey16.png": (lambda p: _save(Image.fromarray(np.full((3, 4), 32896, np.uint16)), p), (128, 128, 128)),
    "palette.png": (lambda p: _palette(p, transparent=False), (200, 100, 0)),
    "palette.gif": (lambda p: _save(Image.new("P", (2, 2), 0), p), None),  # GIF's default palette: black
    "tiny_1x1.png": (lambda p: _save(Image.new("RGB", (1, 1), (9, 8, 7)), p), (9, 8, 7)),
    "huge.png": (lambda p: _save(Image.new("RGB", (1200, 800), (40, 50, 60)), p), (40, 50, 60)),
}
MAX_RES = 16  # the huge image becomes 16 x 10


def _truncated_jpeg(p: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _corrupt_png(p: Path) -> None:
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(p)
    data = bytearray(p.read_bytes())
    start = data.index(b"IDAT") + 8
    data[start: start + 40] = bytes(40)  # zeroed compressed data: zlib fails
    p.write_bytes(bytes(data))


BAD = {
    "truncated.jpg": (_truncated_jpeg, "truncated"),
    "corrupt.png": (_corrupt_png, "cannot decode"),
    "empty.jpg": (lambda p: p.write_bytes(b""), "empty file"),
    "notes.jpg": (lambda p: p.write_text("this is not an image\n"), "not an image"),
    "missing.png": (lambda p: None, "missing file"),
}


@pytest.fixture
def odd_source(tmp_path) -> Path:
    """A CSV manifest over every odd-but-good file and every broken one, each its own class under one of two."""
    root = tmp_path / "src"
    (root / "img").mkdir(parents=True)
    rows = []
    for k, (name, (make, _)) in enumerate({**GOOD, **BAD}.items()):
        make(root / "img" / name)
        rows.append((f"img/{name}", f"c{k}", f"g{k % 2}"))
    with open(root / "all.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "leaf", "group"), *rows])
    return root / "all.csv"


def test_each_mode_becomes_rgb_with_expected_pixels(tmp_path):
    for name, (make, rgb) in GOOD.items():
        make(tmp_path / name)
        arr = images.load(tmp_path / name)
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, name
        if rgb is not None:
            assert (arr.reshape(-1, 3) == rgb).all(), (name, arr.reshape(-1, 3)[:2])
    assert images.load(tmp_path / "tiny_1x1.png").shape == (1, 1, 3)
    # palette transparency: the transparent index becomes white, the rest keeps its palette colour
    _palette(tmp_path / "ptrans.png", transparent=True)
    got = images.load(tmp_path / "ptrans.png")
    assert got[0, 0].tolist() == [255, 255, 255] and got[1, 2].tolist() == [200, 100, 0]


def test_each_broken_kind_is_rejected_with_a_reason(tmp_path):
    for name, (make, why) in BAD.items():
        make(tmp_path / name)
        reason = images.reason(tmp_path / name)
        assert reason is not None and why in reason, (name, reason)
        with pytest.raises(images.BadImage):
            images.load(tmp_path / name)
    # the parallel pre-pass gives the same answers in the same order
    paths = [tmp_path / n for n in BAD] + [tmp_path / "missing-too.jpg"]
    reasons, _ = images.check_all(paths, None, workers=2)
    assert [r is not None for r in reasons] == [True] * len(paths)
    assert all(why in r for (_, why), r in zip(BAD.values(), reasons))


def test_strict_mode_publishes_nothing_and_lists_the_rejects(odd_source, tmp_path, capsys):
    out = tmp_path / "ds"
    assert cli(["convert", "csv", str(odd_source), "--out", str(out), "--workers", "2",
                "--set", f"write.max_resolution={MAX_RES}"]) == 2
    err = capsys.readouterr().err
    assert f"{len(BAD)} of {len(GOOD) + len(BAD)} rows rejected" in err and "img/truncated.jpg" in err
    assert not out.exists() and not list(tmp_path.glob(".ds.partial-*"))
    beside = tmp_path / "ds.rejects.csv"
    listed = list(csv.DictReader(beside.open()))
    assert sorted(r["path"] for r in listed) == sorted(f"img/{n}" for n in BAD)
    # one short of enough is still refused
    cfg = convert_source.load_config("csv", None, [f"convert.max_rejects={len(BAD) - 1}"])
    with pytest.raises(convert_source.RejectsError, match="nothing was written"):
        convert_source.convert("csv", odd_source, out, cfg)
    assert not out.exists()


def test_max_rejects_lets_it_through_and_every_row_is_accounted_for(odd_source, tmp_path):
    out = tmp_path / "ds"
    cfg = convert_source.load_config("csv", None, [f"convert.max_rejects={len(BAD)}", "write.write_mode=raw",
                                                   f"write.max_resolution={MAX_RES}", "convert.workers=2"])
    result = convert_source.convert("csv", odd_source, out, cfg)
    assert result.built and result.rejects == len(BAD)
    assert not (tmp_path / "ds.rejects.csv").exists()
    rejects = list(csv.DictReader((out / "rejects.csv").open()))
    assert [r["path"] for r in rejects] == [f"img/{n}" for n in BAD]  # exactly the bad rows, in source order
    for r in rejects:
        assert r["split"] == "train" and BAD[Path(r["path"]).name][1] in r["reason"]

    data = read_rows(out / "train.beton", ["leaf", "group", "index"])
    paths = (out / "train_paths.txt").read_text().splitlines()
    assert len(data["index"]) + len(rejects) == len(GOOD) + len(BAD)  # beton rows + rejects == source rows
    names = list({**GOOD, **BAD})
    assert len(paths) == len(names)  # one line per source row
    # `index` is the position in the source: the rejected rows' positions are the gaps
    assert sorted(data["index"]) == sorted(k for k, n in enumerate(names) if n in GOOD)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"] == {"train": len(GOOD)} and manifest["rejects"] == len(BAD)
    for row, i in enumerate(data["index"]):
        name = Path(paths[i]).name
        k = names.index(name)
        assert k == i
        assert data["leaf"][row] == k and data["group"][row] == k % 2  # classes in first-appearance order
        image, rgb = data["image"][row], GOOD[name][1]
        if rgb is not None:
            assert (image.reshape(-1, 3) == rgb).all(), name
        if name == "huge.png":
            assert image.shape == (10, 16, 3)  # longest side = max_resolution
        if name == "tiny_1x1.png":
            assert image.shape == (1, 1, 3)
