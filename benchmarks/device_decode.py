"""JPEG decode on the training device: torchvision.io.decode_jpeg over a batch of the beton's stored JPEGs
(nvJPEG on CUDA; libjpeg-turbo on the CPU), then every sample's RandomResizedCrop as one batched
torchvision.ops.roi_align (bilinear, one box per sample), uint8 NHWC out, as the loader hands to the device
stage. The issue's third route for a GPU machine whose CPU decode is the limit; measured here beside ffcv's
CPU decode on the same bytes.

What it needs: every stored image of one size (the suite's are; roi_align takes one stacked batch), the JPEG
bytes in host memory (read once from the beton, `suite_data.stored_jpegs`), boxes drawn as torchvision draws
them (area fraction `scale`, log-uniform aspect in (3/4, 4/3), ten tries then the whole image). Not a loader:
no labels, no order, no resume; a figure to decide whether a decode-on-device loader is worth building.
torchvision 0.29 marks its image decoders deprecated in favour of TorchCodec (a DeprecationWarning on import);
they still work, and a loader built on this route should use TorchCodec's.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from benchmarks.measure import check_epochs, load_average, time_epochs, versions
from benchmarks.suite_data import stored_jpegs

RATIO = (3 / 4, 4 / 3)


def crop_boxes(n: int, height: int, width: int, scale: tuple[float, float], generator: torch.Generator
               ) -> torch.Tensor:
    """(n, 4) float boxes x0, y0, x1, y1 in pixels: torchvision's RandomResizedCrop draw, vectorised."""
    tries = 10
    area = height * width * torch.empty(n, tries).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(n, tries).uniform_(math.log(RATIO[0]), math.log(RATIO[1]), generator=generator)
    aspect = torch.exp(log_ratio)
    w = torch.sqrt(area * aspect).round()
    h = torch.sqrt(area / aspect).round()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    rows = torch.arange(n)
    w = torch.where(first >= 0, w[rows, first.clamp(min=0)], torch.full((n,), float(width)))
    h = torch.where(first >= 0, h[rows, first.clamp(min=0)], torch.full((n,), float(height)))
    x0 = torch.floor(torch.rand(n, generator=generator) * (width - w + 1))
    y0 = torch.floor(torch.rand(n, generator=generator) * (height - h + 1))
    return torch.stack([x0, y0, x0 + w, y0 + h], 1)


def measure_device_decode(data: str | Path, *, res: int, batch_size: int, epochs: int, device: str = "cpu",
                          scale: tuple[float, float] = (0.08, 1.0), seed: int = 0) -> dict[str, Any]:
    """Images/s of decode_jpeg on `device` + batched crop to `res` px over DIR/train.beton's JPEGs."""
    from torchvision.io import decode_jpeg
    from torchvision.ops import roi_align

    check_epochs(epochs)
    dev = torch.device(device)
    jpegs, _ = stored_jpegs(Path(data) / "train.beton")
    encoded = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in jpegs]
    generator = torch.Generator().manual_seed(seed)
    load_before = load_average()

    def epoch() -> int:
        n = 0
        for start in range(0, len(encoded) - batch_size + 1, batch_size):  # drop_last, as training loaders
            images = decode_jpeg(encoded[start:start + batch_size], device=dev)
            batch = torch.stack(images)  # (B, 3, H, W) uint8; one size (see the module docstring)
            b, _, height, width = batch.shape
            boxes = crop_boxes(b, height, width, scale, generator)
            rois = torch.cat([torch.arange(b, dtype=torch.float32)[:, None], boxes], 1).to(dev)
            crops = roi_align(batch.float(), rois, output_size=(res, res), spatial_scale=1.0, sampling_ratio=2,
                              aligned=True)
            out = crops.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # NHWC, as the loader
            n += out.shape[0]
        return n

    timing = time_epochs(epoch, dev, epochs)
    return {"benchmark": "device_decode", **timing,
            "settings": {"data": str(data), "res": res, "batch_size": batch_size, "epochs": epochs,
                         "warmup_epochs": 1, "device": str(dev), "scale": list(scale), "seed": seed,
                         "decoder": "torchvision.io.decode_jpeg", "crop": "torchvision.ops.roi_align"},
            "versions": versions(), "load_average": {"before": load_before, "after": load_average()}}
