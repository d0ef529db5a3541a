"""The packaged recipes (launch/sweeps/*.yaml but the demo) plan: each one's dry run against small datasets
converted from the real on-disk formats (ImageNet folders with WordNet levels, iNat2021 JSON, CIFAR-100 pickles;
the fixture writers of the source tests), with only what a user changes set on the command line: dataset paths,
batch size and epochs to fit the tiny data. The real SLURM section is checked (submitit's parameter check), the
recipes' models are built, and nothing is written into the sweep folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from timm.data import ImageNetInfo

from core.format import hierarchy as hlib
from data_tools import convert_source
from launch import plan as planlib, sweep_config
from launch.cli import main as cli
from tests.test_sources_cifar100 import write_cifar
from tests.test_sources_imagenet import WNIDS, write_folders
from tests.test_sources_inat2021 import write_inat

# ImageNet-1k classes other than the "21k" fixture's: tabby cat, Egyptian cat, zebra
OTHER_WNIDS = [ImageNetInfo("imagenet-1k").index_to_label_name(i) for i in (281, 285, 340)]
TINY = ["run.data.batch_size=2", "run.data.workers=1", "run.train.epochs=1", "run.optim.warmup_epochs=0.5",
        "transfer.set=[train.epochs=1, optim.warmup_epochs=0.5]", "scratch.set=[train.epochs=1, optim.warmup_epochs=0.5]",
        "seeds=[0]"]


def _convert(kind: str, src: Path, out: Path, *sets: str) -> Path:
    cfg = convert_source.load_config(kind, None, ["convert.workers=1", *sets])
    return convert_source.convert(kind, src, out, cfg, log=lambda s: None).out


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("imagenet")
    big = _convert("imagenet", write_folders(root / "src21k", WNIDS, per_class=3, with_val=True), root / "in21k")
    small = _convert("imagenet", write_folders(root / "src1k", OTHER_WNIDS, per_class=3, with_val=True),
                     root / "in1k")
    return big, small


def dry_run(recipe: str, out: Path, capsys, *sets: str) -> tuple[str, planlib.Plan]:
    args = ["sweep", recipe, "--dry-run", "--out", str(out), *[f"--set={s}" for s in (*TINY, *sets)]]
    assert cli(args) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert not out.exists()
    cfg = sweep_config.load(sweep_config.sweep_file(recipe), [*TINY, *sets])
    return text, planlib.plan_sweep(cfg, out)


def _stages(text: str, plan: planlib.Plan) -> None:
    for stage in (1, 2):
        assert re.search(rf"^stage {stage}: {len(plan.stage(stage))} jobs", text, re.M), text
    assert f"total: {len(plan.jobs)} jobs" in text


@pytest.mark.parametrize("recipe, model", [("imagenet21k-to-1k", "resnet50"),
                                           ("imagenet21k-to-1k-vit", "vit_base_patch16_224")])
def test_imagenet21k_to_1k_plans_with_a_separate_target(imagenet, tmp_path, capsys, recipe, model):
    big, small = imagenet
    text, plan = dry_run(recipe, tmp_path / "sw", capsys, f"dataset.path={big}", f"target_dataset={small}")
    _stages(text, plan)
    h = hlib.load(big)
    assert (plan.target_level, plan.target_classes, plan.shared) == ("wnid", 3, False)
    pre = [j for j in plan.jobs if j.kind == "pretrain"]
    assert [j.level for j in pre] == h.names and all(j.config.model.name == model for j in pre)
    on_target = [j for j in plan.jobs if j.kind in ("transfer", "scratch")]
    assert len(on_target) == len(pre) + 1 and {j.config.data.path for j in on_target} == {str(small)}
    assert "pretraining runs are not read at the target level" in text


def test_inat2021_plans_ranks_and_the_four_control_hierarchies(tmp_path, capsys):
    data = _convert("inat2021", write_inat(tmp_path / "src", per_class={"train": 4, "val": 1}), tmp_path / "inat")
    sets = [f"dataset.path={data}", "hierarchies.kmeans_aligned.k=[2]", "hierarchies.kmeans_misaligned.k=[3]",
            "hierarchies.random.groups=[2, 3]"]  # fit the 7 species, 28 images of the fixture
    text, plan = dry_run("inat2021", tmp_path / "sw", capsys, *sets)
    _stages(text, plan)
    h = hlib.load(data)
    assert plan.target_level == "class" and plan.shared
    pre = [j for j in plan.jobs if j.kind == "pretrain"]
    ranks = h.names[:h.index("class") + 1]
    assert sorted(j.level for j in pre if j.arm == "") == sorted(ranks)
    assert {j.arm for j in pre} == {"", "kmeans_aligned", "kmeans_misaligned", "random", "per_sample"}
    assert all(j.config.model.name == "resnet34" for j in pre)
    assert all(j.level == "class" for j in plan.jobs if j.kind in ("transfer", "scratch"))


def test_cifar100_plans_fine_to_coarse(tmp_path, capsys):
    write_cifar(tmp_path / "src", {"train": 2, "test": 1})
    data = _convert("cifar100", tmp_path / "src", tmp_path / "cifar")
    text, plan = dry_run("cifar100", tmp_path / "sw", capsys, f"dataset.path={data}", "executor.name=local")
    _stages(text, plan)
    assert (plan.target_level, plan.target_classes, plan.shared) == ("coarse", 20, True)
    assert sorted(j.level for j in plan.jobs if j.kind == "pretrain") == ["coarse", "fine"]
    assert sorted(j.mode for j in plan.jobs if j.kind == "transfer") == ["full", "full", "linear", "linear"]


def test_every_recipe_is_tested_and_cites_its_source():
    recipes = {p.stem for p in sweep_config.SWEEPS_DIR.glob("*.yaml")} - {"default"}
    assert recipes == {"imagenet21k-to-1k", "imagenet21k-to-1k-vit", "inat2021", "cifar100"}
    for name in recipes:
        text = (sweep_config.SWEEPS_DIR / f"{name}.yaml").read_text()
        assert "arXiv" in text and "Run: grainsweep sweep " + name in text, name
