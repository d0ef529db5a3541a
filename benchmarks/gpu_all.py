"""Every GPU row of the suite on one H100/H200 in under 10 minutes (the device tool's limit a command), then the
figures spliced into benchmarks/RESULTS.md's GPU section, the CPU figures kept.

    source .gpu-bundle/activate && python -m benchmarks.gpu_all --results $OUT/RESULTS.md --json $OUT/results-gpu.json
    python -m benchmarks.gpu_all --device cpu --tiny --results R.md --json r.json    # dry run of the same steps

Steps, in order, each `python -m benchmarks.run --only ... --merge` in a process group of its own under its own
time cap (killed at the cap, its figures lost, the earlier ones kept): the suite's synthetic data is made on the
machine by the first step (nothing is downloaded); `loader` = the loader vs torchvision at 64/160/224 px and the
decode limit (ffcv, cv2, torchvision decode_jpeg on the GPU); `train_step` = bmlp at 64 px (ffcv and
data.resident) and ResNet-50 at 160 px, real loader vs on-device data, bf16 + channels_last + torch.compile as
`grainsweep train` on CUDA; `distributed` = `grainsweep train --nproc 1` (nccl, one GPU); `fused` = a seed's 3
level runs fused vs separate (the loader-bound MLP, the demo's CNN); `storage` = the loader on raw and proportion
storage, last as the least needed. The caps add up to `--budget` (570 s): a step gets the smaller of its cap and
what is left, and none starts with under 20 s left. After every step the partial report is written, so a kill
of the whole command still leaves the figures of the steps done. The settings are benchmarks/profiles.py's
`gpu10` profile (`quick` with --tiny).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
START, END = "<!-- gpu_all: start -->", "<!-- gpu_all: end -->"
# step -> (benchmarks of the suite it runs, its time cap in seconds on the GPU)
STEPS: dict[str, tuple[str, int]] = {
    "loader": ("loader_vs_torchvision,decode_limit", 160),  # includes making the data (~30 s on 16 cores)
    "train_step": ("train_step", 140),
    "distributed": ("distributed", 80),
    "fused": ("fused", 150),
    "storage": ("storage", 40),
}
BUDGET_S = 570  # all steps together: under the device tool's 600 s a command
MIN_STEP_S = 20  # a step is not started with less time left


def placeholder() -> list[str]:
    """The GPU section of a RESULTS.md that has no GPU figures yet."""
    return [START, "## GPU figures (benchmarks/gpu_all.py)", "",
            "**GPU figures: not measured yet.** Every figure above ran on the CPU; the GPU targets (ResNet-50 >= 95% "
            "of on-device throughput, the MLP at 64 px not loader-bound, fused >= 2x on the loader-bound case) need "
            "`python -m benchmarks.gpu_all` on a GPU machine (see above).", END]


def gpu_block(text: str) -> str | None:
    """The GPU section of a RESULTS.md text, markers included, or None."""
    i, j = text.find(START), text.find(END)
    return text[i:j + len(END)] if 0 <= i < j else None


def splice(text: str, block: str) -> str:
    """`text` with its GPU section replaced by `block` (appended when it has none)."""
    old = gpu_block(text)
    if old is None:
        return text.rstrip("\n") + "\n\n" + block + "\n"
    return text.replace(old, block)


def render_block(results: dict[str, Any] | None, steps: list[dict[str, Any]], command: str) -> str:
    """The GPU section: how each step went, then the suite's tables of what was measured (headings one level
    down)."""
    from benchmarks.report import render

    out = [START, "## GPU figures (benchmarks/gpu_all.py)", "", f"Command: `{command}`", "",
           "| step | benchmarks | status | seconds | cap s |", "|---|---|---|---|---|"]
    for s in steps:
        out.append(f"| {s['step']} | {s['only']} | {s['status']} | {s['seconds']:.0f} | {s['cap']:.0f} |")
    out.append("")
    if results is not None:
        body = render(results, results["command"], results.get("quick", False)).splitlines()
        body = body[1:]  # the document title
        cut = next((i for i, line in enumerate(body) if line.startswith("## How to run on the lent GPU")), len(body))
        out += [("#" + line) if line.startswith("## ") else line for line in body[:cut]]
    else:
        out.append("No step finished: no figures.")
    out.append(END)
    return "\n".join(out)


def run_step(argv: list[str], cap: float, log) -> tuple[str, float]:
    """Runs one step in a process group of its own; kills the group at `cap` seconds."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.run", *argv], cwd=REPO, start_new_session=True)
    try:
        rc = proc.wait(timeout=cap)
        status = "done" if rc == 0 else f"failed (exit {rc})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the step and whatever it started (train --nproc children)
        proc.wait()
        status = "timed out (killed)"
    dt = time.perf_counter() - t0
    log(f"[gpu_all] {argv[argv.index('--only') + 1]}: {status} after {dt:.0f} s")
    return status, dt


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_all", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--tiny", action="store_true", help="the quick profile's tiny sizes (a dry run, e.g. on the CPU)")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {list(STEPS)}")
    p.add_argument("--cap", action="append", default=[], metavar="STEP=SECONDS", help="another time cap for a step")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all steps (0 = no limit)")
    p.add_argument("--results", default=str(HERE / "RESULTS.md"),
                   help="RESULTS.md to write (its GPU section replaced; when absent, benchmarks/RESULTS.md's text)")
    p.add_argument("--json", default=str(HERE / "results-gpu.json"), help="the GPU run's raw figures")
    p.add_argument("--data-root", default=str(REPO / "data" / "bench"), help="where the data is made")
    args = p.parse_args(argv)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        p.error(f"unknown step(s) {unknown}; choose from {list(STEPS)}")
    caps = {name: float(cap) for name, (_, cap) in STEPS.items()}
    for item in args.cap:
        name, _, value = item.partition("=")
        if name not in STEPS or not value:
            p.error(f"--cap wants STEP=SECONDS with STEP one of {list(STEPS)}, got {item!r}")
        caps[name] = float(value)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda but no CUDA device is available (a dry run: --device cpu --tiny)")

    results_md, raw = Path(args.results), Path(args.json)
    base = results_md if results_md.is_file() else HERE / "RESULTS.md"
    text = base.read_text() if base.is_file() else "# Benchmark results\n"
    raw.parent.mkdir(parents=True, exist_ok=True)
    if raw.exists():
        raw.unlink()  # figures of an earlier run must not be merged into this one
    command = "python -m benchmarks.gpu_all" + ("" if not argv else " " + " ".join(argv))
    profile = "quick" if args.tiny else "gpu10"
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    scratch = raw.with_name(f".{raw.stem}-step.md")  # each step's own report, not kept
    done: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for name in steps:
        only = STEPS[name][0]
        left = args.budget - (time.perf_counter() - t_start) if args.budget else float("inf")
        if left < MIN_STEP_S:
            done.append({"step": name, "only": only, "status": "skipped (no time left)", "seconds": 0.0,
                         "cap": caps[name]})
            continue
        cap = min(caps[name], left)
        status, dt = run_step(["--device", args.device, "--profile", profile, "--only", only, "--merge",
                               "--json", str(raw), "--results", str(scratch), "--data-root", args.data_root],
                              cap, log)
        done.append({"step": name, "only": only, "status": status, "seconds": dt, "cap": cap})
        results = json.loads(raw.read_text()) if raw.is_file() else None
        if results is not None:
            results["gpu_all_steps"] = done
            raw.write_text(json.dumps(results, indent=1) + "\n")
        write(results_md, splice(text, render_block(results, done, command)))
    scratch.unlink(missing_ok=True)
    log(f"[gpu_all] {len(done)} step(s) in {time.perf_counter() - t_start:.0f} s; wrote {results_md} and {raw}")
    return 0 if all(s["status"] == "done" for s in done) else 1


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
