"""`grainsweep convert synthetic`: real betons read back through ffcv's Loader."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.format import hierarchy as hlib
from data_tools import convert_synthetic, synthetic
from data_tools.publish import DatasetExistsError
from launch.cli import main as cli

REPO = Path(__file__).resolve().parent.parent


def read_beton(path: Path, columns: list[str]) -> dict[str, np.ndarray]:
    """Every sample of a beton in file order, through ffcv's own Loader (sequential, CPU decode)."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.reader import Reader

    # ffcv decodes every field that has no pipeline (None disables one) and yields them in file order
    names = [f for f in Reader(str(path)).field_names if f == "image" or f in columns]
    pipelines = {f: None for f in Reader(str(path)).field_names}
    pipelines.update({c: [IntDecoder()] for c in columns})  # each column its own operation objects
    pipelines["image"] = [SimpleRGBImageDecoder()]
    loader = Loader(str(path), batch_size=64, num_workers=1, order=OrderOption.SEQUENTIAL, drop_last=False,
                    pipelines=pipelines)
    out: dict[str, list] = {c: [] for c in names}
    for batch in loader:
        for name, arr in zip(names, batch):
            out[name].append(np.asarray(arr).copy())
    return {k: np.concatenate(v) for k, v in out.items()}


def test_round_trip_labels_and_raw_pixels(tiny_dataset):
    h = hlib.load(tiny_dataset)
    cfg = convert_synthetic.load_config("tiny", None, [])
    hier, splits = synthetic.build(cfg.synthetic)
    assert hier == h
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    for name, split in splits.items():
        data = read_beton(tiny_dataset / f"{name}.beton", [*h.names, "index", "hard"])
        n = len(split)
        assert manifest["splits"][name] == n
        assert sorted(data["index"][:, 0].tolist()) == list(range(n))  # every source row exactly once
        for row in range(n):
            i = int(data["index"][row, 0])
            image, leaf, extras = split[i]
            assert data[h.names[0]][row, 0] == leaf
            for lv in h.levels:  # every level column agrees with the hierarchy
                assert data[lv.name][row, 0] == lv.leaf_to_class[leaf], (name, i, lv.name)
            assert data["hard"][row, 0] == extras["hard"]
            np.testing.assert_array_equal(data["image"][row], image)  # raw mode is lossless


def test_hard_column_marks_hard_samples(tiny_dataset):
    data = read_beton(tiny_dataset / "val.beton", ["hard"])
    assert 0 < data["hard"].sum() < len(data["hard"])  # tiny preset: half of val is hard


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    outs = []
    for k, seed in enumerate([5, 5, 6]):
        cfg = convert_synthetic.load_config("tiny", None, [f"synthetic.seed={seed}", "workers=2"])
        out, built = convert_synthetic.convert(tmp_path / f"d{k}", cfg)
        assert built
        outs.append(read_beton(out / "val.beton", ["subclass", "index"]))
    order = [np.argsort(o["index"][:, 0]) for o in outs]
    a, b, c = ({k: v[ix] for k, v in o.items()} for o, ix in zip(outs, order))
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["subclass"], b["subclass"])
    assert not np.array_equal(a["image"], c["image"])


def test_convert_once_then_force(tmp_path, capsys):
    out = tmp_path / "ds"
    args = ["convert", "synthetic", "--out", str(out), "--preset", "tiny", "--set", "workers=1"]
    assert cli(args) == 0
    stamp = (out / "train.beton").stat().st_mtime_ns
    manifest = json.loads((out / "manifest.json").read_text())
    t0 = time.perf_counter()
    assert cli(args) == 0
    assert "up to date" in capsys.readouterr().out
    assert time.perf_counter() - t0 < 5  # nothing is rewritten (generous bound: no conversion happens)
    assert (out / "train.beton").stat().st_mtime_ns == stamp
    # other options are refused without --force, naming the folder
    assert cli([*args, "--set", "synthetic.seed=1"]) == 2
    assert str(out) in capsys.readouterr().err
    assert (out / "train.beton").stat().st_mtime_ns == stamp
    assert cli([*args, "--force"]) == 0
    assert (out / "train.beton").stat().st_mtime_ns != stamp
    again = json.loads((out / "manifest.json").read_text())
    assert again["inputs_hash"] == manifest["inputs_hash"]
    # the output folder records the resolved config and the git SHA
    assert "synthetic:" in (out / "config.yaml").read_text()
    assert "git_sha" in json.loads((out / "provenance.json").read_text())


