"""Derived levels on a real converted dataset: sidecars written, served by the real loader, trained on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from core.format import config as cfglib
from core.format import derived as dlib
from core.format import hierarchy as hlib
from core.train import run as train_run
from core.data.loader import build_loader
from core.train.run_config import RunConfig
from data_tools import derive
from launch.cli import main as cli

WITHIN = "kmeans2_in_superclass_pixels"
DERIVED = ["kmeans4_pixels", WITHIN, "random5_seed0", "per_sample"]


@pytest.fixture(scope="module")
def ds(tiny_dataset, tmp_path_factory) -> Path:
    """A copy of the tiny dataset (the session's copy is shared) with one derived level of each kind."""
    out = tmp_path_factory.mktemp("derived") / "tiny"
    shutil.copytree(tiny_dataset, out)
    assert derive.kmeans(out, 4).written
    assert derive.kmeans(out, 2, within="superclass").written
    assert derive.random_groups(out, 5, seed=0).written
    assert derive.per_sample(out).written
    assert hlib.load(out).derived == tuple(DERIVED)
    return out


def columns(ds: Path, split: str, names: list[str]) -> dict[str, np.ndarray]:
    return derive.read_int_columns(ds / f"{split}.beton", names)


def served(ds: Path, split: str, level: str) -> tuple[np.ndarray, np.ndarray]:
    """(index, labels of `level`) of every row, through core.data.loader.build_loader."""
    loader = build_loader(ds / f"{split}.beton", split="val", batch_size=10, num_workers=1,
                          levels=[level, "subclass"], resolution=16, order="sequential", os_cache=False,
                          distributed=False, drop_last=False, extra_columns=["index"], seed=0, device="cpu")
    index, labels = [], []
    for b in loader:
        assert set(b.labels) == {level, "subclass"} and set(b.extras) == {"index"}
        index.append(b.extras["index"].numpy().copy())  # ffcv reuses its buffers
        labels.append(b.labels[level].numpy().copy())
    return np.concatenate(index), np.concatenate(labels)


@pytest.mark.parametrize("level", DERIVED)
@pytest.mark.parametrize("split", ["train", "val"])
def test_loader_serves_the_sidecar_labels(ds, level, split):
    lut = np.load(ds / "derived" / f"{level}.{split}.npy")
    index, labels = served(ds, split, level)
    assert len(index) == len(columns(ds, split, ["index"])["index"])  # every row
    np.testing.assert_array_equal(labels, lut[index])
    d = dlib.load(ds, level)
    if level == "per_sample" and split == "val":
        assert (labels == -1).all() and d.labelled("val") == 0  # val samples have no class
    else:
        assert labels.min() >= 0 and labels.max() < d.num_classes
    if level == "per_sample" and split == "train":
        assert sorted(labels) == list(range(d.num_classes))  # one class per training sample


def test_loader_without_index_in_extras(ds):
    loader = build_loader(ds / "train.beton", split="train", batch_size=16, num_workers=1, levels=["random5_seed0"],
                          resolution=16, order="random", os_cache=False, distributed=False, drop_last=True,
                          seed=0, device="cpu", scale=(0.35, 1.0))
    batch = next(iter(loader))
    assert batch.extras == {} and batch.labels["random5_seed0"].shape == (16,)


def test_random_groups_are_a_function_of_the_leaf_with_near_equal_sizes(ds):
    d = dlib.load(ds, "random5_seed0")
    leaf_to_group = np.asarray(d.leaf_to_class)
    sizes = np.bincount(leaf_to_group, minlength=5)
    assert sizes.sum() == 12 and sizes.max() - sizes.min() <= 1 and sizes.min() > 0
    for split in ("train", "val"):
        cols = columns(ds, split, ["index", "subclass"])
        lut = dlib.labels(ds, "random5_seed0", split)
        np.testing.assert_array_equal(lut[cols["index"]], leaf_to_group[cols["subclass"]])
    # another seed, another grouping; same seed, same grouping
    other = derive.random_groups(ds, 5, seed=1)
    assert not np.array_equal(np.asarray(dlib.load(ds, other.name).leaf_to_class), leaf_to_group)


def test_kmeans_within_nests_under_the_target_level(ds):
    d = dlib.load(ds, WITHIN)
    assert d.parent_level == "superclass" and d.num_classes == 4  # 2 clusters in each of 2 superclasses
    assert dlib.info(ds, WITHIN) == (4, ["superclass"])
    for split in ("train", "val"):
        cols = columns(ds, split, ["index", "superclass"])
        labels = dlib.labels(ds, WITHIN, split)[cols["index"]]
        np.testing.assert_array_equal(np.asarray(d.parent_of_class)[labels], cols["superclass"])
    h = dlib.eval_hierarchy(ds, WITHIN)
    assert h.names == [WITHIN, "superclass"]
    assert list(h.parent_map(WITHIN, "superclass")) == list(d.parent_of_class)
    # whole-set clusters do not nest: evaluated at themselves only
    assert dlib.eval_hierarchy(ds, "kmeans4_pixels").names == ["kmeans4_pixels"]


def test_kmeans_recovers_well_separated_clusters(ds):
    """Features = a far-apart centre per class + small noise: k-means finds the classes exactly."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 100
    feats = {}
    for split in ("train", "val"):
        cols = columns(ds, split, ["index", "class"])
        feats[split] = (cols["index"][::-1], centres[cols["class"]][::-1] + rng.normal(size=(len(cols["index"]), 16)))
    for within, k in ((None, 4), ("superclass", 2)):
        r = derive.kmeans(ds, k, within=within, features=feats, feature_tag="oracle")
        for split in ("train", "val"):
            cols = columns(ds, split, ["index", "class"])
            labels = dlib.labels(ds, r.name, split)[cols["index"]]
            assert adjusted_rand_score(cols["class"], labels) == 1.0, (within, split)


def test_rerun_is_a_no_op_and_clashes_are_refused(ds):
    sidecar = dlib.sidecar_path(ds, "kmeans4_pixels")
    before = (sidecar.stat().st_mtime_ns, (ds / "hierarchy.json").read_text())
    r = derive.kmeans(ds, 4)
    assert (r.name, r.written, r.num_classes) == ("kmeans4_pixels", False, 4)
    assert (sidecar.stat().st_mtime_ns, (ds / "hierarchy.json").read_text()) == before
    with pytest.raises(dlib.DerivedError, match="already has a derived level"):
        derive.kmeans(ds, 4, seed=1, name="kmeans4_pixels")  # same name, other parameters
    for name in ("class", "hard", "index", "image"):
        with pytest.raises(dlib.DerivedError, match="already a level or column|reserved"):
            derive.random_groups(ds, 3, name=name)
    with pytest.raises(dlib.DerivedError):
        derive.random_groups(ds, 3, name="bad name")
    assert hlib.load(ds).derived[:4] == tuple(DERIVED)


def test_kmeans_with_more_clusters_than_samples_is_refused(ds):
    n = len(columns(ds, "train", ["index"])["index"])
    with pytest.raises(dlib.DerivedError, match=f"k={n + 1} clusters but only {n} training samples"):
        derive.kmeans(ds, n + 1)
    assert f"kmeans{n + 1}_pixels" not in hlib.load(ds).derived


def test_hierarchy_files_without_derived_still_load(tiny_dataset, ds):
    old = json.loads((tiny_dataset / "hierarchy.json").read_text())
    assert "derived" not in old and hlib.Hierarchy.from_dict(old).derived == ()
    assert "derived" not in hlib.Hierarchy.from_dict(old).to_dict()  # old files round-trip unchanged
    new = hlib.load(ds)
    assert hlib.Hierarchy.from_dict(new.to_dict()) == new
    with pytest.raises(hlib.HierarchyError):
        hlib.Hierarchy(levels=new.levels, derived=("class",))


def run_cfg(data: Path, level: str, *sets: str) -> RunConfig:
    return cfglib.load(RunConfig, None, [
        f"data.path={data}", f"data.level={level}", "data.resolution=16", "data.batch_size=32", "data.workers=1",
        "model.name=bmlp", "model.kwargs={depth: 1, width: 32}", "optim.name=adamw", "optim.lr=0.003",
        "train.epochs=1", *sets])


@pytest.mark.parametrize("level", [WITHIN, "per_sample"])
def test_train_run_on_a_derived_level(ds, tmp_path, level):
    result = train_run.run(run_cfg(ds, level), tmp_path / "run")
    assert result["level"] == level and f"acc1/{level}" in result
    if level == WITHIN:
        assert "acc1/superclass" in result and result["n"] == 48  # val.beton, plus the level it nests under
    else:
        assert result["n"] == 96  # per-sample: evaluated on its own training images
    # a run folder's features can feed k-means
    if level == WITHIN:
        assert cli(["derive", "kmeans", str(ds), "--k", "3", "--features", str(tmp_path / "run"),
                    "--name", "kmeans{k}_feat", "--device", "cpu"]) == 0
        d = dlib.load(ds, "kmeans3_feat")
        assert d.num_classes == 3 and d.params["features"].startswith("run-run-")


def test_cli(ds, capsys):
    assert cli(["derive", "random", str(ds), "--groups", "3", "--seed", "7"]) == 0
    assert cli(["derive", "random", str(ds), "--groups", "3", "--seed", "7"]) == 0
    out = capsys.readouterr().out
    assert "random3_seed7: 3 classes written" in out and "no-op" in out
    assert cli(["derive", "kmeans", str(ds), "--k", "2,3", "--within", "class"]) == 0
    assert {"kmeans2_in_class_pixels", "kmeans3_in_class_pixels"} <= set(hlib.load(ds).derived)
    assert cli(["derive", "random", str(ds), "--groups", "3", "--name", "class"]) == 2  # one-line user error
    assert "already a level" in capsys.readouterr().err
