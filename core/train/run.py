"""One training run from a RunConfig: builds its parts (core/train/parts.py), then drives core.train.engine epoch by
epoch.

The run folder (core/format/run_folder.py) gets config.yaml + provenance.json (git SHA), dataset.json (the
dataset's absolute path and fingerprint), metrics.jsonl (one line per epoch), TensorBoard events under tb/,
checkpoints under checkpoints/, and result.json once the run has finished (its presence is what makes a run
"done" for reruns of a sweep).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from core.data.source import GpuBatches
from core.format import config as cfglib, provenance
from core.format.lock import FolderLock
from core.format.run_folder import RunFolder, dataset_fingerprint
from core.train import checkpoint
from core.train.engine import evaluate, train_epoch
from core.train.parts import Parts, build_parts, resolution_at
from core.train.run_config import RunConfig, RunConfigError, absolute_data_path
from core.train.run_log import RunLog


def _check_resume_config(folder: RunFolder, cfg: RunConfig) -> None:
    if folder.config_file.is_file():
        old = cfglib.to_dict(absolute_data_path(cfglib.parse(RunConfig, cfglib.read_yaml(folder.config_file))))
        new = cfglib.to_dict(cfg)
        if old != new:
            diff = sorted(k for k in _flatten(new) if _flatten(old).get(k) != _flatten(new)[k])
            raise RunConfigError(f"{folder.path} was started with another config (differs in {diff}); resume "
                                 "with the same settings or use a new run folder")


def _record_or_check_dataset(folder: RunFolder, data: str) -> None:
    record = folder.dataset_record()
    if record is None:
        folder.record_dataset(data)
    elif record.get("fingerprint") != dataset_fingerprint(data):
        raise RunConfigError(f"{data} changed since {folder.path} started on it (fingerprint "
                             f"{record.get('fingerprint')} then, {dataset_fingerprint(data)} now); a resumed run "
                             "must see the same data: use a new run folder")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run(cfg: RunConfig, run_dir: str | Path, resume: bool = False, parts: Parts | None = None) -> dict:
    """Trains (or resumes) the run in `run_dir`; returns the final evaluation. Writes result.json at the end.

    One writer per run folder (core.format.lock: a second train/resume of the same folder is refused, naming the
    first). config.yaml records data.path as an absolute path, so the run's dataset is found from any working
    directory (`grainsweep eval RUN`)."""
    with FolderLock(run_dir, what="a training run"):
        return _run(cfg, run_dir, resume, parts)


def _run(cfg: RunConfig, run_dir: str | Path, resume: bool, parts: Parts | None) -> dict:
    folder = RunFolder(run_dir)
    run_dir, ckpt_dir = folder.path, folder.checkpoint_dir
    folder.refuse_unless_resume(resume)
    cfg = absolute_data_path(cfg)
    if resume:
        _check_resume_config(folder, cfg)
    p = parts or build_parts(cfg)
    start_epoch, step = 0, 0
    if resume and folder.checkpoints():
        # the newest readable checkpoint: a damaged newest one (killed mid-copy, full disk) is skipped
        _, state = checkpoint.load_newest(ckpt_dir, model=p.model, optimizer=p.optimizer, what=str(run_dir))
        start_epoch, step = int(state["epoch"]), int(state["step"])
    _record_or_check_dataset(folder, cfg.data.path)  # before anything in the folder is rewritten
    provenance.record(run_dir, cfg, {"level": p.level, "device": str(p.device)})
    log = RunLog(run_dir, start_epoch=start_epoch, purge_step=step if step else None)
    result: dict = {}
    try:
        for epoch in range(start_epoch, cfg.train.epochs):
            res = resolution_at(epoch, cfg.data.resolution, cfg.train.progressive)
            p.train_loader.set_resolution(res)
            p.train_loader.set_epoch(epoch)

            def set_lr(s: int) -> float:
                return p.schedule.apply(p.optimizer, s)

            step, stats = train_epoch(
                forward=p.forward, optimizer=p.optimizer, objective=p.objective,
                batches=GpuBatches(p.train_loader, p.train_augment), set_lr=set_lr, step=step,
                precision=p.precision, desc=f"epoch {epoch + 1}/{cfg.train.epochs} {p.level}")
            record: dict[str, Any] = {"epoch": epoch + 1, "step": step, "resolution": res,
                                      "lr": p.schedule.lr_at(max(step - 1, 0)), "train_loss": stats.loss,
                                      "train_acc1": stats.acc1, "images_per_second": stats.images_per_second,
                                      "data_wait_fraction": stats.wait_fraction,
                                      "epoch_seconds": stats.seconds, "memory_mb": _memory_mb(p.device)}
            last_epoch = epoch + 1 == cfg.train.epochs
            if last_epoch or (epoch + 1) % cfg.train.eval_every == 0:
                p.model.eval()
                ev = evaluate(forward=p.forward, loader=p.val_loader, augment=p.val_augment, hierarchy=p.hierarchy,
                              level=p.level, precision=p.precision, loss_fn=p.loss_fn, objective=p.objective,
                              desc="eval")
                p.model.train()
                record.update({f"val/{k}": v for k, v in ev.items()})
                result = ev
            if not math.isfinite(stats.loss):
                raise FloatingPointError(f"training loss is {stats.loss} at epoch {epoch + 1}; lower optim.lr")
            log.scalars(step, {k: v for k, v in record.items() if k not in ("epoch", "step")})
            log.epoch(record)
            if last_epoch or (epoch + 1) % cfg.train.checkpoint_every == 0:
                checkpoint.save(ckpt_dir / f"epoch{epoch + 1:04d}.pt", model=p.model, optimizer=p.optimizer,
                                step=step, epoch=epoch + 1, extra={"level": p.level})
                _prune(ckpt_dir, cfg.train.keep_checkpoints)
            print(_summary(record, p.level), flush=True)
    finally:
        log.close()
    if not result:  # resumed after the last epoch's checkpoint: evaluate the final weights
        p.model.eval()
        result = evaluate(forward=p.forward, loader=p.val_loader, augment=p.val_augment, hierarchy=p.hierarchy,
                          level=p.level, precision=p.precision, loss_fn=p.loss_fn, objective=p.objective)
    final = {"level": p.level, "epochs": cfg.train.epochs, **result}
    provenance.write_atomic(folder.result_file, json.dumps(final, indent=1) + "\n")
    return final


def _prune(ckpt_dir: Path, keep: int) -> None:
    files = sorted(ckpt_dir.glob("epoch*.pt"))
    for f in files[:-max(keep, 1)]:
        f.unlink(missing_ok=True)


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def _summary(record: dict, level: str) -> str:
    parts = [f"epoch {record['epoch']}", f"loss {record['train_loss']:.3f}",
             f"train acc {record['train_acc1']:.3f}", f"{record['images_per_second']:,.0f} img/s",
             f"data wait {record['data_wait_fraction']:.0%}"]
    for k, v in record.items():
        if k.startswith("val/acc1"):
            parts.append(f"{k[4:]} {v:.3f}")
    return " | ".join(parts)
