"""Transfer mode 'probe': the standard linear evaluation of a frozen pretrained network.

The source run's network (config.yaml + newest readable checkpoint, core.methods.features.loaded_run) embeds every
image of the target dataset's train and val betons once (pooled `forward_features`, centre crops at the run's
validation resolution, no flip or other augmentation); the features are cached in the run folder
(`probe_features.npz`, written atomically, keyed by the source checkpoint and the dataset), so a rerun reuses them.
On them, a multinomial L2-regularised logistic regression (scikit-learn `LogisticRegression`, lbfgs, on
standardised features) is solved to convergence. Its inverse regularisation C is chosen from `ProbeConfig.cs` by
accuracy on a held-out, class-stratified part of the TRAIN split (seeded by train.seed); the val split never
chooses anything. The chosen C is refit on the whole train split and scored on val with
core.train.metrics.LevelAccuracy (the probe's log-probabilities as logits), so result.json has the fields every
transfer has (acc1/<level> at the target and coarser levels, acc1_hard/..., loss, n, n_hard) plus `probe`: the
C grid, each C's held-out accuracy, the chosen C, lbfgs iterations.

Why not the SGD head of mode 'linear': a few epochs of SGD on coarse labels under-fit (issue 16: the 5-epoch probe
of the demo gave fine- and coarse-pretrained networks the same hard-sample accuracy, while a converged probe on
the same features kept the fine networks' lead); the convex problem solved to convergence, with C chosen on
training data, is what linear-evaluation papers report.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.format import provenance
from core.format.beton_file import beton_columns, open_beton
from core.format.lock import FolderLock
from core.format.run_folder import RunFolder, dataset_fingerprint
from core.train.run_config import RunConfig, RunConfigError

PROBE_MODE = "probe"
FEATURES_FILE = "probe_features.npz"


@dataclass(frozen=True)
class ProbeConfig:
    cs: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # inverse L2 strengths tried (sklearn's C; the penalty
    # is 1/(2C) |W|^2 against the summed, not mean, log-loss); ties go to the smallest C (most regularised)
    holdout: float = 0.2  # fraction of the train split held out (stratified by target class) to choose C
    max_iter: int = 5000  # lbfgs iterations cap; not reaching `tol` before it is reported in result.json
    tol: float = 1e-6  # lbfgs stopping tolerance on the projected gradient (sklearn's default 1e-4 stops early)

    def __post_init__(self) -> None:
        if not self.cs or any(not (c > 0 and np.isfinite(c)) for c in self.cs):
            raise RunConfigError(f"probe cs={list(self.cs)}: give one or more finite C > 0")
        if not 0 < self.holdout < 1:
            raise RunConfigError(f"probe holdout={self.holdout} must be in (0, 1)")


def probe(source: str | Path, cfg: RunConfig, out_dir: str | Path, resume: bool = False,
          probe_cfg: ProbeConfig = ProbeConfig()) -> dict:
    """The converged linear probe of `source`'s frozen features on cfg.data.level of cfg.data.path (see the module
    docstring), in the run folder `out_dir`; returns (and writes) result.json's record. `resume` continues a
    folder an earlier start wrote (its cached features are reused)."""
    with FolderLock(out_dir, what="a linear probe"):
        return _probe(Path(source).resolve(), cfg, RunFolder(out_dir), resume, probe_cfg)


def _probe(source: Path, cfg: RunConfig, folder: RunFolder, resume: bool, pc: ProbeConfig) -> dict:
    import torch

    from core.device import resolve_device
    from core.methods.features import loaded_run
    from core.train.metrics import LevelAccuracy
    from core.train.parts import check_data
    from core.train.run_config import absolute_data_path
    from core.train.transfer import source_config

    folder.refuse_unless_resume(resume)
    cfg = absolute_data_path(cfg)
    h, level = check_data(cfg)
    src_cfg = source_config(source)
    record = {"source": str(source), "mode": PROBE_MODE, "source_level": check_data(src_cfg)[1],
              "target_level": level}
    old = folder.transfer_record()
    if old is not None and (old.get("source"), old.get("mode")) != (str(source), PROBE_MODE):
        raise RunConfigError(f"{folder.path} was started from {old.get('source')} ({old.get('mode')}); use a new "
                             "--out for a probe of another run")
    dev = resolve_device(cfg.train.device)
    model, src_cfg, last = loaded_run(source, dev)
    record["source_checkpoint"] = last.name
    folder.path.mkdir(parents=True, exist_ok=True)
    provenance.write_atomic(folder.transfer_file, json.dumps(record, indent=1) + "\n")
    folder.record_dataset(cfg.data.path)
    provenance.record(folder.path, cfg, {"level": level, "device": str(dev), "probe": asdict(pc)})

    # features: once per run folder (the network is frozen, so they never change for this checkpoint and data)
    acc = LevelAccuracy(h, level)
    feats = _cached_features(folder, model, src_cfg, cfg, last, list(acc.levels), dev)
    x_tr, y_tr = feats["train_x"], feats["train_y"]
    x_va = feats["val_x"]
    # C on a held-out part of train only, then the refit on all of train scored on val
    best_c, scores = choose_c(x_tr, y_tr, pc, cfg.train.seed)
    clf = fit(x_tr, y_tr, best_c, pc)
    labels = {lv: torch.as_tensor(feats[f"val_{lv}"]) for lv in acc.levels}
    hard = torch.as_tensor(feats["val_hard"]).bool() if "val_hard" in feats else None
    acc.update(torch.as_tensor(target_logits(clf, x_va, h.level(level).num_classes)), labels, hard=hard)
    n_iter = int(np.max(clf[-1].n_iter_))
    result = {"level": level, "epochs": 0, **acc.compute(),
              "probe": {"c": best_c, "holdout_acc1": {str(c): s for c, s in scores.items()},
                        "holdout": pc.holdout, "train_samples": int(len(y_tr)), "feature_dim": int(x_tr.shape[1]),
                        "lbfgs_iterations": n_iter, "converged": n_iter < pc.max_iter,
                        "train_acc1": float((clf.predict(x_tr) == y_tr).mean())}}
    provenance.write_atomic(folder.result_file, json.dumps(result, indent=1) + "\n")
    return result


def choose_c(x: np.ndarray, y: np.ndarray, pc: ProbeConfig, seed: int) -> tuple[float, dict[float, float]]:
    """(the C of pc.cs with the best accuracy on the held-out part of the training data (x, y), {C: that
    accuracy}); fit on the rest. Ties go to the smallest C. Nothing but training data goes in."""
    fit_rows, held_rows = _holdout_split(y, pc.holdout, seed)
    scores = {}
    for c in tqdm(pc.cs, desc="probe C", unit="fit", leave=False, dynamic_ncols=True):
        clf = fit(x[fit_rows], y[fit_rows], c, pc)
        scores[c] = float((clf.predict(x[held_rows]) == y[held_rows]).mean())
    return max(pc.cs, key=lambda c: (scores[c], -c)), scores


def fit(x: np.ndarray, y: np.ndarray, c: float, pc: ProbeConfig):
    """StandardScaler + multinomial L2 LogisticRegression (lbfgs) fit on (x, y): an sklearn Pipeline."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    # multinomial is scikit-learn's only multi-class mode for lbfgs (1.9); float64 so lbfgs can reach tol
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, solver="lbfgs", max_iter=pc.max_iter, tol=pc.tol))
    # one BLAS thread: the problem is small (N x D x classes), and on shared cores OpenBLAS's threads wait on each
    # other at every call (measured on the 2-core machine at load 8: one fit 119 s with its 2 threads, 6 s with 1)
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)  # recorded as result.json's probe.converged instead
        clf.fit(x.astype(np.float64), y)
    return clf


