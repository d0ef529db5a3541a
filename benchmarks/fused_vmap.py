"""A fused job's members batched with torch.func: the training step of K level models one after another (as
core.train.fused trains them: K modules, K optimizers) vs stacked into one (the trunks' weights stacked on a new
leading dimension, run by torch.func.functional_call under torch.vmap, one optimizer), on batches held in memory,
so the figure is the models' compute alone (no loader, no device stage).

Issue 17 asks to try batching members that share an architecture and to keep it only if it is faster. Members
differ only in their head's class count, so the trunk (the model up to its pooled features, forward_features) is
stacked and vmapped, and the K heads stay ordinary Linear layers, each applied to its member's slice of the
features. (Padding the heads to the largest class count and masking the extra logits would change label
smoothing's share per class unless the loss were rewritten, for a layer that is a small part of the work.) One
backward of the summed losses gives each member its own gradients (the slices are independent), and SGD's update
is elementwise, so a batched member follows its sequential twin up to float rounding: `check_case` trains both
sides in float64 from the same weights on the same batches and compares them (check_equal), on every case
before it is timed.

BatchNorm: the running statistics are stacked like the weights and given to vmap batched (in_dims 0), so each
member normalises with its own batch statistics and updates its own running mean and variance in place.
torch.func.replace_all_batch_norm_modules_ is not needed (it drops the running statistics, which changes
evaluation). Each member's weights come back as an ordinary state_dict (`Batched.state_dicts`).

Timing (house style 10): both sides in float32, first the check's CHECK_STEPS steps again, uncounted (warm-up;
their float32 difference is recorded); then `repeats` repeats of `steps` steps a side, alternating which side
goes first; median and spread of seconds per step (all K members); torch threads, load average and versions
recorded. GOMP_SPINCOUNT=100 as the suite's cpu profile: with libgomp's default spin-wait, 2 threads made a small
CNN's step erratic here (0.07 to 3 s for the same step; 1 thread: 17 ms).

    python -m benchmarks.fused_vmap [--tiny] [--json PATH] [--results benchmarks/RESULTS.md] [--threads 2]
"""

from __future__ import annotations

import os

from benchmarks.profiles import CPU_GOMP_SPINCOUNT

if __name__ == "__main__":  # libgomp reads it when torch loads; as benchmarks.run does for the cpu profile
    os.environ.setdefault("GOMP_SPINCOUNT", str(CPU_GOMP_SPINCOUNT))

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import functional_call, stack_module_state, vmap  # noqa: E402

from benchmarks.measure import load_average, machine, summary, versions, wall_seconds  # noqa: E402
from core.format.provenance import write_atomic  # noqa: E402
from core.models.build import build_model, to_channels_last  # noqa: E402
from core.train.optim import build_loss, build_optimizer  # noqa: E402

# the sweep's optimisation (core/train/run_config.py OptimConfig defaults): SGD, peak LR, momentum, smoothing
LR, MOMENTUM, LABEL_SMOOTHING = 0.2, 0.9, 0.1
CHECK_STEPS = 3  # steps of both sides before the weights are compared (and each timed side's warm-up)
# (rtol, atol) of the check by dtype. The check runs in float64: there the sides agree to ~1e-15, so a real
# difference (a member's gradient leaking into another's, a wrong weight decay) stands out; in float32 the
# rounding of other kernels (mm vs bmm, conv vs grouped conv) is amplified by lr 0.2 and BatchNorm on random data
# (resnet10t: 5e-7 after 2 steps, 3e-4 after 3), so float32 differences are reported, not judged
TOLERANCE = {torch.float64: (1e-9, 1e-12), torch.float32: (1e-4, 1e-5)}
SPEEDUP_TO_KEEP = 1.2  # the issue's rule as the parent session set it: batched kept only if >= 1.2x the median
START, END = "<!-- fused_vmap: start -->", "<!-- fused_vmap: end -->"
LARGE = (144, 24, 4)  # class counts of the suite's 'large' preset levels (subclass, class, superclass)
DEMO = (64, 16, 4)  # the demo's (launch/sweeps/default.yaml: the default preset, 4 x 4 x 4)


