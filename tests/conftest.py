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