def target_logits(clf, x: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, num_classes) float32 log-probabilities, the logits core.train.metrics.LevelAccuracy takes; a class the
    training data lacked gets -1e4 (never predicted, no NaN in the cross-entropy)."""
    logits = np.full((len(x), num_classes), -1e4, dtype=np.float32)
    logits[:, clf.classes_] = clf.predict_log_proba(x.astype(np.float64))
    return logits


def _holdout_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows to fit, rows held out): `fraction` of each class held out (at least one row of a class with two or
    more), drawn with `seed`."""
    rng = np.random.default_rng(seed)
    fit, held = [], []
    for cls in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == cls))
        k = int(round(fraction * len(rows))) if len(rows) > 1 else 0
        k = min(max(k, 1 if len(rows) > 1 else 0), len(rows) - 1)
        held.append(rows[:k])
        fit.append(rows[k:])
    fit_rows, held_rows = np.sort(np.concatenate(fit)), np.sort(np.concatenate(held))
    if len(held_rows) == 0:
        raise RunConfigError("the train split is too small to hold out any sample for choosing the probe's C")
    return fit_rows, held_rows


def _cached_features(folder: RunFolder, model, src_cfg: RunConfig, cfg: RunConfig, checkpoint: Path,
                     levels: list[str], device) -> dict[str, np.ndarray]:
    """{'train_x', 'train_y', 'val_x', 'val_<level>' for each level, 'val_hard' where val has it}, from
    probe_features.npz when it was made from the same checkpoint, dataset, levels and resolution, else computed
    and cached."""
    from core.methods.features import extract_beton

    data = Path(cfg.data.path)
    resolution = src_cfg.data.val_resolution or src_cfg.data.resolution
    key = json.dumps({"checkpoint": str(checkpoint.resolve()), "checkpoint_bytes": checkpoint.stat().st_size,
                      "data": str(data.resolve()), "fingerprint": dataset_fingerprint(data), "levels": levels,
                      "resolution": resolution}, sort_keys=True)
    path = folder.path / FEATURES_FILE
    if path.is_file():
        try:
            with np.load(path) as z:
                if str(z["key"]) == key:
                    return {k: z[k] for k in z.files if k != "key"}
        except (OSError, ValueError, KeyError):
            pass  # damaged or from an older layout: recomputed below
    out: dict[str, np.ndarray] = {}
    for split in ("train", "val"):
        beton = data / f"{split}.beton"
        f = extract_beton(model, src_cfg, beton, levels, device, extra_columns=("index",), seed=cfg.train.seed,
                          desc=f"probe features {split}", resolution=resolution)
        out[f"{split}_x"] = f.features
        if split == "train":
            out["train_y"] = f.labels[levels[0]]
        else:
            out.update({f"val_{lv}": f.labels[lv] for lv in levels})
            if "hard" in beton_columns(beton):
                out["val_hard"] = _int_column(beton, "hard")[f.index]
    _save_atomic(path, key=np.array(key), **out)
    return out


def _int_column(beton: Path, column: str) -> np.ndarray:
    reader = open_beton(beton)
    return np.asarray(reader.metadata[f"f{list(reader.field_names).index(column)}"]).astype(np.int64)


def _save_atomic(path: Path, **arrays: np.ndarray) -> None:
    # as provenance.write_atomic, for binary arrays: a killed write leaves no partial cache
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