@dataclass(frozen=True)
class VmapCase:
    name: str
    model: str  # core.models.build name
    kwargs: dict
    res: int  # crop side, px
    batch: int  # images per step
    classes: tuple[int, ...]  # the K members' head sizes
    weight_decay: float  # optim.weight_decay of the run (5e-5 default; the demo 5e-4)
    steps: int  # timed steps of a side per repeat
    repeats: int  # repeats of each side, alternating which goes first
    channels_last: bool = True  # model.channels_last (default on), inputs too
    check_dtype: torch.dtype = torch.float64  # of the equality check (float32: a model too big to copy in float64)


CASES = (
    VmapCase("bmlp-1-32 at 64 px (the fused benchmark's loader-bound case)", "bmlp", {"depth": 1, "width": 32}, 64,
             256, LARGE, 5e-5, steps=10, repeats=9),
    # the bmlp defaults (B_6-Wi_1024, 63M weights a member): batch 64 as the cpu profile's train_step row, since a
    # step of 3 members at 256 takes seconds on 2 cores
    VmapCase("bmlp-6-1024 at 64 px (the bmlp defaults)", "bmlp", {}, 64, 64, LARGE, 5e-5, steps=2, repeats=5,
             check_dtype=torch.float32),
    VmapCase("the demo's resnet10t at 24 px", "resnet10t", {"channels": [16, 32, 64, 128]}, 24, 128, DEMO, 5e-4,
             steps=5, repeats=9),
)
TINY = (  # proves the code paths in seconds (tests/test_fused_vmap.py), measures nothing
    VmapCase("tiny bmlp", "bmlp", {"depth": 1, "width": 16}, 16, 16, (8, 4, 2), 5e-5, steps=2, repeats=2),
    VmapCase("tiny resnet10t", "resnet10t", {"channels": [8, 8, 8, 8]}, 16, 8, (8, 4, 2), 5e-4, steps=2, repeats=2),
)


def build_members(case: VmapCase, seed: int = 0) -> list[nn.Module]:
    """The K members as core.train.parts.build_parts builds them: torch.manual_seed(train.seed) before each
    model (one seed for all: a fused group shares it), channels_last when the run asks for it, training mode."""
    out = []
    for classes in case.classes:
        torch.manual_seed(seed)
        m = build_model(case.model, classes, case.res, **case.kwargs)
        out.append((to_channels_last(m) if case.channels_last else m).train())
    return out


def head_name(model: nn.Module) -> str:
    """The qualified name of the model's classifier (bmlp: `head`; a timm model: its get_classifier())."""
    head = model.net.get_classifier() if hasattr(model, "net") else model.head
    return next(n for n, mod in model.named_modules() if mod is head)