def test_non_dataset_folder_is_not_overwritten(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    cfg = convert_synthetic.load_config("tiny", None, [])
    with pytest.raises(DatasetExistsError, match="holds no grainsweep dataset"):
        convert_synthetic.convert(out, cfg)
    assert (out / "precious.txt").read_text() == "keep me"


def test_killed_conversion_publishes_nothing(tmp_path):
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "launch.cli", "convert", "synthetic", "--out", str(out),
           "--set", "synthetic.train_per_leaf=400", "--set", "workers=1"]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        partial = None
        while time.time() < deadline:  # wait until the train beton is being written
            partial = next(tmp_path.glob(".ds.partial-*/.train.beton.tmp"), None)
            if partial is not None and partial.stat().st_size > 0:
                break
            assert proc.poll() is None, "conversion ended before it could be interrupted"
            time.sleep(0.05)
        assert partial is not None, "conversion never started writing"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not out.exists()  # nothing under the final name
    # the next conversion cleans up the leftovers and publishes a complete dataset
    cfg = convert_synthetic.load_config("tiny", None, ["workers=1"])
    convert_synthetic.convert(out, cfg)
    assert (out / "train.beton").is_file() and (out / "manifest.json").is_file()
    assert not list(tmp_path.glob(".ds.partial-*"))


def test_cli_errors_are_one_line_naming_the_culprit(tmp_path, capsys):
    out = str(tmp_path / "x")
    assert cli(["convert", "synthetic", "--out", out, "--set", "synthetic.imagesize=3"]) == 2
    assert "synthetic.imagesize" in capsys.readouterr().err
    assert cli(["convert", "synthetic", "--out", out, "--set", "synthetic.image_size=big"]) == 2
    assert "synthetic.image_size" in capsys.readouterr().err
    assert cli(["convert", "synthetic", "--out", out, "--preset", "huge"]) == 2
    assert "tiny" in capsys.readouterr().err  # lists the presets
    assert cli(["tree", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_tree_prints_levels_and_paths(tiny_dataset, capsys):
    assert cli(["tree", str(tiny_dataset)]) == 0
    text = capsys.readouterr().out
    h = hlib.load(tiny_dataset)
    for lv in h.levels:
        assert f"{lv.name}" in text and f"{lv.num_classes} classes" in text
    leaf_path = h.path(0)
    for name, cid, title in leaf_path:
        assert f"{name} {cid}: {title}" in text


def test_jpg_mode_is_close_to_source(tmp_path):
    cfg = convert_synthetic.load_config("tiny", None, ["write.write_mode=jpg", "write.jpeg_quality=95",
                                                       "synthetic.image_size=32"])
    out, _ = convert_synthetic.convert(tmp_path / "jpg", cfg)
    _, splits = synthetic.build(cfg.synthetic)
    data = read_beton(out / "val.beton", ["index"])
    src = np.stack([splits["val"][int(i)][0] for i in data["index"][:, 0]]).astype(np.float64)
    got = data["image"].astype(np.float64)
    # lossy, but each decoded picture is far closer to its own source than to any other source image
    dist = ((got[:, None] - src[None]) ** 2).mean(axis=(2, 3, 4))
    assert (dist.argmin(axis=1) == np.arange(len(src))).all()
    assert data["image"].shape == (len(src), 32, 32, 3)
