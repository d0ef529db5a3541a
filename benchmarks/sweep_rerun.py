"""HOOK, NOT MEASURED YET: rerun of a finished sweep, and warm vs cold torch.compile cache.

TODO(sweep): the sweep driver (launch/sweep.py, launch/plan.py, ...) is being written right now by someone
else; once its interface is settled this module should
  1. run a tiny sweep to completion (local executor) into a folder,
  2. time the same sweep command again: every run has result.json, so it should return in about the time of
     planning alone (report seconds; target: seconds, not minutes);
  3. time the first training step of one run with an empty TORCHINDUCTOR_CACHE_DIR (cold) and again with the
     cache the first run filled (warm), in fresh processes, and report both (field notes: about 18 s cold and
     4-5 s warm for the device stage on CPU here; torch.compiler.save/load_cache_artifacts for other machines).
`benchmarks.run` calls `measure_sweep_rerun` and prints its status in RESULTS.md, so the hook stays visible.
"""

from __future__ import annotations

from typing import Any


def measure_sweep_rerun(**_settings: Any) -> dict[str, Any]:
    return {"benchmark": "sweep_rerun", "status": "todo",
            "note": "not measured: waits for the sweep driver in launch/ (being written); see "
                    "benchmarks/sweep_rerun.py for the plan (rerun of a finished sweep, warm vs cold compile cache)"}
