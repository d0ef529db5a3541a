"""The loader over the same images stored another way: raw pixels, or ffcv's 'proportion' mix (half the images
JPEG q90, half raw: the storage of ffcv's own ImageNet recipe). Conversion is once per storage mode, through the
real converter (`grainsweep convert csv` of the suite's JPEG folder with `write.write_mode=raw|proportion`), into
DATA_ROOT/<suite data>-<mode>; a rerun with the same settings reuses the folder.

The images are the suite's JPEGs decoded once (raw) or re-encoded at the same quality (proportion), so every
pipeline sees the same picture; what changes is the work per sample (a memcpy instead of a JPEG decode) and the
bytes read (256 px RGB raw = 192 KiB a sample against ~27 KiB of JPEG), which is what raw storage trades.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import loader

MODES = ("raw", "proportion")


def storage_dataset(manifest: Path, out: Path, *, mode: str, max_resolution: int, workers: int) -> Path:
    """The suite's JPEG folder converted with write.write_mode=`mode` (ffcv's compress_probability 0.5 for
    'proportion'); reused when an identical conversion is already in `out`."""
    from data_tools import convert_source

    if mode not in MODES:
        raise ValueError(f"storage mode must be one of {MODES}, got {mode!r}")
    cfg = convert_source.load_config("csv", None, [f"convert.workers={workers}", f"write.write_mode={mode}",
                                                   f"write.max_resolution={max_resolution}",
                                                   "write.compress_probability=0.5"])
    return convert_source.convert("csv", manifest, out, cfg, log=lambda _msg: None).out


def measure_storage(manifest: Path, base: Path, *, resolutions: tuple[int, ...], max_resolution: int,
                    workers: int, batch_size: int, epochs: int, device: str, log=print) -> list[dict[str, Any]]:
    """For each storage mode and crop size: the loader with its device stage ('train') and without ('crop')."""
    rows = []
    for mode in MODES:
        data = storage_dataset(manifest, base.with_name(f"{base.name}-{mode}"), mode=mode,
                               max_resolution=max_resolution, workers=workers)
        size_mib = (data / "train.beton").stat().st_size / 2**20
        for res in resolutions:
            log(f"loader on {mode} storage at {res} px")
            common = dict(res=res, workers=workers, batch_size=batch_size, epochs=epochs, device=device)
            rows.append({"storage": mode, "res": res, "beton_mib": size_mib,
                         "loader": loader.measure_loader(data, mode="train", **common),
                         "loader_crop": loader.measure_loader(data, mode="crop", **common)})
    return rows
