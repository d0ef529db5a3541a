"""The RESULTS.md writer: benchmarks/results.json (the suite's raw figures) -> Markdown, the machine and versions
first, then one table a benchmark (benchmarks/report_tables.py) and how to run the suite on the lent GPU."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks import report_tables as tables

# benchmark -> its table, in the report's order (benchmarks.profiles.BENCHMARKS names the same benchmarks)
TABLES: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "loader_vs_torchvision": tables.loader_table,
    "storage": tables.storage_table,
    "decode_limit": tables.decode_limit_table,
    "train_step": tables.train_step_table,
    "conversion": tables.conversion_table,
    "sweep_rerun": tables.sweep_rerun_table,
    "distributed": tables.distributed_table,
    "fused": tables.fused_table,
}


def _all_loads(node: Any) -> list[float]:
    """Every 1-min load average recorded anywhere in the results."""
    if isinstance(node, dict):
        found = []
        for k, v in node.items():
            if k in ("load_average_start", "load_average_end", "before", "after") and isinstance(v, list) and v:
                found.append(float(v[0]))
            else:
                found += _all_loads(v)
        return found
    if isinstance(node, list):
        return [x for v in node for x in _all_loads(v)]
    return []


def render(results: dict[str, Any], command: str, quick: bool) -> str:
    """RESULTS.md from the suite's results: the machine and versions, then one table a benchmark that ran."""
    m, v = results["machine"], results["versions"]
    cuda = results["device"].startswith("cuda")
    out = ["# Benchmark results", ""]
    if quick:
        out += ["**Quick mode** (tiny sizes, one repetition): these figures check that the suite runs; they "
                "measure nothing worth quoting.", ""]
    loads = _all_loads(results)
    if loads and max(loads) > m["cores_usable"]:
        out += [f"**Caveat: measured on a shared machine.** The 1-min load average reached {max(loads):.1f} on "
                f"{m['cores_usable']} usable cores (other jobs were running), so absolute figures are noisy and "
                "low; ratios of pipelines measured side by side in the same minutes are the more meaningful "
                "numbers. Rerun on an idle machine before quoting any figure.", ""]
    out += [f"Command: `{command}`  ",
            f"Suite time: {results['suite_seconds']:.0f} s. Load average (1 min) at start "
            f"{results['load_average_start'][:1]}, at end {results['load_average_end'][:1]}; "
            f"{m['cores_usable']} usable cores. Each figure lists the 1-min load average before / after it.", "",
            "## Machine and versions", "",
            f"- CPU: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), RAM {m['ram_gib']} GiB; "
            f"torch intra-op threads {m['torch_threads']}",
            f"- GPU: {m['gpu']}; benchmark device: `{results['device']}`; loader workers: {results['workers']}",
            f"- OS: {m['os']}",
            "- " + ", ".join(f"{k} {val}" for k, val in v.items()), "",
            "Figures are medians over the measured runs (epochs, or passes), with min-max and the number of runs "
            "in brackets; the first epoch of every loader (numba, torch.compile, page cache) is never counted.",
            ""]
    d = results["data"]
    out += [f"Data: {d['train_images']:,} train images of {d['image_size']} px stored as JPEG q90 in "
            f"`{d['beton_dir']}`; the same JPEG bytes as files in `{d['image_folder']}`.", ""]

    for name, table in TABLES.items():
        if name in results:
            out += table(results)

    out += ["## How to run on the lent GPU", "",
            "The device tool copies the working tree plus the carried `.gpu-bundle` (made by "
            "`/work/shared/device/make-gpu-bundle.sh`). One command on the GPU machine, from the repository root, "
            "runs every GPU row in under 10 minutes (the device tool's limit a command) and writes them into the "
            "GPU section at the end of this file, keeping the CPU figures:", "",
            "```bash",
            "source .gpu-bundle/activate && python -m benchmarks.gpu_all --results $OUT/RESULTS.md "
            "--json $OUT/results-gpu.json", "```", "",
            "Its steps (benchmarks/gpu_all.py): the suite's synthetic data made on the machine, the loader rows and "
            "the decode limit (JPEG decode on the GPU included), the training-step rows (bf16, channels_last, "
            "torch.compile), `grainsweep train --nproc 1` on nccl, fused vs separate pretraining, then the other "
            "storage; each under its own time cap (killed there, the other steps' figures kept), with half the "
            "`cuda` profile's data and fewer repetitions (profile `gpu10`). Its dry run on the CPU: `python -m "
            "benchmarks.gpu_all --device cpu --tiny --results R.md --json r.json`.", "",
            "The full `cuda` profile: `python -m benchmarks.run --device cuda`. This uses the `cuda` profile (9,216 images at 256 px, batch 256, all cores as loader workers, bf16 "
            "and torch.compile as in `grainsweep train`), rebuilds the data under `data/bench/` (a few minutes "
            "on 16 cores) and rewrites this file; bring it back through `$OUT` "
            "(`... --results $OUT/RESULTS.md --json $OUT/results.json`). Under the device tool's 10-minute limit "
            "per command, run it in parts that add up in one report, keeping the raw figures in the ignored "
            "`data/bench/` (kept between calls on a warm machine): first `--only "
            "loader_vs_torchvision,decode_limit,conversion --json data/bench/results-cuda.json --results "
            "$OUT/RESULTS.md`, then `--only storage --merge`, `--only train_step --merge` and `--only sweep_rerun "
            "--merge` with the same two paths, and copy `data/bench/results-cuda.json` to `$OUT`. The routes for "
            "a CPU-bound GPU machine are all in that run: raw storage (storage), the device-resident data set "
            "(train_step's data.resident row) and JPEG decode on the GPU (decode_limit's decode_jpeg row). "
            "One loader figure alone: "
            "`grainsweep bench loader --data data/bench/large-256px-64perleaf --res 224 --workers 16 "
            "--batch-size 256 --epochs 5 --device cuda`.", ""]
    if not cuda:  # the section benchmarks/gpu_all.py fills (benchmarks.run keeps a filled one when rewriting)
        from benchmarks.gpu_all import placeholder

        out += [*placeholder(), ""]
    return "\n".join(out)
