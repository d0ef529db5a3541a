"""Checkpoints: round trip, resume equals an uninterrupted run, compiled models, atomic writes, latest()."""

import random

import numpy as np
import pytest
import torch
from torch import nn

from core.train import checkpoint
from core.models.build import build_model
from core.train.optim import build_optimizer, lr_tensors
from core.train.schedule import LRSchedule


def make(seed, name="adamw"):
    torch.manual_seed(seed)
    model = build_model("bmlp", num_classes=3, image_size=4, in_chans=1, depth=1, width=8)
    return model, build_optimizer(model, name, lr=0.05, weight_decay=0.01)


SCHED = LRSchedule(base_lr=0.05, warmup_steps=2, total_steps=8)


def train_step(model, opt, step):
    # the batch comes from the global RNGs, so resuming must restore them to reproduce it
    x = torch.randn(4, 1, 4, 4) + float(np.random.rand()) + random.random()
    y = torch.randint(0, 3, (4,))
    SCHED.apply(opt, step)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def seed_all(s):
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_resume_matches_uninterrupted(tmp_path, opt_name):
    # uninterrupted: 3 steps, checkpoint, 3 more steps
    model, opt = make(0, opt_name)
    seed_all(123)
    for s in range(3):
        train_step(model, opt, s)
    path = checkpoint.save(checkpoint.path_for(tmp_path, 3), model=model, optimizer=opt, step=3, epoch=1,
                           extra={"loader": {"epoch": 1, "offset": 12}})
    for s in range(3, 6):
        train_step(model, opt, s)
    ref = [p.detach().clone() for p in model.parameters()]
    ref_draws = (random.random(), float(np.random.rand()), torch.rand(1).item())

    # resumed: different init and RNGs, then restored from the file
    model2, opt2 = make(99, opt_name)
    lr_before = lr_tensors(opt2)[0]
    seed_all(7)
    meta = checkpoint.load(path, model=model2, optimizer=opt2)
    assert meta == {"step": 3, "epoch": 1, "extra": {"loader": {"epoch": 1, "offset": 12}}}
    # the lr tensor the schedule (and a compiled step) holds is kept, with the saved value
    assert lr_tensors(opt2) == [lr_before] and lr_before.item() == pytest.approx(SCHED.lr_at(2))
    for s in range(meta["step"], 6):
        train_step(model2, opt2, s)
    for a, b in zip(ref, model2.parameters()):
        assert torch.equal(a, b)
    assert (random.random(), float(np.random.rand()), torch.rand(1).item()) == ref_draws


def test_round_trip_restores_state(tmp_path):
    model, opt = make(0)
    seed_all(1)
    train_step(model, opt, 0)
    path = checkpoint.save(tmp_path / "a.pt", model=model, optimizer=opt, step=1, epoch=0, extra={})
    model2, opt2 = make(5)
    checkpoint.load(path, model=model2, optimizer=opt2, restore_rng=False)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys() and s1
    for k in s1:
        for name in s1[k]:
            assert torch.equal(s1[k][name], s2[k][name])


def test_compiled_model_saves_plain_keys(tmp_path):
    model, opt = make(0)
    compiled = torch.compile(model)  # lazy: nothing is compiled until called, the wrapper is what matters
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict())
    path = checkpoint.save(tmp_path / "c.pt", model=compiled, optimizer=opt, step=0, epoch=0)
    keys = torch.load(path, weights_only=True)["model"].keys()
    assert set(keys) == set(model.state_dict().keys())
    assert not any("_orig_mod" in k for k in keys)
    # and it loads into a compiled model as well as an eager one
    model2, _ = make(3)
    checkpoint.load(path, model=torch.compile(model2))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))


def test_no_temp_files_and_latest(tmp_path):
    model, opt = make(0)
    assert checkpoint.latest(tmp_path) is None
    assert checkpoint.latest(tmp_path / "missing") is None
    for step in (5, 40, 300):
        checkpoint.save(checkpoint.path_for(tmp_path, step), model=model, optimizer=opt, step=step, epoch=0)
    checkpoint.save(checkpoint.path_for(tmp_path, 40), model=model, optimizer=opt, step=40, epoch=0)  # overwrite
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([checkpoint.path_for(tmp_path, s).name for s in (5, 40, 300)] + ["notes.txt"])
    assert checkpoint.latest(tmp_path) == checkpoint.path_for(tmp_path, 300)
    # other "<name><number>.pt" schemes order by their number too (not by text: 9 < 10)
    other = tmp_path / "epochs"
    for e in (9, 10, 2):
        checkpoint.save(other / f"epoch{e}.pt", model=model, step=e, epoch=e)
    assert checkpoint.latest(other) == other / "epoch10.pt"


def test_failed_save_leaves_previous_file(tmp_path):
    model, opt = make(0)
    path = checkpoint.save(tmp_path / "x.pt", model=model, optimizer=opt, step=1, epoch=0)
    before = path.read_bytes()
    with pytest.raises(Exception):
        # a lambda cannot be pickled: torch.save fails part-way through writing
        checkpoint.save(path, model=model, optimizer=opt, step=2, epoch=0, extra={"bad": lambda: 0})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
