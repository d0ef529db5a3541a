"""Planning as the sweep arms do it: typed job settings (a level named 'on', a dataset path with ' #' run for real),
planning that only reads (prepare converts and builds the model), plan.json with folders relative to the sweep
folder (a moved sweep still works, an old plan.json still loads), the arms' registry, and the report's cells."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.format import config as cfglib, run_folder
from core.train.run_config import RunConfig
from launch import arms, plan as planlib, report, sweep, sweep_config
from launch.arms.select import SelectArmConfig
from tests.test_sweep_local import tiny_sweep

LEVELS = ["on", "null", "no"]  # YAML 1.1 reads each of them unquoted as true / None / false


def odd_sweep(data: Path, *sets: str):
    """The tiny sweep with levels named `on`, `null`, `no`, `data` set typed (it may hold ' #')."""
    cfg = tiny_sweep(Path("unused"), "seeds=[0]", "transfer.modes=[linear, select]", "transfer.select.k=2", *sets)
    return cfglib.with_values(cfg, {"dataset.path": str(data), "pretrain_levels": ["on"], "target_level": "",
                                    "dataset.synthetic_set": ["workers=1", f"synthetic.level_names={LEVELS}"]})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    data = root / "data #1" / "tiny #odd"
    cfg = odd_sweep(data)
    planlib.prepare(cfg)
    plan, records = sweep.run_sweep(cfg, root / "sw", executor="local")
    return cfg, plan, records, root, data


def test_levels_named_like_yaml_words_and_paths_with_hash_plan_and_run(finished):
    cfg, plan, records, _, data = finished
    assert cfg.dataset.path == str(data) and list(plan.classes) == LEVELS
    pre = sorted((j.pretrain_level, j.config.data.level) for j in plan.jobs if j.kind == "pretrain")
    assert pre == [("no", "no"), ("on", "on")]  # the target joins the pretraining levels
    for j in plan.jobs:
        assert isinstance(j.config, RunConfig) and j.config.data.path == str(data.resolve())
        assert isinstance(j.config.data.level, str) and j.config.train.seed == 0
        assert isinstance(j.options, SelectArmConfig) == (j.mode == "select")
    assert sorted(j.name.rsplit("-", 1)[0] for j in plan.jobs) == sorted([
        "pretrain-on-s0", "pretrain-no-s0", "scratch-no-s0", "transfer-on-linear-s0", "transfer-on-select-s0",
        "transfer-no-linear-s0", "transfer-no-select-s0", "cluster-on-s0", "cluster-no-s0"])
    assert set(records[0]["states"].values()) == {"done"}, records
    for j in plan.jobs:  # each run read the dataset and the level it was given (a clustering job: its source's)
        assert run_folder.is_done(j.run_dir), j.name
        if j.kind == "cluster":
            assert json.loads((Path(j.run_dir) / "result.json").read_text())["run"] == j.source
            continue
        saved = cfglib.load(RunConfig, Path(j.run_dir) / "config.yaml")
        assert (saved.data.path, saved.data.level) == (j.config.data.path, j.config.data.level)


def test_plan_json_has_relative_folders_and_loads_typed(finished):
    _, plan, _, root, _ = finished
    text = (root / "sw" / planlib.PLAN_FILE).read_text()
    assert str(root.resolve() / "sw") not in text  # the folders are relative to the sweep folder
    entries = {j["name"]: j for j in json.loads(text)["jobs"]}
    assert all(e["run_dir"] == f"runs/{n}" and "sweep_dir" not in e for n, e in entries.items())
    assert all(e["source"].startswith("runs/pretrain-") for e in entries.values() if e["kind"] == "transfer")
    assert planlib.load_plan(root / "sw").jobs == plan.jobs


def test_moved_sweep_folder_reads_and_reruns_its_own_runs(finished, capsys):
    cfg, plan, _, root, _ = finished
    moved = root / "elsewhere" / "sw"
    shutil.copytree(root / "sw", moved)
    loaded = planlib.load_plan(moved)
    assert [j.name for j in loaded.jobs] == [j.name for j in plan.jobs]
    for j in loaded.jobs:
        assert Path(j.run_dir) == moved.resolve() / "runs" / j.name and run_folder.is_done(j.run_dir)
        assert j.source == ("" if not j.source_name else str(moved.resolve() / "runs" / j.source_name))
    assert report.write_report(moved)["csv"].is_file()
    _, records = sweep.run_sweep(cfg, moved, executor="local")
    assert records == [] and "0 to run" in capsys.readouterr().out


def test_old_plan_json_with_absolute_folders_loads_under_its_new_folder(finished, tmp_path):
    _, plan, _, root, _ = finished
    old = root / "the-old-place"  # plan.json as written before: absolute folders of where it was planned
    d = plan.to_dict()
    for j in d["jobs"]:
        j["sweep_dir"] = str(old)
        j["run_dir"] = str(old / "runs" / j["name"])
        j["source"] = str(old / j["source"]) if j["source"] else ""
    (tmp_path / planlib.PLAN_FILE).write_text(json.dumps(d))
    loaded = planlib.load_plan(tmp_path)
    assert [(j.name, j.source_name, j.options, j.config) for j in loaded.jobs] == [
        (j.name, j.source_name, j.options, j.config) for j in plan.jobs]
    assert all(j.run_dir == str(tmp_path.resolve() / "runs" / j.name) for j in loaded.jobs)


def test_planning_only_reads(finished, tmp_path):
    cfg, plan, _, root, data = finished
    # not prepared yet: planning says so and converts nothing
    fresh = odd_sweep(tmp_path / "not #converted")
    with pytest.raises(cfglib.ConfigError, match="dataset.path"):
        planlib.plan_sweep(fresh, tmp_path / "sw")
    assert not (tmp_path / "not #converted").exists() and not (tmp_path / "sw").exists()
    # prepared: planning builds no model (no torch) and writes nothing; the same plan every time
    code = ("import sys, json; from core.format import config as cfglib; from launch import plan, sweep_config; "
            "cfg = cfglib.parse(sweep_config.SweepConfig, json.loads(sys.argv[1])); "
            "p = plan.plan_sweep(cfg, sys.argv[2]); "
            "print(json.dumps([[j.name for j in p.jobs], sorted(m for m in ('torch', 'timm', 'ffcv') "
            "if m in sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(cfglib.to_dict(cfg)), str(tmp_path / "new")],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent).stdout
    names, imported = json.loads(out.strip().splitlines()[-1])
    assert imported == [] and not (tmp_path / "new").exists()
    assert names == [j.name for j in plan.jobs]


def test_user_overrides_are_checked_once_naming_their_list(finished):
    cfg, _, _, _, _ = finished
    for key, item, culprit in (("transfer.set", "optim.nme=sgd", "optim.nme"),
                               ("scratch.set", "train.epochz=1", "train.epochz"),
                               ("transfer.set", "model.kwargs.depth=3", "model.kwargs.depth"),
                               ("scratch.set", "data.level=on", "data.level"),
                               ("transfer.set", "train.epochs", "train.epochs")):
        with pytest.raises(cfglib.ConfigError, match=key) as e:
            planlib.plan_sweep(cfglib.with_values(cfg, {key: [item]}), "unused")
        assert culprit in str(e.value)


def test_registry_owns_every_mode_and_job():
    from core.train.run_config import TRANSFER_MODES

    assert arms.transfer_modes() == (*TRANSFER_MODES, "probe", "select")
    assert [a.name for a in arms.ARMS] == ["levels", "multilevel", "hierarchies", "scratch", "transfer", "probe",
                                           "select", "clustering"]
    assert len({a.name for a in arms.ARMS}) == len(arms.ARMS)
    for a in arms.ARMS:
        assert a.stage in (1, 2) and a.table in ("target", "pretrained", "clustering"), a.name
        for mode in a.modes or ("",):
            assert arms.runner(a.kind, mode, a.tag) is a
    assert arms.origin("transfer", "multilevel").setting("subclass", "superclass").startswith("multi-level")
    assert arms.origin("scratch", "").plot == "band" and arms.origin("cluster", "").name == "levels"
    with pytest.raises(cfglib.ConfigError, match=r"transfer.modes\[1\]='probing'"):
        cfglib.load(sweep_config.SweepConfig, None, ["transfer.modes=[full, probing]"])


def test_status_mode_label_from_the_arm(finished):
    _, plan, _, _, _ = finished
    assert {arms.mode_label(j) for j in plan.jobs if j.kind == "cluster"} == {"k-means"}
    assert {arms.mode_label(j) for j in plan.jobs if j.kind == "transfer"} == {"linear", "select"}


def test_report_cells_with_one_seed_show_no_spread(finished):
    _, _, _, root, _ = finished
    md = report.write_report(root / "sw")["md"].read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "level" not in line]  # not headers
    assert rows and all("±" not in line for line in rows), md
    assert report._fmt(0.5, 0.0, 1) == "50.0" and report._fmt(0.5, 0.01, 2) == "50.0 ± 1.0"
    assert report._fmt(None, None, 0) == "n/a"


def test_select_arm_defaults_are_cores():
    from core.methods.select_transfer import SelectConfig

    ours, core = SelectArmConfig(), SelectConfig()
    assert (ours.lam, ours.batch_size) == (core.lam, core.batch_size)


class Toy(arms.Arm):
    """A new arm, as a module would hold it: one job per pretraining run, its result written by its own run."""

    name, stage, kind, table = "toy", 2, "toy", "target"

    def plan(self, ctx, sources):
        return [ctx.follow(self, src, src.config, ctx.target) for src in sources]

    def run(self, spec, run_dir, resume):
        result = {f"acc1/{spec.level}": 0.25, "source": spec.source}
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "result.json").write_text(json.dumps(result))
        return result


def test_a_new_arm_is_one_class_and_one_registry_entry(finished, monkeypatch):
    from launch.jobs import RunJob

    cfg, plan, _, root, _ = finished
    monkeypatch.setattr(arms, "ARMS", (*arms.ARMS, Toy()))  # the one registry line
    new = planlib.plan_sweep(cfg, root / "sw")
    toys = [j for j in new.jobs if j.kind == "toy"]
    assert sorted(j.name.rsplit("-", 1)[0] for j in toys) == ["toy-no-s0", "toy-on-s0"]
    assert [j for j in new.jobs if j.kind != "toy"] == plan.jobs  # the other runs keep their folders
    for j in toys:
        assert j.stage == 2 and RunJob()(j)["source"] == j.source
    new.save()
    rows, missing = report.collect(planlib.load_plan(root / "sw"))
    assert not missing and sorted(r["pretrain_level"] for r in rows if r["kind"] == "toy") == ["no", "on"]
    plan.save()  # the sweep folder as the other tests expect it
