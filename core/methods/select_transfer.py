"""Fine-tuning with selected pretraining data (Liu et al., NeurIPS 2022): `grainsweep finetune ... --select-k K`.

1. Selection (`compute_selection`). The source run's network (newest checkpoint, eval mode) gives pooled features
   (core.methods.features) of the pretraining set (the source's data.path/train.beton at the source's level) and of the
   target set (the transfer's data.path/train.beton at the target level), centre crops at the source's val
   resolution, one pass when both are the same beton. Class means -> core.methods.selection: the K pretraining classes
   that send the most mass to the target classes. Marginals: 1 per class with samples (Liu et al.), 0 for a class
   without. The record (classes, ids, names, masses, image counts, settings) goes to `selection.json` in the run
   folder; a resumed run reuses it instead of selecting again.
2. Training (`selected_parts`). The transfer model (core.train.transfer.build_transfer_model) gets a second head for the
   K classes (core.methods.select_heads); each step takes a target batch and a batch of the selected classes' images,
   read from the pretraining beton by row (core.data.loader `indices`, no copy; core.methods.select_data), and minimises
   CE_target + lambda * CE_selected. Evaluation, metrics and checkpoints are those of any transfer
   (core.train.run.run, resume included); evaluation sees only the target head.

`SelectConfig` holds the settings (defaults with units); `finetune_selected` is what the CLI and a sweep call
(k = 0 is a plain core.train.transfer.finetune). The run's config.yaml is the transfer's RunConfig: a sweep must name
its run folders by SelectConfig too (selection.json records it, and a resume with other settings is refused).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.format.beton_file import column_values, rows_with_labels
from core.methods.select_data import PairedAugment, PairedLoader, selected_augment
from core.device import resolve_device
from core.format import config as cfglib, provenance
from core.format.run_folder import RunFolder
from core.methods.features import Features, class_means, extract_beton, loaded_run
from core.methods.selection import COST_SCALE, REG, REG_M_SOURCE, REG_M_TARGET, select_classes
from core.methods.select_heads import SelectedObjective, TwoHeadModel
from core.train import transfer
from core.train.parts import Parts, build_parts, build_run_loader, check_data
from core.train.run_config import RunConfig, RunConfigError

SELECTION_FILE = "selection.json"


@dataclass(frozen=True)
class SelectConfig:
    k: int = 0  # pretraining classes whose images are added (Liu et al.: 100); 0 = off, a plain transfer
    lam: float = 0.3  # weight of the selected-data loss (Liu et al., supervised pretraining: 0.3)
    batch_size: int = 0  # selected images per step; 0 = data.batch_size (one per target image)
    cost_scale: float = COST_SCALE  # cost = (1 - cosine) / cost_scale
    reg: float = REG  # entropic regularisation of the transport
    reg_m_source: float = REG_M_SOURCE  # KL weight of the pretraining marginal (relaxed)
    reg_m_target: float = REG_M_TARGET  # KL weight of the target marginal (near-hard)
    feature_images_per_class: int = 0  # images per class for the class means (first rows); 0 = all

    def __post_init__(self) -> None:
        if self.k < 0 or self.batch_size < 0 or self.feature_images_per_class < 0:
            raise cfglib.ConfigError(f"select: k, batch_size and feature_images_per_class must be >= 0 ({self})")
        if self.lam < 0 or min(self.cost_scale, self.reg, self.reg_m_source, self.reg_m_target) <= 0:
            raise cfglib.ConfigError(f"select: lam must be >= 0 and cost_scale, reg, reg_m_* > 0 ({self})")


def first_rows_per_class(labels: np.ndarray, m: int) -> np.ndarray:
    """The first `m` rows (ascending) of every class in `labels`; rows labelled < 0 (no class) are left out."""
    order = np.argsort(labels, kind="stable")
    ranked = labels[order]
    rank = np.arange(len(labels)) - np.searchsorted(ranked, ranked, side="left")
    return np.sort(order[(rank < m) & (ranked >= 0)])


def _means(f: Features, level: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    y = f.labels[level]
    keep = y >= 0  # a derived level's -1 = no class
    return class_means(f.features[keep], y[keep], num_classes)


def compute_selection(source: str | Path, cfg: RunConfig, select: SelectConfig) -> dict:
    """Selects `select.k` pretraining classes for the transfer `cfg` from `source`; returns selection.json's record."""
    source = Path(source).resolve()
    src_cfg = transfer.source_config(source)
    src_h, src_level = check_data(src_cfg)
    h, level = check_data(cfg)
    n_src, n_tgt = src_h.level(src_level).num_classes, h.level(level).num_classes
    device = resolve_device(cfg.train.device)
    src_beton = Path(src_cfg.data.path).resolve() / "train.beton"
    tgt_beton = Path(cfg.data.path).resolve() / "train.beton"

    # features: one sequential pass per beton over centre crops, at the resolution the source evaluates at, with
    # the transfer's precision, workers and batch size
    model, _, loaded = loaded_run(source, device)
    cap = select.feature_images_per_class
    resolution = src_cfg.data.val_resolution or src_cfg.data.resolution

    def features(beton: Path, levels: list[str]) -> Features:
        rows = None
        if cap:
            rows = np.unique(np.concatenate([first_rows_per_class(column_values(beton, lv), cap) for lv in levels]))
        return extract_beton(model, cfg, beton, levels, device, seed=cfg.train.seed, indices=rows,
                             resolution=resolution, desc=f"features {beton.parent.name}")

    if src_beton == tgt_beton:
        f_src = f_tgt = features(src_beton, list(dict.fromkeys([src_level, level])))
    else:
        f_src, f_tgt = features(src_beton, [src_level]), features(tgt_beton, [level])
    del model
    src_means, src_counts = _means(f_src, src_level, n_src)
    tgt_means, tgt_counts = _means(f_tgt, level, n_tgt)

    # transport
    if select.k > int(np.count_nonzero(src_counts)):
        raise RunConfigError(f"--select-k {select.k}: the source level {src_level!r} has only "
                             f"{np.count_nonzero(src_counts)} classes with training images")
    sel = select_classes(src_means, tgt_means, select.k, source_weights=(src_counts > 0).astype(np.float64),
                         target_weights=(tgt_counts > 0).astype(np.float64), cost_scale=select.cost_scale,
                         reg=select.reg, reg_m=(select.reg_m_source, select.reg_m_target))
    lv = src_h.level(src_level)
    per_class = np.bincount(np.clip(column_values(src_beton, src_level), -1, None) + 1, minlength=n_src + 1)[1:]
    return {"source": str(source), "source_checkpoint": loaded.name,
            "source_beton": str(src_beton), "source_level": src_level, "source_classes": n_src,
            "target_beton": str(tgt_beton), "target_level": level, "k": select.k, "lambda": select.lam,
            "config": asdict(select), "classes": sel.classes.tolist(),
            "ids": [lv.classes[i] for i in sel.classes], "names": [lv.titles[i] for i in sel.classes],
            "mass": sel.mass.tolist(), "images_per_class": [int(per_class[i]) for i in sel.classes],
            "images": int(per_class[sel.classes].sum()),
            "feature_images": {"source": len(f_src), "target": len(f_tgt)},
            "total_mass": float(sel.plan.sum())}


