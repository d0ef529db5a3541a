"""Conversion speed: `grainsweep convert csv` over the suite's JPEG folder (real files in, betons out).

Each run rewrites the dataset into a fresh folder (`force=True`) and reports three rates from
data_tools.convert_source's own timers: the decoding pre-pass (every file decoded once to find rejects), the
beton writer (decode, downscale to write.max_resolution, JPEG encode, write), and the whole command (also
listing, hashing and publishing). The first run is dropped when there are several (imports, page cache).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.measure import load_average, summary, versions


def measure_conversion(manifest: str | Path, *, workers: int, runs: int, max_resolution: int = 256
                       ) -> dict[str, Any]:
    from data_tools import convert_source

    cfg = convert_source.load_config("csv", None, [f"convert.workers={workers}",
                                                   f"write.max_resolution={max_resolution}"])
    load_before = load_average()
    check, write, overall, images = [], [], [], 0
    with tempfile.TemporaryDirectory(prefix="grainsweep-bench-convert-") as tmp:
        for r in range(runs):
            out = Path(tmp) / f"run{r}"
            t0 = time.perf_counter()
            res = convert_source.convert("csv", manifest, out, cfg, force=True, log=lambda _msg: None)
            total = time.perf_counter() - t0
            images = sum(res.counts.values())
            if runs == 1 or r > 0:
                check.append(images / res.check_seconds)
                write.append(images / res.write_seconds)
                overall.append(images / total)
            shutil.rmtree(out, ignore_errors=True)
    o = summary(overall)
    return {"benchmark": "conversion", "images_per_second": o["median"], "overall": o,
            "check_pass": summary(check), "write_pass": summary(write), "images": images,
            "settings": {"manifest": str(manifest), "kind": "csv", "workers": workers, "runs": runs,
                         "warmup_runs": 0 if runs == 1 else 1, "write_mode": cfg.write.write_mode,
                         "max_resolution": max_resolution, "jpeg_quality": cfg.write.jpeg_quality},
            "versions": versions(), "load_average": {"before": load_before, "after": load_average()}}
