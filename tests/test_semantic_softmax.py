"""Multi-level pretraining (core/train/semantic_softmax.py, train.objective=semantic_softmax): the loss equals a hand
computation (hard and soft targets, label smoothing, weights by level size), a real run through `grainsweep train`
learns every level, and everything that rebuilds a run's model from its folder loads it: `grainsweep eval`,
transfer (linear probe and full fine-tuning) and core.methods.features.run_model."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from core.format import run_folder
from core.train import run_config
from core.train import checkpoint, parts, run as train_run, transfer
from core.format import config as cfglib
from core.methods import features
from core.format import hierarchy as hlib
from core.train.evaluate import evaluate_run
from core.models.build import build_model
from core.train.run_config import RunConfig
from core.train.semantic_softmax import (MultiLevelModel, SemanticSoftmax, build_objective, build_run_model,
                                   level_weights, with_new_head)
from data_tools import derive
from launch.cli import main as cli

MLP = ("model.name=bmlp", "model.kwargs={depth: 2, width: 128}", "optim.name=adamw", "optim.lr=0.003",
       "optim.weight_decay=0.01")
CHEAP = ("data.resolution=16", "data.batch_size=32", "data.workers=1", "data.scale=[0.6, 1.0]",
         "optim.warmup_epochs=0.5", "model.compile=never", *MLP)


def _hand_loss(parts: list[torch.Tensor], targets: list[torch.Tensor], weights: list[float],
               eps: float) -> torch.Tensor:
    """sum_k w_k * mean_b -sum_c q_kbc log softmax(z_kb)_c, q = (1 - eps) * target distribution + eps / n_k."""
    total = torch.zeros((), dtype=torch.float64)
    for z, t, w in zip(parts, targets, weights):
        n = z.shape[1]
        p = torch.nn.functional.one_hot(t, n).double() if not t.is_floating_point() else t.double()
        q = (1 - eps) * p + eps / n
        total = total + w * (-(q * torch.log_softmax(z.double(), dim=1)).sum(1)).mean()
    return total


# the loss and the weights, on random logits
def test_loss_equals_hand_computation_with_index_targets():
    g = torch.Generator().manual_seed(0)
    sizes, levels = [6, 3, 2], ["leaf", "mid", "top"]
    w = level_weights(sizes)
    obj = SemanticSoftmax(levels, sizes, w, label_smoothing=0.2)
    out = torch.randn(5, sum(sizes), generator=g) * 3
    targets = {lv: torch.randint(0, n, (5,), generator=g) for lv, n in zip(levels, sizes)}
    want = _hand_loss(list(out.split(sizes, 1)), [targets[lv] for lv in levels], list(w), 0.2)
    torch.testing.assert_close(obj.loss(out, targets).double(), want, rtol=1e-5, atol=1e-6)
    # no smoothing, one level: plain cross-entropy
    one = SemanticSoftmax(["leaf"], [6], [1.0])
    torch.testing.assert_close(one.loss(out[:, :6], targets),
                               torch.nn.functional.cross_entropy(out[:, :6], targets["leaf"]))


def test_loss_with_soft_targets_from_mixup():
    g = torch.Generator().manual_seed(1)
    sizes, levels = [8, 4], ["fine", "coarse"]
    w = level_weights(sizes, "classes")
    obj = SemanticSoftmax(levels, sizes, w, label_smoothing=0.1)
    out = torch.randn(7, 12, generator=g)
    soft = {lv: torch.distributions.Dirichlet(torch.ones(n)).sample((7,)) for lv, n in zip(levels, sizes)}
    want = _hand_loss(list(out.split(sizes, 1)), [soft[lv] for lv in levels], list(w), 0.1)
    torch.testing.assert_close(obj.loss(out, soft).double(), want, rtol=1e-5, atol=1e-6)
    # one-hot probabilities and class indices give the same loss
    idx = {lv: torch.randint(0, n, (7,), generator=g) for lv, n in zip(levels, sizes)}
    onehot = {lv: torch.nn.functional.one_hot(t, n).float() for (lv, t), n in zip(idx.items(), sizes)}
    torch.testing.assert_close(obj.loss(out, onehot), obj.loss(out, idx))


def test_weights_by_level_size():
    sizes = [64, 16, 4]  # finest first
    total = sum(sizes)
    raw = [total / 64, total / (64 + 16), total / (64 + 16 + 4)]  # N / classes at this level and finer
    assert level_weights(sizes) == pytest.approx([r / sum(raw) for r in raw])
    assert level_weights(sizes, "classes") == pytest.approx([64 / total, 16 / total, 4 / total])
    assert level_weights(sizes, "uniform") == pytest.approx([1 / 3] * 3)
    for kind in ("ridnik", "classes", "uniform"):
        w = level_weights(sizes, kind)
        assert math.isclose(sum(w), 1.0) and list(w) == sorted(w, reverse=True)  # finer levels weigh no less
    # Ridnik et al. cap a factor at 20 before normalising
    assert level_weights([1, 100]) == pytest.approx([20 / 21, 1 / 21])
    with pytest.raises(ValueError):
        level_weights(sizes, "by_depth")


def test_model_heads_logits_and_reset():
    sizes = [6, 3, 2]
    model = MultiLevelModel(build_model("bmlp", 0, 8, depth=1, width=16), sizes)
    obj = SemanticSoftmax(["a", "b", "c"], sizes, level_weights(sizes))
    x = torch.randn(4, 3, 8, 8)
    out = model(x)
    assert out.shape == (4, 11) and model.forward_features(x).shape == (4, 16)
    torch.testing.assert_close(obj.logits(out), model.heads[0](model.forward_features(x)))
    # every head (and the backbone) gets a gradient from the summed loss
    obj.loss(out, {lv: torch.zeros(4, dtype=torch.long) for lv in "abc"}).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for h in model.heads for p in h.parameters())
    with pytest.raises(ValueError, match="logits"):
        obj.split(out[:, :10])
    # reset_head: one new head, a plain single-head model
    model.reset_head(5)
    assert model(x).shape == (4, 5) and model.level_sizes == (5,)
    # with_new_head: the backbone with a new classifier has build_model's layout (a plain run's checkpoint)
    multi = MultiLevelModel(build_model("bmlp", 0, 8, depth=1, width=16), sizes)
    plain = with_new_head(multi, 5)
    ref = build_model("bmlp", 5, 8, depth=1, width=16)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


# config: what is accepted and what is refused
def _cfg(data: Path, *sets: str) -> RunConfig:
    return cfglib.load(RunConfig, None, [f"data.path={data}", *CHEAP, *sets])


def test_config_levels_and_refusals(tiny_dataset, tmp_path, capsys):
    h = hlib.load(tiny_dataset)
    fine, mid, top = h.names
    cfg = _cfg(tiny_dataset, "train.objective=semantic_softmax")
    obj = build_objective(cfg, h, fine)
    assert obj.train_levels == (fine, mid, top) and obj.level == fine
    assert obj.sizes == tuple(lv.num_classes for lv in h.levels) and obj.weights == level_weights(obj.sizes)
    sub = build_objective(_cfg(tiny_dataset, "train.objective=semantic_softmax", f"data.level={mid}",
                               f"train.objective_levels=[{top}, {mid}]", "train.objective_weights=uniform"), h, mid)
    assert sub.train_levels == (mid, top) and sub.weights == (0.5, 0.5)  # sorted finest first
    for bad in ([f"train.objective_levels=[{mid}, {top}]"],  # misses data.level
                [f"data.level={mid}", f"train.objective_levels=[{fine}, {mid}]"],  # finer than data.level
                ["train.objective_levels=[subclass, genus]"], [f"train.objective_levels=[{fine}, {fine}]"]):
        c = _cfg(tiny_dataset, "train.objective=semantic_softmax", *bad)
        with pytest.raises(cfglib.ConfigError, match="objective_levels"):
            build_run_model(c, h, c.data.level or fine)
    with pytest.raises(cfglib.ConfigError, match="semantic_softmax only"):
        _cfg(tiny_dataset, f"train.objective_levels=[{fine}]")
    # a derived level is refused (on a copy: deriving registers the level in hierarchy.json)
    data = tmp_path / "tiny"
    shutil.copytree(tiny_dataset, data)
    d = derive.random_groups(data, 3)
    c = _cfg(data, "train.objective=semantic_softmax", f"data.level={d.name}")
    dh, level = parts.check_data(c)
    with pytest.raises(cfglib.ConfigError, match="derived"):
        build_objective(c, dh, level)
    # a model with other heads than the objective's (a transfer left at semantic_softmax) is refused
    with pytest.raises(run_config.RunConfigError, match="one head per level"):
        parts.build_parts(cfg, model=build_model("bmlp", h.num_leaves, 16, depth=2, width=128))
    # the CLI passes it like any other setting
    assert cli(["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "x"), "--print-config",
                "--set", "train.objective=semantic_softmax"]) == 0
    assert "objective: semantic_softmax" in capsys.readouterr().out


def test_mixup_soft_targets_and_chosen_levels_train(tiny_dataset, tmp_path):
    h = hlib.load(tiny_dataset)
    fine, _, top = h.names
    run_dir = tmp_path / "run"
    result = train_run.run(_cfg(tiny_dataset, "train.objective=semantic_softmax", "train.epochs=1",
                                f"train.objective_levels=[{fine}, {top}]", "train.objective_weights=classes",
                                "train.mixup_alpha=0.4", "train.cutmix_alpha=1.0"), run_dir)
    assert result["level"] == fine and all(f"acc1/{lv}" in result for lv in h.names)
    line = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(line["train_loss"]) and line["train_loss"] > 0
    state = torch.load(checkpoint.latest(run_dir / "checkpoints"), weights_only=True)["model"]
    assert [state[f"heads.{i}.weight"].shape[0] for i in range(2)] == [h.level(fine).num_classes,
                                                                      h.level(top).num_classes]
    assert "heads.2.weight" not in state


# a real multi-level run, and everything that loads it (`learnable`: tests/conftest.py)
@pytest.fixture(scope="module")
def multi_run(learnable, tmp_path_factory) -> Path:
    """`grainsweep train --set train.objective=semantic_softmax` at the finest level, 12 epochs of a small MLP."""
    out = tmp_path_factory.mktemp("multi") / "run"
    sets = [s for item in (*CHEAP, "train.epochs=12", "train.eval_every=12", "train.objective=semantic_softmax")
            for s in ("--set", item)]
    assert cli(["train", "--data", str(learnable), "--out", str(out), *sets]) == 0
    return out


def test_multi_level_run_learns_every_level(multi_run, learnable):
    h = hlib.load(learnable)
    result = json.loads((multi_run / run_folder.RESULT_FILE).read_text())
    assert result["level"] == h.names[0]
    for lv in (h.names[0], h.names[-1]):  # finest and coarsest, the latter from summed fine probabilities
        chance = 1 / h.level(lv).num_classes
        assert result[f"acc1/{lv}"] > chance + 0.25 * (1 - chance), (lv, result[f"acc1/{lv}"], chance)
    cfg = cfglib.load(RunConfig, multi_run / "config.yaml")
    assert cfg.train.objective == "semantic_softmax"
    state = torch.load(checkpoint.latest(multi_run / "checkpoints"), weights_only=True)["model"]
    assert [state[f"heads.{i}.weight"].shape[0] for i in range(len(h.names))] == [lv.num_classes for lv in h.levels]
    # `grainsweep eval` rebuilds the same model and gets the same figures
    again = evaluate_run(multi_run)
    assert again[f"acc1/{h.names[0]}"] == pytest.approx(result[f"acc1/{h.names[0]}"])


def test_transfer_and_features_from_multi_level_run(multi_run, learnable, tmp_path):
    h = hlib.load(learnable)
    target = h.names[-1]
    before = torch.load(checkpoint.latest(multi_run / "checkpoints"), weights_only=True)["model"]
    # linear probe: only the new head trains; the backbone stays the source's
    cfg = transfer.transfer_config(multi_run, None, target, {"train.epochs": 2})
    assert cfg.train.objective == "single" and cfg.train.objective_levels == ()
    probe = transfer.finetune(multi_run, cfg, tmp_path / "probe", mode="linear")
    chance = 1 / h.level(target).num_classes
    assert probe[f"acc1/{target}"] > chance + 0.25 * (1 - chance), probe
    after = torch.load(checkpoint.latest(tmp_path / "probe" / "checkpoints"), weights_only=True)["model"]
    assert after["head.weight"].shape[0] == h.level(target).num_classes and not any(k.startswith("heads.")
                                                                                       for k in after)
    for k, v in before.items():
        if k.startswith("backbone.") and not k.startswith("backbone.head"):
            torch.testing.assert_close(after[k.removeprefix("backbone.")], v, rtol=0, atol=0, msg=k)
    # full fine-tuning moves the backbone
    full = transfer.finetune(multi_run, transfer.transfer_config(multi_run, None, target, {"train.epochs": 1}),
                             tmp_path / "full", mode="full")
    moved = torch.load(checkpoint.latest(tmp_path / "full" / "checkpoints"), weights_only=True)["model"]
    assert f"acc1/{target}" in full and not torch.equal(moved["embed.weight"], before["backbone.embed.weight"])
    # the transfer run is a plain run: eval and run_model rebuild it from its own config
    assert evaluate_run(tmp_path / "probe")[f"acc1/{target}"] == pytest.approx(probe[f"acc1/{target}"])
    plain, _ = features.run_model(tmp_path / "probe")
    assert not isinstance(plain, MultiLevelModel)
    # run_model loads the multi-level run: its features are the backbone's, its output every level's logits
    model, run_cfg = features.run_model(multi_run)
    assert isinstance(model, MultiLevelModel) and run_cfg.train.objective == "semantic_softmax"
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), plain.forward_features(x))  # linear probe: same
        assert model(x).shape == (2, sum(lv.num_classes for lv in h.levels))
