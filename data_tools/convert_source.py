"""`grainsweep convert KIND SRC`: a real dataset (imagenet, inat2021, cifar100, csv) -> DIR/{train,val}.beton.

Steps: read the source (hierarchy, rows; malformed input and non-nesting levels are refused here, before anything
is written) -> fingerprint the listing and options (convert once) -> decode every image once in a process pool
(the pre-pass) -> refuse if there are more rejects than `max_rejects` -> write the betons from the good rows only
(ffcv's writer never sees a bad sample) -> publish the folder atomically.

Every source row ends up either in a beton or in the rejects list (split, path, reason). When the rejects are
too many, nothing is published and the list is written beside the output as `DIR.rejects.csv`; when they are
allowed, it lands in `DIR/rejects.csv`. A beton row's `index` is its position in the source split (rejected
rows leave gaps), and `DIR/{split}_paths.txt` holds, on line i, the source path of row i of the source split.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from core.format import config as cfglib
from core.format import provenance
from core.format.hierarchy import FILENAME as HIERARCHY_FILE
from data_tools import beton, images, publish
from data_tools.sources import SOURCES
from data_tools.sources.catalog import Catalog, SplitRows

REJECTS_FILE = "rejects.csv"
SHOWN_REJECTS = 5  # rejects quoted in the error message
CONVERTER_VERSION = 1  # bump when the same inputs would give different betons


class Reject(NamedTuple):
    split: str
    row: int  # position in the source split
    path: str
    reason: str


class RejectsError(RuntimeError):
    """More rejected rows than allowed; the message lists the first few and where the full list is."""


@dataclass(frozen=True)
class ConvertOptions:
    workers: int = 2  # processes for the decoding pre-pass and for the writer (does not change the output)
    max_rejects: int = 0  # rows allowed to be rejected; more fails the conversion and publishes nothing

    def __post_init__(self) -> None:
        if self.workers < 1 or self.max_rejects < 0:
            raise ValueError(f"workers must be >= 1 and max_rejects >= 0, got {self.workers}, {self.max_rejects}")


def config_class(kind: str) -> type:
    """The frozen config schema of one kind: {kind: its Options, write: WriteOptions, convert: ConvertOptions}."""
    module = _module(kind)
    return dataclasses.make_dataclass(
        f"{kind.capitalize()}ConvertConfig",
        [(kind, module.Options, field(default_factory=module.Options)),
         ("write", beton.WriteOptions, field(default_factory=lambda: module.WRITE)),
         ("convert", ConvertOptions, field(default_factory=ConvertOptions))],
        frozen=True)


def load_config(kind: str, file: str | None = None, overrides: list[str] | tuple[str, ...] = ()):
    return cfglib.load(config_class(kind), file, list(overrides))


@dataclass
class Result:
    out: Path
    built: bool
    counts: dict[str, int] = field(default_factory=dict)  # samples written per split
    rejects: int = 0
    check_seconds: float = 0.0
    write_seconds: float = 0.0


def convert(kind: str, src: str | Path, out_dir: str | Path, cfg, force: bool = False,
            log: Callable[[str], None] = print) -> Result:
    """Converts `src` unless an identical conversion is already in `out_dir`."""
    module = _module(kind)
    src = Path(src).resolve()
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    opts = getattr(cfg, kind)
    catalog = module.scan(src, opts)  # refuses bad structure, unknown classes, non-nesting levels
    for note in catalog.notes:
        log(f"note: {note}")
    inputs = {"kind": kind, "converter_version": CONVERTER_VERSION, "source": str(src),
              "listing": catalog.fingerprint, kind: cfglib.to_dict(opts), "write": cfglib.to_dict(cfg.write)}
    result = Result(out=Path(out_dir).resolve(), built=False)
    beside = result.out.with_name(result.out.name + ".rejects.csv")

    def build(staging: Path) -> dict:
        # pre-pass: decode everything once, in parallel, before the writer starts
        rejects, result.check_seconds = find_rejects(catalog, cfg.write.max_resolution, cfg.convert.workers)
        total = sum(len(s) for s in catalog.splits.values())
        log(f"checked {total} rows in {result.check_seconds:.1f} s "
            f"({total / max(result.check_seconds, 1e-9):.0f} img/s): {len(rejects)} rejected")
        if len(rejects) > cfg.convert.max_rejects:
            write_rejects(beside, rejects)
            shown = "; ".join(f"{r.split} {r.path}: {r.reason}" for r in rejects[:SHOWN_REJECTS])
            raise RejectsError(
                f"{len(rejects)} of {total} rows rejected, more than --max-rejects {cfg.convert.max_rejects}; "
                f"nothing was written. First {min(len(rejects), SHOWN_REJECTS)}: {shown}. All of them: {beside}")
        beside.unlink(missing_ok=True)  # a list from an earlier failed attempt is stale now
        if rejects:
            write_rejects(staging / REJECTS_FILE, rejects)
        result.rejects = len(rejects)
        bad = {(r.split, r.row) for r in rejects}

        # write the good rows of each split
        catalog.hierarchy.save(staging / HIERARCHY_FILE)
        import ffcv.writer  # noqa: F401 - seconds of torch/numba imports, kept out of the img/s figure
        t0 = time.perf_counter()
        for name, rows in catalog.splits.items():
            keep = [i for i in range(len(rows)) if (name, i) not in bad]
            if not keep:
                continue
            (staging / f"{name}_paths.txt").write_text("".join(ref + "\n" for ref in rows.refs))
            tmp = staging / f".{name}.beton.tmp"
            result.counts[name] = beton.write_split(
                tmp, RowsSplit(catalog.root, rows, keep, cfg.write.max_resolution), catalog.hierarchy, cfg.write,
                workers=cfg.convert.workers, desc=f"{kind} {name}")
            tmp.rename(staging / f"{name}.beton")
        result.write_seconds = time.perf_counter() - t0
        if "train" not in result.counts:
            raise RejectsError(f"{src}: no train sample survived the checks")
        provenance.record(staging, cfg)
        return {"kind": kind, "splits": result.counts, "rejects": len(rejects),
                "columns": beton.columns(catalog.hierarchy, ()), "notes": catalog.notes,
                "levels": {lv.name: lv.num_classes for lv in catalog.hierarchy.levels}}

    t0 = time.perf_counter()
    result.out, result.built = publish.publish(out_dir, inputs, build, force=force)
    if result.built:
        n = sum(result.counts.values())
        log(f"wrote {n} images in {result.write_seconds:.1f} s ({n / max(result.write_seconds, 1e-9):.0f} img/s); "
            f"{n / (time.perf_counter() - t0):.0f} img/s overall")
    return result


def find_rejects(catalog: Catalog, max_side: int, workers: int) -> tuple[list[Reject], float]:
    """Every row that cannot be written, in source order, and the seconds the decoding pre-pass took."""
    early, todo = [], []
    for name, rows in catalog.splits.items():
        for i, ref in enumerate(rows.refs):
            if i in rows.early_rejects:
                early.append(Reject(name, i, ref, rows.early_rejects[i]))
            elif rows.images is None:  # decoded pixels (CIFAR) need no check
                todo.append((name, i, ref))
    reasons, seconds = images.check_all([catalog.root / ref for _, _, ref in todo], max_side, workers)
    found = early + [Reject(n, i, ref, why) for (n, i, ref), why in zip(todo, reasons) if why is not None]
    split_order = {name: k for k, name in enumerate(catalog.splits)}
    return sorted(found, key=lambda r: (split_order[r.split], r.row)), seconds


def write_rejects(path: Path, rejects: list[Reject]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["split", "path", "reason"])
    w.writerows((r.split, r.path, r.reason) for r in rejects)
    provenance.write_atomic(path, buf.getvalue())


class RowsSplit:
    """The good rows of a split for beton.write_split: item i is (RGB array, leaf index, {})."""

    extra_columns: tuple[str, ...] = ()

    def __init__(self, root: Path, rows: SplitRows, keep: list[int], max_side: int):
        self.root, self.rows, self.keep, self.max_side = root, rows, np.asarray(keep, dtype=np.int64), max_side

    def __len__(self) -> int:
        return len(self.keep)

    def source_index(self, i: int) -> int:
        return int(self.keep[i])

    def __getitem__(self, i: int) -> tuple[np.ndarray, int, dict]:
        j = int(self.keep[i])
        if self.rows.images is not None:
            image = self.rows.images[j]
        else:
            image = images.load(self.root / self.rows.refs[j], self.max_side)
        return image, int(self.rows.leaves[j]), {}


def _module(kind: str):
    if kind not in SOURCES:
        raise cfglib.ConfigError(f"unknown source kind {kind!r}; choose one of {sorted(SOURCES)}")
    return SOURCES[kind]