class Sequential:
    """The members as a fused job steps them today (core.train.engine.Trainer._step, less the bookkeeping)."""

    def __init__(self, models: list[nn.Module], weight_decay: float) -> None:
        self.models = models
        self.optimizers = [build_optimizer(m, "sgd", lr=LR, weight_decay=weight_decay, momentum=MOMENTUM)
                           for m in models]
        self.loss_fn = build_loss(LABEL_SMOOTHING)

    def step(self, x: torch.Tensor, targets: list[torch.Tensor]) -> None:
        for model, opt, y in zip(self.models, self.optimizers, targets):
            loss = self.loss_fn(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        return [m.state_dict() for m in self.models]


class _Trunk(nn.Module):
    """A model's forward_features as its forward (functional_call calls forward)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


class Batched:
    """K models of one architecture but the head, stepped as one: the trunks' parameters and buffers stacked on a
    new leading dimension (torch.func.stack_module_state; member k = index k) and run by functional_call under
    vmap over that dimension (the batch is shared: in_dims None); the heads stay K ordinary modules. One SGD
    over the stacked tensors and the heads, weight decay by each member tensor's own rank (a stacked bias has
    ndim 2 but must not decay)."""

    def __init__(self, models: list[nn.Module], weight_decay: float) -> None:
        self.head_name = head_name(models[0])
        self.heads = [copy.deepcopy(m.get_submodule(self.head_name)) for m in models]
        trunks = []
        for m in models:  # the model without its head (reset_head(0): an Identity), so that the K trunks stack
            t = copy.deepcopy(m)
            t.reset_head(0)
            trunks.append(_Trunk(t))
        self.params, self.buffers = stack_module_state(trunks)  # {"model.<name>": (K, ...)}, params leaves
        base = copy.deepcopy(trunks[0]).to("meta")  # only its code is used: the weights come from the stacks

        def features(params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
            return functional_call(base, (params, buffers), (x,))

        self.features = vmap(features, in_dims=(0, 0, None))  # (K, B, feature_dim)
        heads = [p for h in self.heads for p in h.parameters()]
        decay = [p for p in self.params.values() if p.ndim - 1 >= 2] + [p for p in heads if p.ndim >= 2]
        no_decay = [p for p in self.params.values() if p.ndim - 1 < 2] + [p for p in heads if p.ndim < 2]
        # the lr as build_optimizer holds it: a float64 0-d tensor shared by the groups
        self.optimizer = torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                                          {"params": no_decay, "weight_decay": 0.0}],
                                         lr=torch.tensor(LR, dtype=torch.float64), momentum=MOMENTUM)
        self.loss_fn = build_loss(LABEL_SMOOTHING)

    def step(self, x: torch.Tensor, targets: list[torch.Tensor]) -> None:
        f = self.features(self.params, self.buffers, x)
        # the sum's gradient with respect to member k's slice is member k's own loss gradient
        loss = sum(self.loss_fn(head(f[k]).float(), y) for k, (head, y) in enumerate(zip(self.heads, targets)))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        """Member k's ordinary state_dict (the keys and shapes of the model it was built from): what its
        checkpoint would hold."""
        out = []
        for k, head in enumerate(self.heads):
            sd = {n.removeprefix("model."): p[k].detach() for n, p in self.params.items()}
            sd.update({n.removeprefix("model."): b[k] for n, b in self.buffers.items()})
            sd.update({f"{self.head_name}.{n}": t.detach() for n, t in head.state_dict().items()})
            out.append(sd)
        return out


def check_equal(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Whether two sets of members' state_dicts agree within float rounding (same keys and shapes; floats within
    TOLERANCE of their dtype, NaN never equal; integers exactly). `where`: the first tensor that differs, else
    the one with the largest absolute difference."""
    worst, where, failed = 0.0, "", ""
    for k, (sa, sb) in enumerate(zip(a, b, strict=True)):
        if sa.keys() != sb.keys():
            return {"equal": False, "max_abs_diff": float("inf"),
                    "where": f"member {k}: keys differ ({sorted(sa.keys() ^ sb.keys())[:4]})"}
        for n, ta in sa.items():
            tb = sb[n]
            if ta.shape != tb.shape:
                return {"equal": False, "max_abs_diff": float("inf"),
                        "where": f"member {k} {n}: shape {tuple(ta.shape)} vs {tuple(tb.shape)}"}
            if ta.is_floating_point():
                rtol, atol = TOLERANCE[ta.dtype]
                ok = torch.allclose(ta, tb, rtol=rtol, atol=atol)
            else:
                ok = torch.equal(ta, tb)
            d = float((ta.double() - tb.double()).abs().max()) if ta.numel() else 0.0
            if not ok and not failed:
                failed = f"member {k} {n}"
            if d > worst:
                worst, where = d, f"member {k} {n}"
    return {"equal": not failed, "max_abs_diff": worst, "where": failed or where}


def max_change(before: list[dict[str, torch.Tensor]], after: list[dict[str, torch.Tensor]]) -> float:
    """The largest change of any float weight: > 0 shows the compared members did train."""
    return max(float((after[k][n] - t).abs().max()) for k, sd in enumerate(before) for n, t in sd.items()
               if t.is_floating_point() and t.numel())


