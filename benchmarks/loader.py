"""The project's loader alone: ffcv decode + crop on CPU threads, then the device stage (core.data.augment.GpuAugment).

`measure_loader` runs `epochs` epochs over DIR/train.beton and drops the first (numba compiles ffcv's pipeline,
torch.compile compiles the device stage, the page cache fills); the figure is the median images/s over the
others. Modes, from the full pipeline down to its parts:
  train   seeded RandomResizedCrop (core.data.seeded_crop) + GpuAugment (flip, normalise, cast, channels_last):
          exactly what `grainsweep train` consumes (on the CPU, uncompiled: core.data.cpu_stage.cpu_stage)
  val     centre crop 224/256 + GpuAugment (no flip)
  crop    train crops copied to the device, no device stage
  decode  ffcv's full-size decode only, no copy: the decode limit of ffcv on these cores. Images of one size:
          SimpleRGBImageDecoder (decoded straight into the batch). Images of mixed sizes, which that decoder
          refuses (a batch is one shape): ffcv's CenterCropRGBImageDecoder, the same full-size decode (ffcv
          never decodes at a reduced DCT scale) into a scratch image, then the centre square resized to `res`;
          `settings.decoder` says which ran
`measure_stage` times the device stage alone (ms a batch), the project's path against the eager reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.measure import check_epochs, load_average, summary, time_epochs, versions, wall_seconds

MODES = ("train", "val", "crop", "decode")
SCALE = (0.08, 1.0)  # RandomResizedCrop area range, torchvision's and ImageNet's default (same in the baseline)


def _device_stage(device: torch.device, compile: str, flip: bool):
    from core.data.augment import GpuAugment

    use_compile = compile == "always" or (compile == "auto" and device.type == "cuda")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # as `grainsweep train` (precision auto)
    return GpuAugment(device=device, dtype=dtype, flip=flip, compile=use_compile), use_compile


def measure_stage(*, res: int, batch_size: int, device: str = "cpu", runs: int = 5) -> dict[str, Any]:
    """Milliseconds a batch of the device stage alone (flip on, no mixing) on random uint8 crops: `GpuAugment` as
    `grainsweep train` builds it (CPU: eager, hence core.data.cpu_stage.cpu_stage; CUDA: compiled) and the eager
    reference `core.data.device_stage.device_stage`, on the same draws. Each is called once first (numba,
    torch.compile)."""
    from core.data.device_stage import device_stage

    dev = torch.device(device)
    augment, compiled = _device_stage(dev, "auto", flip=True)
    images = torch.randint(0, 256, (batch_size, res, res, 3), dtype=torch.uint8, device=dev)
    draws = augment.draw(batch_size)

    def project() -> None:
        augment(images, None, draws)

    def reference() -> None:
        device_stage(images, [], draws, augment.mean255, augment.inv_std255, dtype=augment.dtype, flip=True,
                     mixing=False)

    out: dict[str, Any] = {"res": res, "batch_size": batch_size, "device": str(dev), "compiled": compiled,
                           "stage": type(augment.stage).__name__ if compiled else augment.stage.__name__}
    for name, fn in (("project_ms", project), ("reference_ms", reference)):
        fn()
        out[name] = summary([1000 * wall_seconds(fn, dev)[0] for _ in range(runs)])
    return out


def one_image_size(path: Path, column: str = "image") -> bool:
    """Whether every image of the beton has the same height and width (read from ffcv's metadata table)."""
    from core.format.beton_file import open_beton

    reader = open_beton(path)
    names = list(reader.field_names)
    if column not in names:
        raise ValueError(f"{path}: no {column!r} column (columns {names})")
    meta = reader.metadata[f"f{names.index(column)}"]
    return len(meta) == 0 or (len(set(meta["height"].tolist())) == 1 and len(set(meta["width"].tolist())) == 1)


def _decode_only_epochs(path: Path, batch_size: int, workers: int, seed: int, res: int):
    from ffcv.fields.rgb_image import CenterCropRGBImageDecoder, SimpleRGBImageDecoder
    from ffcv.loader import OrderOption
    from ffcv.transforms import ToTensor

    from core.format.beton_file import beton_columns
    from core.data.ffcv_loader import GuardedLoader

    pipelines: dict[str, Any] = {c: None for c in beton_columns(path)}
    # ratio 1: the centre square of the short side, the most of each image a square batch can hold
    decoder = SimpleRGBImageDecoder() if one_image_size(path) else CenterCropRGBImageDecoder((res, res), ratio=1.0)
    pipelines["image"] = [decoder, ToTensor()]
    # ffcv's Loader and decoder as they are; the guard only ends an epoch on a worker error instead of hanging
    loader = GuardedLoader(str(path), batch_size=batch_size, num_workers=workers, os_cache=True,
                           order=OrderOption.RANDOM, seed=seed, pipelines=pipelines, drop_last=True)

    def epoch() -> int:
        n = 0
        for (images,) in loader:
            n += images.shape[0]
        return n

    return epoch, type(decoder).__name__


def _loader_epochs(path: Path, level: str, mode: str, res: int, batch_size: int, workers: int, seed: int,
                   device: torch.device, compile: str) -> tuple[Any, bool]:
    from core.data.loader import build_loader
    from core.data.source import GpuBatches

    loader = build_loader(path, split="val" if mode == "val" else "train", batch_size=batch_size,
                          num_workers=workers, levels=[level], resolution=res,
                          order="sequential" if mode == "val" else "random", os_cache=True, distributed=False,
                          drop_last=True, seed=seed, device=device, scale=SCALE)
    if mode == "crop":
        def epoch() -> int:
            n = 0
            for batch in loader:
                n += batch.images.shape[0]
            return n
        return epoch, False
    augment, compiled = _device_stage(device, compile, flip=mode == "train")

    def epoch() -> int:
        n = 0
        for x, _targets, _extras in GpuBatches(loader, augment):
            n += x.shape[0]
        return n
    return epoch, compiled


def measure_loader(data: str | Path, *, res: int, workers: int, batch_size: int, epochs: int,
                   device: str = "cpu", mode: str = "train", compile: str = "auto", seed: int = 0) -> dict[str, Any]:
    """Images/s of the project's loader over DIR/train.beton; the first of `epochs` epochs is not counted."""
    from core.format import hierarchy as hlib

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    check_epochs(epochs)
    data = Path(data)
    path = data / "train.beton"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available")
    level = hlib.load(data).names[0]
    load_before = load_average()
    if mode == "decode":
        (epoch, decoder), compiled = _decode_only_epochs(path, batch_size, workers, seed, res), False
    else:
        epoch, compiled = _loader_epochs(path, level, mode, res, batch_size, workers, seed, dev, compile)
        decoder = "SeededRandomResizedCrop" if mode in ("train", "crop") else "ScaledCenterCrop"

    timing = time_epochs(epoch, dev, epochs)  # the first epoch (compiles, page cache) is not counted
    return {"benchmark": "loader", **timing,
            "settings": {"data": str(data), "mode": mode,
                         "res": None if decoder == "SimpleRGBImageDecoder" else res, "decoder": decoder,
                         "workers": workers, "batch_size": batch_size, "epochs": epochs, "warmup_epochs": 1,
                         "device": str(dev), "compiled_device_stage": compiled, "scale": list(SCALE),
                         "os_cache": True, "seed": seed},
            "versions": versions(), "load_average": {"before": load_before, "after": load_average()}}
