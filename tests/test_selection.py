"""Pretraining-data selection for fine-tuning (Liu et al., NeurIPS 2022): the transport picks the right classes,
POT's plan equals the unbalanced Sinkhorn iterations and satisfies their optimality conditions, and a real tiny
transfer with --select-k trains two heads on the target and the selected pretraining rows, records the selection,
resumes exactly and beats chance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from core.train import checkpoint
from core.format import config as cfglib
from core.format import hierarchy as hlib
from core.methods import select_transfer
from core.format.run_folder import RunFolder
from core.train import run as train_run, transfer
from core.format.beton_file import BetonError, column_values
from core.data.loader import build_loader
from core.models.build import build_model
from core.train.run_config import RunConfig
from core.methods.select_heads import SELECTED
from core.methods.selection import cosine_cost, select_classes, unbalanced_plan
from launch.cli import main as cli

MLP = ("model.name=bmlp", "model.kwargs={depth: 2, width: 64}", "model.compile=never", "optim.name=adamw",
       "optim.lr=0.003", "optim.weight_decay=0.01")


def _sinkhorn_numpy(cost: np.ndarray, a: np.ndarray, b: np.ndarray, eps: float, lam_a: float, lam_b: float,
                    iters: int) -> np.ndarray:
    """Chizat et al. (2018), Alg. 1 with KL marginal penalties: u = (a / Kv)^(lam_a / (lam_a + eps)),
    v = (b / K^T u)^(lam_b / (lam_b + eps)), K = exp(-cost / eps); plan = diag(u) K diag(v)."""
    k = np.exp(-cost / eps)
    u, v = np.ones(len(a)), np.ones(len(b))
    for _ in range(iters):
        u = (a / (k @ v)) ** (lam_a / (lam_a + eps))
        v = (b / (k.T @ u)) ** (lam_b / (lam_b + eps))
    return u[:, None] * k * v[None, :]


# the transport
def test_top_k_are_the_pretraining_classes_that_match_target_classes():
    rng = np.random.default_rng(0)
    dim = 32
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0].T  # orthonormal rows
    targets = basis[:3] * rng.uniform(0.5, 2.0, (3, 1))  # 3 target classes, scale must not matter
    sources = basis[3:11].copy() * 3.0  # 8 pretraining classes orthogonal to every target class
    near = {5: 0, 1: 1, 6: 2}  # pretraining class -> the target class it nearly equals
    for i, j in near.items():
        sources[i] = targets[j] * 1.7 + 0.02 * rng.normal(size=dim)
    sources[2] = -targets[0]  # opposite: the largest cost
    sel = select_classes(sources, targets, 3)
    assert sorted(sel.classes.tolist()) == [1, 5, 6]
    assert np.all(np.diff(sel.mass) <= 0) and sel.mass.min() > 0.5  # each near class sends about a class's mass
    others = np.delete(sel.row_mass, [1, 5, 6])
    assert others.max() < 0.05 * sel.mass.min()
    assert sel.row_mass[2] == others.min()
    assert set(select_classes(sources, targets, 2).classes.tolist()) <= {1, 5, 6}
    # a pretraining class without samples (zero weight) is never chosen, even when it is a perfect match
    weights = np.ones(8)
    weights[5] = 0
    sel = select_classes(sources, targets, 3, source_weights=weights)
    assert 5 not in sel.classes.tolist() and sel.row_mass[5] == 0
    with pytest.raises(ValueError, match="k=8"):
        select_classes(sources, targets, 8, source_weights=weights)


def test_mass_follows_similarity():
    # pretraining classes at decreasing cosine to the single target class: their masses decrease in that order
    target = np.array([[1.0, 0.0]])
    angles = np.array([0.0, 0.3, 0.8, 1.4, 2.5])
    sources = np.stack([np.cos(angles), np.sin(angles)], 1)
    sel = select_classes(sources, target, 5)
    assert sel.classes.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(cosine_cost(sources, target)[:, 0], (1 - np.cos(angles)) / 0.1)


def test_pot_plan_equals_unbalanced_sinkhorn_and_is_optimal():
    rng = np.random.default_rng(1)
    cost = cosine_cost(rng.normal(size=(7, 5)), rng.normal(size=(4, 5)))
    a, b = rng.uniform(0.5, 1.5, 7), rng.uniform(0.5, 1.5, 4)
    eps, lam_a, lam_b = 1.0, 1.0, 100.0
    plan = unbalanced_plan(cost, a, b, reg=eps, reg_m=(lam_a, lam_b), max_iter=20000, stop_thr=1e-14)
    ref = _sinkhorn_numpy(cost, a, b, eps, lam_a, lam_b, iters=20000)
    np.testing.assert_allclose(plan, ref, rtol=1e-8, atol=1e-15)
    # first-order conditions of min <P,C> + eps KL(P, 1) + lam_a KL(P1, a) + lam_b KL(P^T 1, b):
    # P_ij = exp((f_i + g_j - C_ij) / eps) with f = -lam_a log(P1 / a), g = -lam_b log(P^T 1 / b)
    f = -lam_a * np.log(plan.sum(1) / a)
    g = -lam_b * np.log(plan.sum(0) / b)
    np.testing.assert_allclose(np.log(plan), (f[:, None] + g[None, :] - cost) / eps, rtol=0, atol=1e-7)
    # the near-hard target side keeps its marginal, the relaxed pretraining side does not
    np.testing.assert_allclose(plan.sum(0), b, rtol=0.05)
    assert np.abs(plan.sum(1) - a).max() > 0.1


def test_first_rows_per_class():
    labels = np.array([2, 0, 2, -1, 0, 2, 1, 0])
    np.testing.assert_array_equal(select_transfer.first_rows_per_class(labels, 2), [0, 1, 2, 4, 6])
    np.testing.assert_array_equal(select_transfer.first_rows_per_class(labels, 9), [0, 1, 2, 4, 5, 6, 7])


# a real transfer with selected data
@pytest.fixture(scope="module")
def source(tiny_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sel") / "src"
    cfg = cfglib.load(RunConfig, None, [f"data.path={tiny_dataset}", "data.level=subclass", "data.resolution=16",
                                        "data.batch_size=16", "data.workers=1", *MLP, "train.epochs=3",
                                        "train.eval_every=100"])
    train_run.run(cfg, out)
    return out


def _state(run: Path) -> dict:
    return torch.load(checkpoint.latest(run / "checkpoints"), weights_only=True)["model"]


def test_finetune_with_selected_pretraining_data(source, tiny_dataset, tmp_path, capsys):
    h = hlib.load(tiny_dataset)
    fine, coarse = h.names[0], h.names[-1]
    out = tmp_path / "sel"
    args = ["finetune", "--from", str(source), "--level", coarse, "--out", str(out), "--select-k", "2",
            "--set", "train.epochs=3", "--set", "train.keep_checkpoints=3", "--set", "optim.lr=0.002"]
    assert cli(args) == 0
    result = json.loads((out / "result.json").read_text())

    # selection.json: 2 finest-level classes, named from the hierarchy, most mass first
    rec = json.loads((out / select_transfer.SELECTION_FILE).read_text())
    assert (rec["k"], rec["lambda"], rec["source_level"], rec["target_level"]) == (2, 0.3, fine, coarse)
    assert len(set(rec["classes"])) == 2 and rec["mass"] == sorted(rec["mass"], reverse=True)
    assert rec["names"] == [h.level(fine).titles[c] for c in rec["classes"]]
    assert rec["ids"] == [h.level(fine).classes[c] for c in rec["classes"]]
    assert json.loads(RunFolder(out).transfer_file.read_text())["source"] == str(source.resolve())

    # the selected rows are exactly the beton rows of those classes: against a full sequential pass over labels
    beton = tiny_dataset / "train.beton"
    scan = build_loader(beton, split="val", batch_size=32, num_workers=1, levels=[fine], resolution=16,
                        order="sequential", os_cache=True, distributed=False, drop_last=False,
                        extra_columns=["index"], seed=0, device="cpu")
    labels = torch.cat([b.labels[fine].clone() for b in scan]).numpy()
    expected = np.flatnonzero(np.isin(labels, rec["classes"]))
    rows = select_transfer.selected_rows(rec)
    np.testing.assert_array_equal(rows, expected)
    assert rec["images"] == len(rows) == sum(rec["images_per_class"])
    np.testing.assert_array_equal(column_values(beton, fine), labels)
    index = column_values(beton, "index")
    served = build_loader(beton, split="val", batch_size=5, num_workers=1, levels=[fine], resolution=16,
                          order="sequential", os_cache=True, distributed=False, drop_last=False,
                          extra_columns=["index"], seed=0, device="cpu", indices=rows)
    got = torch.cat([b.extras["index"].clone() for b in served]).numpy()
    np.testing.assert_array_equal(got, index[expected])
    for bad, err in (([len(labels)], BetonError), ([-1], BetonError), ([3, 3], ValueError), ([], ValueError)):
        with pytest.raises(err):
            build_loader(beton, split="val", batch_size=5, num_workers=1, levels=[fine], resolution=16,
                         order="sequential", os_cache=True, distributed=False, drop_last=False, seed=0,
                         device="cpu", indices=bad)

    # the training batches: target rows, then selected rows whose labels are the selected classes 0..K-1
    cfg = cfglib.load(RunConfig, out / "config.yaml")
    model, _ = transfer.build_transfer_model(source, h.level(coarse).num_classes, "full")
    parts = select_transfer.selected_parts(cfg, model, rec, select_transfer.SelectConfig(k=2))
    sel_loader = parts.train_loader.selected
    seen = []
    for epoch in (0, 1):
        parts.train_loader.set_epoch(epoch)
        batches = list(parts.train_loader)
        assert len(batches) == len(parts.train_loader) == len(labels) // 16
        for b in batches:
            assert b.images.shape[0] == 32 and len(b.labels[coarse]) == 16
            assert set(b.labels[SELECTED].tolist()) <= {0, 1}
        seen.append(torch.cat([b.labels[SELECTED] for b in batches]))
    assert parts.train_loader.selected_epochs(1) == range(1 * parts.train_loader.cycles, 2 * parts.train_loader.cycles)
    # an epoch's selected stream depends on the epoch only (exact resume)
    parts.train_loader.set_epoch(1)
    torch.testing.assert_close(torch.cat([b.labels[SELECTED] for b in parts.train_loader]), seen[1])
    assert len(sel_loader) == len(rows) // 16

    # the run: two heads in the checkpoint, the target network readable as a plain model; accuracy above chance
    state = _state(out)
    assert state["selected_head.weight"].shape == (2, 64)
    plain = build_model("bmlp", h.level(coarse).num_classes, 16, depth=2, width=64)
    plain.load_state_dict({k: v for k, v in state.items() if not k.startswith("selected_head.")})
    chance = 1 / h.level(coarse).num_classes
    assert result["level"] == coarse and result[f"acc1/{coarse}"] > chance, result
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3] and all(0 <= m["train_acc1"] <= 1 for m in metrics)
    # eval, features and clustering read the run's target network without its training-only head
    from core.train.evaluate import evaluate_run
    from core.methods.features import run_model

    again = evaluate_run(out)
    assert again[f"acc1/{coarse}"] == pytest.approx(result[f"acc1/{coarse}"])
    model, _ = run_model(out)
    assert not any(k.startswith("selected_head.") for k in model.state_dict())

    # resume: cut after epoch 2, resume -> the same weights as uninterrupted
    cut = tmp_path / "cut"
    shutil.copytree(out, cut)
    (cut / "checkpoints" / "epoch0003.pt").unlink()
    (cut / "result.json").unlink()
    capsys.readouterr()
    assert cli([*args[:6], str(cut), *args[7:], "--resume"]) == 0
    for k, v in state.items():
        torch.testing.assert_close(_state(cut)[k], v, rtol=1e-5, atol=1e-6, msg=k)

    # refused: other selection settings on resume, no selection on a selection run, selection on a plain one
    capsys.readouterr()
    assert cli([*args, "--resume", "--select-lambda", "0.5"]) == 2
    assert "selection settings" in capsys.readouterr().err
    assert cli([*args[:7], "--set", "train.epochs=3", "--resume"]) == 2
    assert "--select-k" in capsys.readouterr().err
    assert cli([*args, "--mode", "linear", "--out", str(tmp_path / "lin")]) == 2
    assert "--mode full" in capsys.readouterr().err
    assert cli([*args[:7], "--select-lambda", "0.5"]) == 2
