"""JPEG decode on the training device: torchvision.io.decode_jpeg over a batch of the beton's stored JPEGs
(nvJPEG on CUDA; libjpeg-turbo on the CPU), then every sample's RandomResizedCrop as one batched bilinear
grid_sample (core.data.resident's boxes and crop_resize, what data.resident runs), uint8 NHWC out, as the loader hands
to the device stage. The issue's third route for a GPU machine whose CPU decode is the limit; measured here
beside ffcv's CPU decode on the same bytes.

What it needs: every stored image of one size (the suite's are; one stacked batch), the JPEG bytes in host
memory (read once from the beton, `suite_data.stored_jpegs`). Not a loader:
no labels, no order, no resume; a figure to decide whether a decode-on-device loader is worth building.
torchvision 0.29 marks its image decoders deprecated in favour of TorchCodec (a DeprecationWarning on import);
they still work, and a loader built on this route should use TorchCodec's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.measure import check_epochs, load_average, time_epochs, versions
from benchmarks.suite_data import stored_jpegs

def measure_device_decode(data: str | Path, *, res: int, batch_size: int, epochs: int, device: str = "cpu",
                          scale: tuple[float, float] = (0.08, 1.0), seed: int = 0) -> dict[str, Any]:
    """Images/s of decode_jpeg on `device` + batched crop to `res` px over DIR/train.beton's JPEGs."""
    from torchvision.io import decode_jpeg

    from core.data.resident import crop_resize, draw_crop_boxes

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
            batch = torch.stack(images).permute(0, 2, 3, 1)  # (B, H, W, 3) uint8; one size (module docstring)
            b, height, width, _ = batch.shape
            sizes = torch.full((b,), height), torch.full((b,), width)
            boxes = draw_crop_boxes(*sizes, scale, generator)
            out = crop_resize(batch, torch.arange(b, device=dev), boxes, res)
            n += out.shape[0]
        return n

    timing = time_epochs(epoch, dev, epochs)
    return {"benchmark": "device_decode", **timing,
            "settings": {"data": str(data), "res": res, "batch_size": batch_size, "epochs": epochs,
                         "warmup_epochs": 1, "device": str(dev), "scale": list(scale), "seed": seed,
                         "decoder": "torchvision.io.decode_jpeg", "crop": "core.data.resident.crop_resize"},
            "versions": versions(), "load_average": {"before": load_before, "after": load_average()}}
