"""Run folders keep their names across refactorings: the default sweep as it was then
(tests/golden/plan_names_sweep.yaml, a copy of launch/sweeps/default.yaml before the demo grew; and every arm
switched on) planned against a dataset at a fixed path must give exactly the folder names recorded before the house
redesign (tests/golden/plan_names.json). A changed name would make every existing sweep rerun all its runs.

Regenerate the file only for a deliberate change of the naming: `python -m tests.test_plan_names --write`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden" / "plan_names.json"
SWEEP = Path(__file__).parent / "golden" / "plan_names_sweep.yaml"  # frozen: the packaged default may change
# run hashes cover the resolved config, whose data.path is absolute: the dataset must sit at one fixed path
DATA = Path("/tmp/grainsweep-plan-names/tiny")
ARMS = {
    "default": [],
    "all-arms": ["multilevel.enabled=true", "transfer.modes=[linear, full, select]", "transfer.select.k=4",
                 "scratch.enabled=true", "pretrain_levels=[subclass, class, superclass]"],
}


def plan_names() -> dict[str, list[str]]:
    from launch import sweep_config

    out = {}
    for arm, sets in ARMS.items():
        cfg = sweep_config.load(SWEEP, [f"dataset.path={DATA}", "dataset.synthetic_preset=tiny",
                                       "dataset.synthetic_set=[workers=1]",
                                       "run.data.batch_size=32", *sets])
        out[arm] = [j.name for j in _plan(cfg, DATA.parent / f"sweep-{arm}").jobs]
    return out


def _plan(cfg, sweep_dir):
    from launch import plan as planlib

    if hasattr(planlib, "prepare"):  # after the redesign: data preparation is its own step
        planlib.prepare(cfg)
    return planlib.plan_sweep(cfg, sweep_dir)


def test_default_sweep_keeps_its_folder_names():
    expected = json.loads(GOLDEN.read_text())
    assert {k: sorted(v) for k, v in plan_names().items()} == {k: sorted(v) for k, v in expected.items()}


if __name__ == "__main__" and "--write" in sys.argv:
    GOLDEN.write_text(json.dumps(plan_names(), indent=1) + "\n")
    print(f"wrote {GOLDEN}")
