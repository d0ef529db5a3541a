"""Re-evaluates a finished run's newest checkpoint on a dataset (its own, or another with the same hierarchy)."""

from __future__ import annotations

import json
from pathlib import Path

from core.train import checkpoint
from core.format import config as cfglib, provenance
from core.train.engine import evaluate
from core.train.run_config import RunConfig
from core.train.run import build_parts
from core.format.run_folder import CHECKPOINT_DIR
from core.train.run_config import RunConfigError


def evaluate_run(run_dir: Path, data: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    cfg_file = run_dir / "config.yaml"
    if not cfg_file.is_file():
        raise RunConfigError(f"{run_dir}: no config.yaml; is this a run folder written by 'grainsweep train'?")
    sets = list(overrides) + ([f"data.path={data}"] if data else [])
    cfg = cfglib.load(RunConfig, cfg_file, sets)
    last = checkpoint.latest(run_dir / CHECKPOINT_DIR) if (run_dir / CHECKPOINT_DIR).is_dir() else None
    if last is None:
        raise RunConfigError(f"{run_dir}: no checkpoint to evaluate")
    p = build_parts(cfg)
    checkpoint.load(last, model=p.model, restore_rng=False, ignore=checkpoint.AUXILIARY_HEADS)
    p.model.eval()
    result = evaluate(forward=p.forward, loader=p.val_loader, augment=p.val_augment, hierarchy=p.hierarchy,
                      level=p.level, precision=p.precision, loss_fn=p.loss_fn, objective=p.objective)
    out = {"checkpoint": last.name, "data": cfg.data.path, "level": p.level, **result}
    name = "eval.json" if data is None else f"eval-{Path(data).resolve().name}.json"
    provenance.write_atomic(run_dir / name, json.dumps(out, indent=1) + "\n")
    return out