def batches(case: VmapCase, count: int = 4, seed: int = 0) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
    """`count` random batches (images as the device stage would hand them, labels of every member's level)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        x = torch.randn(case.batch, 3, case.res, case.res, generator=g)
        if case.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append((x, [torch.randint(c, (case.batch,), generator=g) for c in case.classes]))
    return out


def check_case(case: VmapCase, dtype: torch.dtype, steps: int = CHECK_STEPS) -> dict[str, Any]:
    """Both sides built from the same initial weights (in `dtype`), `steps` steps each on the same batches, then
    compared (check_equal); max_weight_change shows that they trained."""
    models = [m.to(dtype) for m in build_members(case)]
    data = [(x.to(dtype), ys) for x, ys in batches(case)]
    initial = [copy.deepcopy(m.state_dict()) for m in models]
    seq = Sequential([copy.deepcopy(m) for m in models], case.weight_decay)
    bat = Batched(models, case.weight_decay)
    for i in range(steps):
        seq.step(*data[i % len(data)])
        bat.step(*data[i % len(data)])
    return {**check_equal(bat.state_dicts(), seq.state_dicts()), "dtype": str(dtype).removeprefix("torch."),
            "steps": steps, "rtol_atol": TOLERANCE[dtype], "max_weight_change": max_change(initial, seq.state_dicts())}


def measure_case(case: VmapCase, log=print) -> dict[str, Any]:
    """One case: the equality check (check_case, in case.check_dtype), then both sides in float32 from the same
    initial weights, CHECK_STEPS uncounted steps each (their float32 difference is recorded), then timed. A
    batched side that cannot be built or run is reported with its error instead of figures."""
    models = build_members(case)
    out: dict[str, Any] = {"case": case.name, **{k: v for k, v in asdict(case).items() if k != "name"},
                           "check_dtype": str(case.check_dtype).removeprefix("torch."),
                           "weights_per_member": sum(p.numel() for p in models[0].parameters()),
                           "head": head_name(models[0]), "heads": "separate (one Linear a member, not padded)"}
    try:
        out["check"] = check_case(case, case.check_dtype)
    except Exception as e:  # noqa: BLE001 - the finding is that this model cannot be batched: say why
        out["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:400]
        log(f"{case.name}: batched side failed: {out['error']}")
        return out
    log(f"{case.name}: after {CHECK_STEPS} steps in {out['check']['dtype']} batched == sequential: "
        f"{out['check']['equal']} (max |diff| {out['check']['max_abs_diff']:.2e} at {out['check']['where']})")

    # timed sides: float32 as a CPU run trains; the warm-up steps are the check's steps again
    data = batches(case)
    seq = Sequential([copy.deepcopy(m) for m in models], case.weight_decay)
    bat = Batched(models, case.weight_decay)
    for i in range(CHECK_STEPS):
        seq.step(*data[i % len(data)])
        bat.step(*data[i % len(data)])
    drift = check_equal(bat.state_dicts(), seq.state_dicts())
    out["float32_after_warmup"] = {"max_abs_diff": drift["max_abs_diff"], "where": drift["where"]}
    sides = {"sequential": seq, "batched": bat}
    seconds: dict[str, list[float]] = {"sequential": [], "batched": []}
    out["load_average_before"] = load_average()
    for r in range(case.repeats):
        for name in (("sequential", "batched") if r % 2 == 0 else ("batched", "sequential")):
            def steps(side=sides[name]) -> None:
                for i in range(case.steps):
                    side.step(*data[i % len(data)])
            dt, _ = wall_seconds(steps, torch.device("cpu"))
            seconds[name].append(dt / case.steps)
    out["load_average_after"] = load_average()
    out["sequential"], out["batched"] = summary(seconds["sequential"]), summary(seconds["batched"])
    out["speedup"] = out["sequential"]["median"] / out["batched"]["median"]
    out["speedup_per_repeat"] = summary([s / b for s, b in zip(seconds["sequential"], seconds["batched"])])
    log(f"{case.name}: s/step sequential {out['sequential']['median']:.4f} batched {out['batched']['median']:.4f}"
        f" -> {out['speedup']:.2f}x (load {out['load_average_after']})")
    return out


def run(tiny: bool = False, command: str = "", log=print) -> dict[str, Any]:
    cases = TINY if tiny else CASES
    return {"benchmark": "fused_vmap", "command": command, "tiny": tiny, "machine": machine(),
            "versions": versions(), "torch_threads": torch.get_num_threads(),
            "omp": {k: os.environ.get(k) for k in ("GOMP_SPINCOUNT", "OMP_NUM_THREADS")},
            "load_average_start": load_average(), "cases": [measure_case(c, log) for c in cases],
            "load_average_end": load_average(), "keep_if_speedup_at_least": SPEEDUP_TO_KEEP}


def _range(s: dict) -> str:
    return f"{s['median'] * 1e3:.1f} ms ({s['min'] * 1e3:.1f}-{s['max'] * 1e3:.1f}, n={len(s['runs'])})"


def verdict(results: dict[str, Any]) -> str:
    """One line: is the batched step faster (>= SPEEDUP_TO_KEEP x the median), by how much, on which models."""
    faster = [c for c in results["cases"] if c.get("speedup", 0) >= SPEEDUP_TO_KEEP and c["check"]["equal"]]
    parts = [f"{c['case'].split(' (')[0]} {c['speedup']:.2f}x" if "speedup" in c else
             f"{c['case'].split(' (')[0]} not batched" for c in results["cases"]]
    head = (f"batching is faster (>= {SPEEDUP_TO_KEEP}x) on {', '.join(c['case'].split(' (')[0] for c in faster)}"
            if faster else f"batching is not >= {SPEEDUP_TO_KEEP}x faster on any case")
    return f"**Verdict**: {head} (batched vs sequential step, medians: {'; '.join(parts)})."


# what the figures meant when they were taken (rendered under the table; rewrite it with new figures)
NOTES = (
    "Measured 2026-12-02 (session 7) on 2 otherwise idle cores (this benchmark alone, load about 1.5): batching "
    "pays only where the members are tiny and a step is many small operations: the loader-bound MLP (0.4 M "
    "weights a member) stepped 1.34x faster batched (1.16x with 1 torch thread, same day: at 2 threads part of "
    "the gain is fewer hand-offs between the threads). Where the work is in large matmuls or convolutions it "
    "loses: the 63 M-weight MLP ran at 0.42x (torch.profiler: vmap turns each Linear into a bmm, no faster than "
    "the sequential side's mm and addmm, plus about 0.8 s a step of copies (aten::copy_) around them) and "
    "the demo's CNN at 0.74x (one grouped convolution a layer costs what the three convolutions did; copies that "
    "move the member dimension between batch and channels, and BatchNorm, ReLU and pooling on the regrouped "
    "tensors, come on top). For a fused job: in the fused benchmark's loader-bound case (3 levels x 8 epochs = 32 "
    "steps of 256; 7.8 s fused on 2 idle cores, 50.8 s on loaded ones) the models' steps take about 32 x 35 ms = "
    "1.1 s, so batching would save about 0.3 s (4% idle, under 1% loaded), and a batched member would no longer be bit for bit a separate run in float32 (1e-7 apart "
    "after 3 steps, more later; tests/test_fused.py asserts exact equality). Not adopted in core.train.fused. "
    "Not measured on a GPU; the issue's GPU loader-bound case (B_6-Wi_1024) is the large-matmul kind that lost "
    "here.",
)


def render(results: dict[str, Any]) -> str:
    """RESULTS.md's fused_vmap section, markers included."""
    m, v = results["machine"], results["versions"]
    rows = [f"| case | weights a member | batch, px | sequential step (K=3) | batched step | speed-up (medians) | "
            f"speed-up per repeat | batched == sequential after {CHECK_STEPS} steps | float32 max diff | "
            "load before/after |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c in results["cases"]:
        size = f"{c['weights_per_member'] / 1e6:.2f} M"
        if "error" in c:
            rows.append(f"| {c['case']} | {size} | {c['batch']}, {c['res']} | - | cannot be batched: "
                        f"`{c['error']}` | - | - | - | - | - |")
            continue
        ck = c["check"]
        rows.append(f"| {c['case']} | {size} | {c['batch']}, {c['res']} | {_range(c['sequential'])} | "
                    f"{_range(c['batched'])} | {c['speedup']:.2f}x | {c['speedup_per_repeat']['median']:.2f}x "
                    f"({c['speedup_per_repeat']['min']:.2f}-{c['speedup_per_repeat']['max']:.2f}) | "
                    f"{'yes' if ck['equal'] else 'NO'} ({ck['dtype']}, max abs diff {ck['max_abs_diff']:.1e}) | "
                    f"{c['float32_after_warmup']['max_abs_diff']:.1e} | "
                    f"{c['load_average_before'][0]} / {c['load_average_after'][0]} |")
    lines = [START, "## Fused members batched with torch.func (vmap)", "",
             "Issue 17: a fused job steps its K level models one after another (`core.train.fused`: K modules, K "
             "optimizers). Here the same K = 3 members (same init, only the head's class count differs) take one "
             "optimizer step (forward, label-smoothed cross-entropy, backward, SGD with momentum and weight decay) "
             "on the same batch in memory, (a) sequentially as today and (b) batched: the trunks' weights and "
             "BatchNorm buffers stacked, run by `torch.func.functional_call` under `torch.vmap` (the batch shared), "
             "the K heads kept as separate Linear layers (not padded and masked), one SGD over the stacked tensors. "
             "Random tensors, no loader: the models' compute alone. Check: both sides train "
             f"{CHECK_STEPS} steps from the same weights in float64 (float32 for the 63M-weight MLP) and must "
             "agree (float64: rtol 1e-9, atol 1e-12; float32: rtol 1e-4, atol 1e-5); the timed float32 sides "
             f"then take the same {CHECK_STEPS} steps, uncounted (their largest difference: 'float32 max diff'). "
             "Repeats alternate which side goes first; figures are seconds per step of all 3 members, median "
             "(min-max).", "",
             *rows, "",
             f"- Machine: {m['cpu']}, {m['cores']} cores (`nproc` {m['cores_usable']}), {m['ram_gib']} GiB RAM; "
             f"torch threads {results['torch_threads']}; GOMP_SPINCOUNT={results['omp']['GOMP_SPINCOUNT']}; "
             f"load average (1, 5, 15 min) {results['load_average_start']} at start, "
             f"{results['load_average_end']} at end.",
             "- Versions: " + ", ".join(f"{k} {v[k]}" for k in ("python", "torch", "timm", "numpy")) + ".",
             f"- Command: `{results['command']}`.",
             f"- {verdict(results)} Rule (issue 17): keep batching only where it is faster; "
             f"here >= {SPEEDUP_TO_KEEP}x on the loader-bound case.", "", *([] if results["tiny"] else NOTES), END]
    return "\n".join(lines)


def splice(text: str, block: str) -> str:
    """`text` with its fused_vmap section replaced by `block` (appended when it has none)."""
    i, j = text.find(START), text.find(END)
    if 0 <= i < j:
        return text[:i] + block + text[j + len(END):]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m benchmarks.fused_vmap", description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny models, 2 repeats: proves the code paths only")
    p.add_argument("--json", default=None, help="write the results as JSON here")
    p.add_argument("--results", default=None, help="a RESULTS.md whose fused_vmap section to write (or append)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2: a sweep job's 2 cores)")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    results = run(tiny=args.tiny, command=" ".join(["python -m benchmarks.fused_vmap", *map(shlex.quote, argv)]))
    results["verdict"] = verdict(results)
    if args.json:
        write_atomic(Path(args.json), json.dumps(results, indent=1) + "\n")
    if args.results:
        path = Path(args.results)
        write_atomic(path, splice(path.read_text() if path.is_file() else "", render(results)))
    print(results["verdict"])
    print(json.dumps({c["case"]: c.get("speedup", c.get("error")) for c in results["cases"]}))
    return 0 if all(c.get("check", {}).get("equal", True) for c in results["cases"]) else 1


if __name__ == "__main__":
    sys.exit(main())