def selected_rows(record: dict) -> np.ndarray:
    """The pretraining beton's rows (ascending) of the selected classes, found from its label column."""
    rows = rows_with_labels(record["source_beton"], record["source_level"], record["classes"])
    if len(rows) != record["images"]:
        raise RunConfigError(f"{record['source_beton']} has {len(rows)} images of the selected classes, "
                             f"selection.json says {record['images']}: the pretraining data changed")
    return rows


def selected_parts(cfg: RunConfig, model: nn.Module, record: dict, select: SelectConfig) -> Parts:
    """The run's parts (core.train.parts.build_parts) with a second head, its objective and paired batches."""
    h, level = check_data(cfg)
    k = len(record["classes"])
    n_selected = select.batch_size or cfg.data.batch_size
    objective = SelectedObjective(level, h.level(level).num_classes, k, cfg.data.batch_size, select.lam,
                                  cfg.optim.label_smoothing)
    parts = build_parts(cfg, model=TwoHeadModel(model, k, seed=cfg.train.seed), objective=objective)
    # through the run's loader choice: with data.resident the selected rows are held on the device too
    selected = build_run_loader(cfg, Path(record["source_beton"]), split="train", batch_size=n_selected,
                                levels=[record["source_level"]], resolution=parts.train_loader.resolution,
                                order=cfg.data.order, drop_last=True, seed=cfg.train.seed, device=parts.device,
                                scale=cfg.data.scale, indices=selected_rows(record))
    if len(selected) == 0:
        raise RunConfigError(f"select batch size {n_selected} is larger than the {record['images']} selected "
                             "images; lower it (--select-batch-size) or select more classes")
    class_map = torch.full((record["source_classes"],), -1, dtype=torch.int64)
    class_map[torch.as_tensor(record["classes"])] = torch.arange(k)
    parts.train_loader = PairedLoader(parts.train_loader, selected, record["source_level"],
                                      class_map.to(parts.device))
    parts.train_augment = PairedAugment(parts.train_augment, selected_augment(parts.train_augment, k), level)
    return parts


def finetune_selected(source: str | Path, cfg: RunConfig, out: str | Path, select: SelectConfig,
                      mode: transfer.Mode = "full", resume: bool = False) -> dict:
    """core.train.transfer.finetune plus the selected pretraining data of `select` (none when select.k == 0)."""
    source, folder = Path(source).resolve(), RunFolder(out)
    out = folder.path
    marker = out / SELECTION_FILE
    if select.k == 0:
        if marker.is_file():
            raise RunConfigError(f"{out} was started with selected pretraining data ({SELECTION_FILE}); resume it "
                                 "with the same --select-k, or use a new --out")
        return transfer.finetune(source, cfg, out, mode=mode, resume=resume)
    if mode != "full":
        raise RunConfigError("--select-k needs --mode full: with a frozen backbone the selected data's head cannot "
                             "change the target head")
    folder.refuse_unless_resume(resume)
    if marker.is_file():
        record = json.loads(marker.read_text())
        if (record.get("source"), record.get("config")) != (str(source), asdict(select)):
            raise RunConfigError(f"{out} was started from {record.get('source')} with selection settings "
                                 f"{record.get('config')}; resume it with the same --from and --select-* options")
    elif folder.transfer_file.is_file():
        raise RunConfigError(f"{out} was started without --select-k; resume it without, or use a new --out")
    else:
        record = compute_selection(source, cfg, select)
        out.mkdir(parents=True, exist_ok=True)
        provenance.write_atomic(marker, json.dumps(record, indent=1) + "\n")
    print(f"selected {record['k']} {record['source_level']} classes ({record['images']} images): "
          + ", ".join(record["names"][:10]) + (", ..." if record["k"] > 10 else ""), flush=True)
    # transfer.finetune writes transfer.json and trains; the folder already holds selection.json, so it is told
    # to resume (it starts at epoch 0 when there is no checkpoint yet)
    return transfer.finetune(source, cfg, out, mode=mode, resume=True,
                             make_parts=lambda c, m: selected_parts(c, m, record, select))


__all__ = ["SELECTION_FILE", "SelectConfig", "compute_selection", "finetune_selected", "first_rows_per_class",
           "selected_parts", "selected_rows"]
