"""The decode limit: JPEG decode alone, on the same cores and the same bytes the loader decodes.

`measure_cv2_decode` decodes every stored JPEG of DIR/train.beton with OpenCV's `cv2.imdecode` (libjpeg-turbo
in the opencv-python wheels), `workers` threads each taking an equal slice (OpenCV releases the GIL while it
decodes). No crop, no resize, no copy into a batch: an upper bound for any CPU pipeline on these cores. The
first pass is dropped (page cache, thread start). ffcv's own decode-only figure is `benchmarks.loader` in mode
'decode' (SimpleRGBImageDecoder).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.measure import load_average, summary, versions
from benchmarks.suite_data import stored_jpegs


def measure_cv2_decode(data: str | Path, *, workers: int, passes: int) -> dict[str, Any]:
    """Images/s of cv2.imdecode over DIR/train.beton's JPEGs with `workers` threads; pass 1 is not counted."""
    import cv2

    if passes < 2:
        raise ValueError(f"passes must be >= 2 (the first is warm-up and not counted), got {passes}")
    jpegs, _ = stored_jpegs(Path(data) / "train.beton")
    buffers = [np.frombuffer(b, dtype=np.uint8) for b in jpegs]
    slices = [buffers[i::workers] for i in range(workers)]

    def decode(part: list[np.ndarray]) -> int:
        for buf in part:
            if cv2.imdecode(buf, cv2.IMREAD_COLOR) is None:
                raise ValueError("cv2.imdecode could not decode a stored JPEG")
        return len(part)

    load_before = load_average()
    rates = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for p in range(passes):
            t0 = time.perf_counter()
            n = sum(pool.map(decode, slices))
            dt = time.perf_counter() - t0
            if p > 0:
                rates.append(n / dt)
    stats = summary(rates)
    return {"benchmark": "cv2_decode", "images_per_second": stats["median"], "images_per_second_stats": stats,
            "images_per_pass": len(buffers), "mean_jpeg_bytes": float(np.mean([len(b) for b in jpegs])),
            "settings": {"data": str(data), "workers": workers, "passes": passes, "warmup_passes": 1,
                         "threads": "ThreadPoolExecutor", "cv2_threads": cv2.getNumThreads()},
            "versions": versions(), "load_average": {"before": load_before, "after": load_average()}}
