"""`grainsweep convert synthetic`: the embedded default dataset, written to DIR/{train,val}.beton + hierarchy.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.format import config as cfglib
from core.format import provenance
from core.format.hierarchy import FILENAME as HIERARCHY_FILE
from data_tools import beton, publish, synthetic

PRESETS_DIR = Path(__file__).parent / "presets"


@dataclass(frozen=True)
class SyntheticConvertConfig:
    synthetic: synthetic.SyntheticConfig = field(default_factory=synthetic.SyntheticConfig)
    write: beton.WriteOptions = field(default_factory=beton.WriteOptions)
    workers: int = 2  # writer processes (does not change the output)


def presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def preset(name: str) -> dict:
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise cfglib.ConfigError(f"unknown preset {name!r}; available: {presets()}")
    return cfglib.read_yaml(path)


def load_config(preset_name: str | None, file: str | None, overrides: list[str]) -> SyntheticConvertConfig:
    base = preset(preset_name) if preset_name else None
    return cfglib.load(SyntheticConvertConfig, file, overrides, base=base)


def convert(out_dir: str | Path, cfg: SyntheticConvertConfig, force: bool = False) -> tuple[Path, bool]:
    """Writes the dataset unless an identical one is already there. Returns (folder, whether it was built)."""
    inputs = {"kind": "synthetic", "generator_version": synthetic.GENERATOR_VERSION,
              "synthetic": cfglib.to_dict(cfg.synthetic), "write": cfglib.to_dict(cfg.write)}

    def build(staging: Path) -> dict:
        hierarchy, splits = synthetic.build(cfg.synthetic)
        hierarchy.save(staging / HIERARCHY_FILE)
        counts = {}
        for name, split in splits.items():
            tmp = staging / f".{name}.beton.tmp"
            counts[name] = beton.write_split(tmp, split, hierarchy, cfg.write, workers=cfg.workers,
                                             desc=f"synthetic {name}")
            tmp.rename(staging / f"{name}.beton")
        provenance.record(staging, cfg)
        return {"kind": "synthetic", "splits": counts,
                "columns": beton.columns(hierarchy, synthetic.SyntheticSplit.extra_columns),
                "levels": {lv.name: lv.num_classes for lv in hierarchy.levels}}

    return publish.publish(out_dir, inputs, build, force=force)
