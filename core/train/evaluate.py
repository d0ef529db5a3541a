"""Re-evaluates a finished run's newest checkpoint on a dataset (its own, or another with the same hierarchy)."""

from __future__ import annotations

import json
from pathlib import Path

from core.format import config as cfglib, provenance
from core.format.run_folder import RunFolder
from core.train import checkpoint
from core.train.distributed import init_from_env
from core.train.engine import evaluate
from core.train.parts import build_parts
from core.train.run_config import RunConfig


def evaluate_run(run_dir: str | Path, data: str | Path | None = None, cfg: RunConfig | None = None) -> dict:
    """Evaluates the run's newest readable checkpoint on `data`'s val split; writes and returns eval.json's record.

    `data`: another dataset folder (written to eval-<folder name>.json); None = the run's own dataset, which must
    still hold what the run trained on (its fingerprint, core.format.run_folder). `cfg`: the run's settings with
    changes (e.g. data.val_batch_size); None = the run's config.yaml. With WORLD_SIZE > 1 each rank scores its share
    of the images and rank 0 writes the record (core/train/distributed.py)."""
    folder = RunFolder(run_dir)
    saved = folder.require_config()
    cfg = cfg if cfg is not None else cfglib.load(RunConfig, saved)
    if data is None:
        folder.check_dataset(cfg.data.path, explicit=False)
    else:
        cfg = cfglib.with_values(cfg, {"data.path": str(data)})
    with init_from_env(cfg.train.device) as world:
        p = build_parts(cfg)
        last = world.on_main(lambda: checkpoint.load_newest(
            folder.checkpoint_dir, model=p.model, restore_rng=False, ignore=checkpoint.AUXILIARY_HEADS,
            what=str(folder.path))[0])
        if not world.is_main:  # the file rank 0 found readable
            checkpoint.load(last, model=p.model, restore_rng=False, ignore=checkpoint.AUXILIARY_HEADS)
        p.model.eval()
        result = evaluate(forward=p.forward, loader=p.val_loader, augment=p.val_augment, hierarchy=p.hierarchy,
                          level=p.level, precision=p.precision, loss_fn=p.loss_fn, objective=p.objective)
        out = {"checkpoint": last.name, "data": cfg.data.path, "level": p.level, **result}
        world.on_main(lambda: provenance.write_atomic(folder.eval_file(data), json.dumps(out, indent=1) + "\n"))
    return out
