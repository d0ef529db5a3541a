"""Optimizer (decay by rank, tensor lr), loss (smoothing, soft targets) and the per-iteration schedule."""

import math

import pytest
import torch
from torch import nn

from core.models.build import build_model
from core.train.optim import build_loss, build_optimizer, lr_tensors
from core.train.run_config import OPTIMIZERS, SCHEDULES
from core.train.schedule import LRSchedule, lr_at


def tiny():
    torch.manual_seed(0)
    return build_model("bmlp", num_classes=3, image_size=4, in_chans=1, depth=1, width=8)


def one_step(model, opt, seed=1):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(5, 1, 4, 4, generator=g), torch.randint(0, 3, (5,), generator=g)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_decay_only_on_matrices(name):
    model = tiny()
    opt = build_optimizer(model, name, lr=0.1, weight_decay=0.05)
    wd = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    params = list(model.parameters())
    assert len(wd) == len(params)  # every trainable parameter is in exactly one group
    for p in params:
        assert wd[id(p)] == (0.05 if p.ndim >= 2 else 0.0)
    assert any(p.ndim < 2 for p in params) and any(p.ndim >= 2 for p in params)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_tensor_lr_matches_float_lr(name):
    # a tensor lr must give exactly the update a float lr gives, also after changing it in place
    a, b = tiny(), tiny()
    opt_t = build_optimizer(a, name, lr=0.1, weight_decay=0.01)
    groups = [{"params": [p for p in b.parameters() if p.ndim >= 2], "weight_decay": 0.01},
              {"params": [p for p in b.parameters() if p.ndim < 2], "weight_decay": 0.0}]
    opt_f = (torch.optim.SGD(groups, lr=0.1, momentum=0.9) if name == "sgd"
             else torch.optim.AdamW(groups, lr=0.1))
    for step, lr in enumerate([0.1, 0.03, 0.001]):
        for t in lr_tensors(opt_t):
            t.fill_(lr)
        for g in opt_f.param_groups:
            g["lr"] = lr
        one_step(a, opt_t, seed=step)
        one_step(b, opt_f, seed=step)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6, rtol=1e-5)


def test_schedule_apply_changes_tensor_in_place():
    model = tiny()
    opt = build_optimizer(model, "adamw", lr=0.5, weight_decay=0.0)
    (t,) = lr_tensors(opt)  # one tensor shared by the groups
    sched = LRSchedule(base_lr=0.5, warmup_steps=3, total_steps=10, kind="cosine", final_lr_fraction=0.1)
    for step in range(12):
        lr = sched.apply(opt, step)
        assert lr == sched.lr_at(step)
        assert all(g["lr"] is t for g in opt.param_groups)
        assert t.item() == pytest.approx(lr, rel=1e-12)
        one_step(model, opt, seed=step)  # the optimizer keeps using the same tensor
    assert lr_tensors(opt)[0] is t


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("warmup,total,frac", [(0, 10, 0.0), (4, 20, 0.0), (5, 17, 0.25), (6, 6, 0.1)])
def test_schedule_shape(kind, warmup, total, frac):
    base = 0.8
    lrs = [lr_at(s, base_lr=base, warmup_steps=warmup, total_steps=total, kind=kind, final_lr_fraction=frac)
           for s in range(total + 3)]
    # warm-up: strictly increasing, linear in (step + 1), reaching base at its last step
    for s in range(warmup):
        assert lrs[s] == pytest.approx(base * (s + 1) / warmup)
    assert all(x < y for x, y in zip(lrs[:warmup], lrs[1:warmup]))
    # decay phase: never increases, starts at base, never below the floor, at the floor from total_steps on
    decay = lrs[warmup:]
    assert all(y <= x + 1e-15 for x, y in zip(decay, decay[1:]))
    floor = base if kind == "constant" else frac * base
    if warmup < total:
        assert decay[0] == pytest.approx(base)
    assert all(x >= floor - 1e-12 for x in decay)
    assert lrs[total] == pytest.approx(floor) and lrs[-1] == pytest.approx(floor)
    assert max(lrs) == pytest.approx(base)
    # the midpoint of the decay: cosine and linear both sit half way between base and floor
    if kind != "constant" and (total - warmup) % 2 == 0 and total > warmup:
        mid = warmup + (total - warmup) // 2
        assert lrs[mid] == pytest.approx((base + floor) / 2)


def test_cosine_above_linear_in_first_half():
    kw = dict(base_lr=1.0, warmup_steps=2, total_steps=22, final_lr_fraction=0.0)
    for s in range(3, 12):
        c, l = lr_at(s, kind="cosine", **kw), lr_at(s, kind="linear", **kw)
        assert c > l
        p = (s - 2) / 20
        assert c == pytest.approx(0.5 * (1 + math.cos(math.pi * p)))


@pytest.mark.parametrize("bad", [dict(kind="step"), dict(warmup_steps=11), dict(total_steps=0),
                                 dict(final_lr_fraction=1.5), dict(base_lr=-1.0)])
def test_schedule_rejects(bad):
    kw = dict(base_lr=1.0, warmup_steps=1, total_steps=10, kind="cosine", final_lr_fraction=0.0)
    kw.update(bad)
    with pytest.raises(ValueError):
        LRSchedule(**kw)


def test_schedule_refuses_float_lr():
    opt = torch.optim.SGD(tiny().parameters(), lr=0.1)
    with pytest.raises(TypeError):
        LRSchedule(1.0, 0, 10).apply(opt, 0)


def test_loss_soft_targets_and_smoothing():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(6, 5, generator=g), torch.randint(0, 5, (6,), generator=g)
    eps = 0.2
    loss = build_loss(eps)
    onehot = nn.functional.one_hot(y, 5).float()
    # hard labels and their one-hot probabilities give the same smoothed loss
    assert torch.allclose(loss(logits, y), loss(logits, onehot))
    # smoothing is the cross-entropy against (1 - eps) * onehot + eps / C
    smoothed = (1 - eps) * onehot + eps / 5
    brute = -(smoothed * logits.log_softmax(1)).sum(1).mean()
    assert torch.allclose(build_loss(0.0)(logits, smoothed), brute)
    assert torch.allclose(loss(logits, y), brute)
    with pytest.raises(ValueError):
        build_loss(1.0)
