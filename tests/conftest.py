"""Shared fixtures: small real datasets written through the real converter."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_tools import convert_synthetic


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """The 'tiny' synthetic preset (12 leaves in 3 levels, 16 px, raw images), converted once per session."""
    out = tmp_path_factory.mktemp("data") / "tiny"
    cfg = convert_synthetic.load_config("tiny", None, ["workers=1"])
    convert_synthetic.convert(out, cfg)
    return out


@pytest.fixture(scope="session")
def learnable(tmp_path_factory) -> Path:
    """8 leaves under 4 classes under 2 superclasses, 16 px, 384 train images; no hard samples and no distractors,
    so a tiny model fits every level within a few epochs (tests that training learns)."""
    out = tmp_path_factory.mktemp("learnable") / "ds"
    cfg = convert_synthetic.load_config(None, None, [
        "synthetic.branching=[2, 2, 2]", "synthetic.image_size=16", "synthetic.train_per_leaf=48",
        "synthetic.val_per_leaf=16", "synthetic.hard_fraction_train=0.0", "synthetic.hard_fraction_val=0.0",
        "synthetic.distractor_prob=0.0", "workers=1"])
    convert_synthetic.convert(out, cfg)
    return out
