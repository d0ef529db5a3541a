"""The suite's data: one synthetic beton of JPEGs, and the very same JPEG files as a torchvision ImageFolder.

`synthetic_beton` converts the 'large' preset's tree (4 x 6 x 6 = 144 leaves) at a bigger image size with JPEG
storage, through the real converter (`grainsweep convert synthetic --preset large --set
synthetic.image_size=256 --set write.write_mode=jpg ...`); a rerun with the same settings reuses the folder.
`jpeg_folder` copies each train sample's stored JPEG bytes out of the beton (the allocation table gives each
sample's offset and size: core.format.beton_file.allocation_sizes), so the baseline decodes byte-for-byte the files
ffcv decodes: the comparison is between pipelines, not between encoders. It also writes a CSV manifest of those
files (`grainsweep convert csv` reads it in the conversion benchmark).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

JPG_MODE = 0  # ffcv IMAGE_MODES['jpg']


@dataclass(frozen=True)
class SuiteData:
    beton_dir: Path  # train.beton, val.beton, hierarchy.json
    image_folder: Path  # <finest class>/<index>.jpg, torchvision ImageFolder layout
    manifest: Path  # CSV manifest of image_folder for `grainsweep convert csv`
    train_images: int
    image_size: int
    convert_seconds: float | None  # synthetic render + write, None when an identical folder was reused


def synthetic_overrides(image_size: int, train_per_leaf: int, quality: int = 90) -> list[str]:
    return [f"synthetic.image_size={image_size}", f"synthetic.train_per_leaf={train_per_leaf}",
            "synthetic.val_per_leaf=1", "write.write_mode=jpg", f"write.max_resolution={image_size}",
            f"write.jpeg_quality={quality}"]


def synthetic_beton(out: Path, *, preset: str, image_size: int, train_per_leaf: int,
                    workers: int) -> tuple[Path, float | None]:
    from data_tools import convert_synthetic

    cfg = convert_synthetic.load_config(preset, None, [*synthetic_overrides(image_size, train_per_leaf),
                                                       f"workers={workers}"])
    t0 = time.perf_counter()
    path, built = convert_synthetic.convert(out, cfg)
    return path, (time.perf_counter() - t0) if built else None


def stored_jpegs(beton: Path) -> tuple[list[bytes], dict[str, np.ndarray]]:
    """Every sample's stored JPEG bytes, in row order, and the beton's metadata columns by name."""
    from ffcv.reader import Reader

    from core.format.beton_file import allocation_sizes

    reader = Reader(str(beton))
    # ffcv names the metadata table's fields f0, f1, ... in column order
    meta = {name: reader.metadata[f"f{i}"] for i, name in enumerate(reader.field_names)}
    images = meta["image"]
    if np.any(images["mode"] != JPG_MODE):
        raise ValueError(f"{beton}: not every image is stored as JPEG (write.write_mode=jpg)")
    sizes = allocation_sizes(beton, reader, images["data_ptr"]).tolist()
    raw = np.memmap(beton, dtype=np.uint8, mode="r")
    out = [bytes(raw[ptr:ptr + size]) for ptr, size in zip(images["data_ptr"].tolist(), sizes)]
    return out, meta


def jpeg_folder(beton_dir: Path, out: Path) -> tuple[Path, Path, int]:
    """Writes train.beton's JPEGs as out/<finest class>/<row>.jpg and out/train.csv; skipped when complete."""
    from core.format import hierarchy as hlib

    levels = hlib.load(beton_dir).names
    manifest = out / "train.csv"
    done = out / ".complete"
    if done.is_file() and done.read_text() == str((beton_dir / "train.beton").stat().st_mtime_ns):
        n = sum(1 for _ in open(manifest)) - 1
        return out, manifest, n
    jpegs, meta = stored_jpegs(beton_dir / "train.beton")
    rows = []
    for i, data in enumerate(jpegs):
        labels = [int(meta[lv][i]) for lv in levels]
        rel = Path(f"{levels[0]}{labels[0]:04d}") / f"{i:06d}.jpg"
        (out / rel.parent).mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
        rows.append([rel.as_posix(), *(f"{lv}{v:04d}" for lv, v in zip(levels, labels))])
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", *levels])
        w.writerows(rows)
    done.write_text(str((beton_dir / "train.beton").stat().st_mtime_ns))
    return out, manifest, len(rows)


def build(root: Path, *, preset: str, image_size: int, train_per_leaf: int, workers: int) -> SuiteData:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"{preset}-{image_size}px-{train_per_leaf}perleaf"
    beton_dir, seconds = synthetic_beton(root / name, preset=preset, image_size=image_size,
                                         train_per_leaf=train_per_leaf, workers=workers)
    folder, manifest, n = jpeg_folder(beton_dir, root / f"{name}-imagefolder")
    return SuiteData(beton_dir, folder, manifest, n, image_size, seconds)
