"""Typed, strict configuration: frozen dataclasses are the schema, YAML files and dotted overrides the input.

Values merge defaults -> YAML file -> `--set a.b=value` overrides. Sections (dataclasses) merge key by key. A
dict-typed field (free keys, e.g. model.kwargs) given whole - `model.kwargs={depth: 2}`, a mapping in a YAML
file, or inside `model={name: bmlp, kwargs: {...}}` - replaces the earlier value, since those keys belong to
the earlier model; a dotted override that reaches inside it (`model.kwargs.depth=2`) changes that key alone.
An unknown key or a value of the wrong type
fails with a ConfigError naming the dotted key, so a typo never goes unnoticed (nanoGPT's configurator and
dinov2's utils/config.py do the same).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad configuration; the message names the key at fault."""


def parse(schema: type[T], data: Any, key: str = "") -> T:
    """Builds `schema` (a dataclass type) from plain data, checking every key and type."""
    return _coerce(schema, data, key)


def load(schema: type[T], file: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
         base: dict | None = None) -> T:
    """defaults -> `base` (e.g. a preset) -> YAML `file` -> dotted `overrides` ('train.epochs=3')."""
    merged: dict = to_dict(schema())
    if base:
        merged = _merge(merged, base, "", schema)
    if file is not None:
        merged = _merge(merged, read_yaml(file), "", schema)
    for item in overrides:
        merged = _merge(merged, _override_to_dict(item), "", schema)
    return parse(schema, merged)


def read_yaml(file: str | Path) -> dict:
    path = Path(file)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def to_dict(cfg: Any) -> Any:
    """A dataclass tree as plain dicts/lists (tuples become lists), ready for YAML."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def replace(cfg: T, **changes: Any) -> T:
    """dataclasses.replace with the same checks as parsing."""
    data = to_dict(cfg)
    for k, v in changes.items():
        data = _merge(data, {k: to_dict(v)}, "", type(cfg))
    return parse(type(cfg), data)


def with_values(cfg: T, values: dict[str, Any]) -> T:
    """`cfg` with typed values at dotted keys ({'data.path': path, 'train.seed': 1}), checked like parsing.

    The way code changes a config: values are never turned into 'key=value' text and parsed back (a level named
    'on' would become True, a path with ' #' would be cut at the '#')."""
    data = to_dict(cfg)
    for dotted, value in values.items():
        parts = dotted.split(".")
        if not dotted or any(not part for part in parts):
            raise ConfigError(f"bad key {dotted!r}")
        new: dict = _DottedPath()
        node = new
        for part in parts[:-1]:
            node = node.setdefault(part, _DottedPath())
        node[parts[-1]] = to_dict(value)
        data = _merge(data, new, "", type(cfg))
    return parse(type(cfg), data)


# merging
def parse_override(item: str) -> tuple[str, Any]:
    """A user's 'a.b=value' as (dotted key, value), the value read as YAML (`--set`, sweep files' `set` lists)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    dotted, raw = item.split("=", 1)
    dotted = dotted.strip()
    if not dotted or any(not part for part in dotted.split(".")):
        raise ConfigError(f"override {item!r}: bad key {dotted!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return dotted, value


def _override_to_dict(item: str) -> dict:
    dotted, value = parse_override(item)
    out: dict = _DottedPath()
    node = out
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, _DottedPath())
    node[parts[-1]] = value
    return out


class _DottedPath(dict):
    """The levels of an override's dotted key: merged key by key, also inside a dict-typed field."""


def _merge(base: Any, new: Any, key: str, tp: Any = None) -> Any:
    """Merges `new` into `base`; keys of a dataclass section must exist, keys of a dict-typed field are free."""
    if isinstance(base, dict) and isinstance(new, dict):
        hints = typing.get_type_hints(tp) if dataclasses.is_dataclass(tp) else None
        if hints is None and tp is not None and not isinstance(new, _DottedPath):
            return new  # a dict-typed field given whole replaces the earlier dict (see the module docstring)
        out = dict(base)
        for k, v in new.items():
            sub = f"{key}.{k}" if key else str(k)
            if hints is not None and k not in hints:
                raise ConfigError(f"unknown config key {sub!r}; known keys here: {sorted(hints)}")
            out[k] = _merge(base.get(k), v, sub, hints.get(k) if hints else None)
        return out
    return new


# type checking
def _coerce(tp: Any, value: Any, key: str) -> Any:
    name = key or "<root>"
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = to_dict(value)
        if not isinstance(value, dict):
            raise ConfigError(f"config key {name!r} must be a mapping, got {value!r}")
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            sub = f"{key}.{unknown[0]}" if key else unknown[0]
            raise ConfigError(f"unknown config key {sub!r}; known keys here: {sorted(fields)}")
        kwargs = {}
        for fname in fields:
            sub = f"{key}.{fname}" if key else fname
            if fname in value:
                kwargs[fname] = _coerce(hints[fname], value[fname], sub)
        try:
            return tp(**kwargs)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config {name!r}: {e}") from None
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key {name!r} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"config key {name!r}: {value!r} fits none of {tp}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {name!r} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"config key {name!r} must have {len(args)} items, got {len(value)}")
            items = [_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {name!r} must be a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(kt, k, f"{key}.{k}"): _coerce(vt, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {name!r} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {name!r} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 5e-5 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {name!r} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {name!r} must be a string, got {value!r}")
        return value
    raise ConfigError(f"config key {name!r}: unsupported type {tp}")
