"""Strict config: defaults -> file -> CLI, unknown keys and wrong types name the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from core.format import config as cfglib
from core.format.config import ConfigError


@dataclass(frozen=True)
class Train:
    epochs: int = 10
    lr: float = 0.1
    optimizer: Literal["sgd", "adamw"] = "sgd"
    sizes: tuple[int, ...] = (32, 64)
    compile: bool = True
    note: str | None = None


@dataclass(frozen=True)
class Root:
    train: Train = field(default_factory=Train)
    seed: int = 0


def test_defaults_file_cli_merge_in_order(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("train:\n  epochs: 5\n  lr: 0.5\nseed: 3\n")
    cfg = cfglib.load(Root, f, ["train.epochs=7", "train.sizes=[16, 24]", "train.note=hello"])
    assert cfg.train.epochs == 7  # CLI beats file
    assert cfg.train.lr == 0.5  # file beats defaults
    assert cfg.seed == 3
    assert cfg.train.optimizer == "sgd"  # default kept
    assert cfg.train.sizes == (16, 24) and cfg.train.note == "hello"
    assert isinstance(cfg.train.lr, float)


def test_int_is_accepted_where_a_float_is_expected():
    assert cfglib.load(Root, None, ["train.lr=1"]).train.lr == 1.0
    assert cfglib.load(Root, None, ["train.lr=5e-5"]).train.lr == 5e-5


@pytest.mark.parametrize("override, culprit", [
    ("train.epoch=3", "train.epoch"),        # typo
    ("trian.epochs=3", "trian"),              # typo in a section
    ("train.epochs=three", "train.epochs"),   # wrong type
    ("train.epochs=2.5", "train.epochs"),     # float for int
    ("train.compile=1", "train.compile"),     # int for bool
    ("train.optimizer=adam", "train.optimizer"),  # not one of the choices
    ("train.sizes=[32, x]", "train.sizes[1]"),
    ("seed", "seed"),                          # no '='
])
def test_bad_overrides_name_the_key(override, culprit):
    with pytest.raises(ConfigError, match=rf"{culprit.replace('[', '.').replace(']', '.')}"):
        cfglib.load(Root, None, [override])


def test_unknown_key_in_file_is_named(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  epochs: 5\n  warmup: 2\n")
    with pytest.raises(ConfigError, match=r"train\.warmup"):
        cfglib.load(Root, f)


def test_missing_or_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        cfglib.load(Root, tmp_path / "nope.yaml")
    f = tmp_path / "list.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        cfglib.load(Root, f)


def test_yaml_round_trip():
    cfg = cfglib.load(Root, None, ["train.sizes=[8]", "seed=9"])
    again = cfglib.parse(Root, __import__("yaml").safe_load(cfglib.to_yaml(cfg)))
    assert again == cfg


def test_schema_validation_errors_are_config_errors():
    from data_tools.synthetic import SyntheticConfig

    with pytest.raises(ConfigError, match="level_names"):
        cfglib.parse(SyntheticConfig, {"branching": [2, 2], "level_names": ["a", "b", "c"]})


@dataclass(frozen=True)
class WithKwargs:
    kwargs: dict[str, int] = field(default_factory=dict)
    train: Train = field(default_factory=Train)


def test_dict_fields_take_free_keys_but_sections_do_not():
    cfg = cfglib.load(WithKwargs, None, ["kwargs.depth=2", "kwargs.width=3"])
    assert cfg.kwargs == {"depth": 2, "width": 3}
    with pytest.raises(ConfigError, match="kwargs.depth"):
        cfglib.load(WithKwargs, None, ["kwargs.depth=deep"])
    with pytest.raises(ConfigError, match="train.depth"):
        cfglib.load(WithKwargs, None, ["train.depth=2"])


def test_a_dict_field_given_whole_replaces_the_earlier_one(tmp_path):
    # the earlier keys belong to the earlier model: a new mapping starts afresh, a dotted key changes one key
    file = tmp_path / "run.yaml"
    file.write_text("kwargs: {channels: 4, depth: 2}\n")
    assert cfglib.load(WithKwargs, file, []).kwargs == {"channels": 4, "depth": 2}
    assert cfglib.load(WithKwargs, file, ["kwargs={width: 3}"]).kwargs == {"width": 3}
    assert cfglib.load(WithKwargs, file, ["kwargs.width=3"]).kwargs == {"channels": 4, "depth": 2, "width": 3}
    assert cfglib.load(WithKwargs, file, ["kwargs={}"]).kwargs == {}
    base = {"kwargs": {"channels": 4}}
    assert cfglib.load(WithKwargs, None, ["kwargs={depth: 1}"], base=base).kwargs == {"depth": 1}


def test_a_whole_model_section_override_does_not_keep_the_old_model_kwargs():
    from core.train.run_config import RunConfig
    base = cfglib.to_dict(cfglib.load(RunConfig, None, ["model.kwargs={channels: [8, 16, 32, 64]}"]))
    cfg = cfglib.load(RunConfig, None, ["model={name: bmlp, kwargs: {depth: 2, width: 32}}"], base=base)
    assert cfg.model.name == "bmlp" and cfg.model.kwargs == {"depth": 2, "width": 32}
