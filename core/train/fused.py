"""A fused job: the pretraining runs of one seed at several label levels, trained from ONE training loader.

In a granularity sweep the runs of a seed read the same images in the same order with the same crops (orders and
crops are a function of the seed and the epoch: core/data/loader.py); only the label column differs. Decoding
them once for all (CoorDL, VLDB 2021) saves K-1 decodes per batch: each batch is decoded and goes through the
device stage once, then through each member's model, with its own head, optimizer, schedule, loss, metrics and
checkpoints (core.train.run.Member). Each member writes its own ordinary run folder, as core.train.run.run would:
the same files, and on the CPU the same numbers (tests/test_fused.py), because
- the device stage's draws come from a stream of their own, restarted each epoch from (train.seed, epoch)
  (core.data.augment.RngStream), not from torch's global generator that model init and dropout also draw from;
- each member trains inside its own global random stream: the state its own build_parts left (or its checkpoint
  restored), swapped in around its steps, evaluations and checkpoints.

Resume: members resume from a common epoch. Old checkpoints are pruned only once every member has saved the new
one, and on resume each member's checkpoints newer than the newest epoch that all members have are removed (those
epochs are redone, as a killed run redoes its unfinished epoch). Members already done (result.json) are skipped.
With WORLD_SIZE > 1 every rank serves its share of the batch to all members (DistributedDataParallel per member,
as core.train.parts.build_parts wraps it); rank 0 writes the folders.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import torch

from core.data.augment import RngStream
from core.format import config as cfglib
from core.format.lock import FolderLock
from core.format.run_folder import RunFolder
from core.train.distributed import World, current, init_from_env
from core.format import derived as derived_lib
from core.train.parts import _per_rank_batch, build_parts, build_train_data, build_val_loader, check_data
from core.train.run import (Member, _flatten, _resume, check_folder, end_epoch, finish, open_member, prune,
                            start_epoch, train_members)
from core.train.run_config import RunConfig, RunConfigError, absolute_data_path
from core.train.semantic_softmax import build_objective, build_run_model

FUSED_KEY = "data.level"  # the one setting the runs of a fused job may differ in


def run_fused(cfgs: list[RunConfig], run_dirs: list[str | Path], resume: bool = False) -> list[dict]:
    """Trains (or resumes) the runs `cfgs` into `run_dirs` from one training loader; returns each run's final
    evaluation, as core.train.run.run returns it (in the order given). A run whose folder is done (result.json)
    is skipped and its result returned. `resume` as in run(): without it a folder that holds a run is refused.

    The runs must be the same config but for data.level (same seed, model, data, schedule); anything else is
    refused with a RunConfigError naming the setting."""
    cfgs = [absolute_data_path(c) for c in cfgs]
    check_group(cfgs, run_dirs)
    with init_from_env(cfgs[0].train.device) as world, ExitStack() as held:
        for d in run_dirs:
            world.on_main(lambda d=d: bool(held.enter_context(FolderLock(d, what="a training run"))))
        return _run_fused(cfgs, [RunFolder(d) for d in run_dirs], resume, world)


def check_group(cfgs: list[RunConfig], run_dirs: list[str | Path]) -> None:
    """The runs can be fused: one folder each, all distinct, configs equal but for data.level, levels distinct."""
    if not cfgs or len(cfgs) != len(run_dirs):
        raise ValueError(f"a fused job needs one run folder per config; got {len(cfgs)} configs and "
                         f"{len(run_dirs)} folders")
    folders = [Path(d).resolve() for d in run_dirs]
    if len(set(folders)) != len(folders):
        raise RunConfigError(f"a fused job's runs need distinct folders; got {[str(d) for d in run_dirs]}")
    first = _flatten(cfglib.to_dict(cfgs[0]))
    for cfg, d in zip(cfgs[1:], run_dirs[1:]):
        other = _flatten(cfglib.to_dict(cfg))
        diff = sorted(k for k in first.keys() | other.keys() if k != FUSED_KEY and first.get(k) != other.get(k))
        if diff:
            raise RunConfigError(f"the runs of a fused job may differ in {FUSED_KEY} only; {d} differs from "
                                 f"{run_dirs[0]} in {diff}")
    levels = [check_data(c)[1] for c in cfgs]
    if len(set(levels)) != len(levels):
        raise RunConfigError(f"a fused job trains each level once; {FUSED_KEY} values {levels} repeat")


def _run_fused(cfgs: list[RunConfig], folders: list[RunFolder], resume: bool, world: World) -> list[dict]:
    results = world.on_main(lambda: [f.result() if f.is_done() else None for f in folders])
    todo = [i for i, r in enumerate(results) if r is None]
    if not todo:
        return results
    world.on_main(lambda: [check_folder(folders[i], cfgs[i], resume) for i in todo])

    # one training loader and device stage for every member, serving the union of their label columns; one
    # validation loader per validation beton (a derived level may be evaluated on another: core.format.derived)
    data = {i: check_data(cfgs[i]) for i in todo}  # (hierarchy, level)
    train_levels: list[str] = []
    val_levels: dict[str, list[str]] = {}
    for i, (h, level) in data.items():
        train_levels += [lv for lv in build_objective(cfgs[i], h, level).train_levels if lv not in train_levels]
        wanted = val_levels.setdefault(_val_beton(cfgs[i], level), [])
        wanted += [lv for lv in h.names[h.index(level):] if lv not in wanted]
    train = build_train_data(cfgs[todo[0]], train_levels)
    val = {}
    for i, (_, level) in data.items():
        if (beton := _val_beton(cfgs[i], level)) not in val:
            val[beton] = build_val_loader(cfgs[i], level, val_levels[beton])
    members = []
    for i, (_, level) in data.items():
        parts = build_parts(cfgs[i], train_data=train, val_loader=val[_val_beton(cfgs[i], level)])
        members.append(Member(cfgs[i], parts, folders[i], rng=RngStream.capture(parts.device),
                              label=f"{parts.level}: "))
    if resume:
        _resume_together(members, world)
    for m in members:
        open_member(m, world, purge_step=m.step if resume else None)

    cfg = cfgs[todo[0]]
    names = "+".join(m.parts.level for m in members)
    try:
        for epoch in range(members[0].start_epoch, cfg.train.epochs):
            res = start_epoch(members[0], epoch)  # the shared loader and draws
            stats = train_members(members, f"epoch {epoch + 1}/{cfg.train.epochs} {names}")
            saved = [end_epoch(m, epoch, res, s, world, prune=False) for m, s in zip(members, stats)]
            if any(saved):  # every member has the new checkpoint: now the old ones may go
                world.on_main(lambda: [prune(m.folder.checkpoint_dir, cfg.train.keep_checkpoints) for m in members])
    finally:
        for m in members:
            if m.log is not None:
                m.log.close()
    for i, m in zip(todo, members):
        results[i] = finish(m, world)
    return results


def _resume_together(members: list[Member], world: World) -> None:
    """Every member loads its checkpoint of the newest epoch that all members have; newer ones are removed (their
    epochs are redone). No common epoch: all start over. A damaged checkpoint (core.train.checkpoint.load_newest
    falls back to an older one) lowers the common epoch and the members load again."""
    limit: int | None = None
    while True:
        common = world.on_main(lambda: _keep_common([m.folder for m in members], limit))
        if common == 0:
            return
        for m in members:
            with m.rng:  # the checkpoint's RNG state becomes the member's own stream
                m.start_epoch, m.step = _resume(m.parts, m.folder.checkpoint_dir, world, str(m.folder.path))
        limit = min(m.start_epoch for m in members)
        if all(m.start_epoch == common for m in members):
            return


def _keep_common(folders: list[RunFolder], limit: int | None) -> int:
    """Rank 0: the newest checkpoint epoch every folder has (at most `limit`), 0 when none; each folder's
    checkpoints of later epochs are removed."""
    epochs = [{_epoch_of(p) for p in f.checkpoints()} for f in folders]
    common = max((e for e in set.intersection(*epochs) if limit is None or e <= limit), default=0)
    for f in folders:
        for p in f.checkpoints():
            if _epoch_of(p) > common:
                print(f"{f.path}: removing {p.name}, newer than the epoch every run of the fused job reached "
                      f"({common}); that epoch is redone", flush=True)
                p.unlink(missing_ok=True)
    return common


def _val_beton(cfg: RunConfig, level: str) -> str:
    return derived_lib.eval_beton(Path(cfg.data.path), level)


def _epoch_of(path: Path) -> int:
    return int(path.stem.removeprefix("epoch"))


def estimate_bytes(cfgs: list[RunConfig]) -> int:
    """Device memory a fused job of `cfgs` needs in one process, roughly: per model its parameters, gradients and
    optimizer state (fp32; AdamW keeps 2 values per weight, SGD with momentum 1), one shared training batch (uint8
    as loaded plus the device stage's output) and one validation batch, and the activations of one model's
    training step (the largest: models step one after another, so one model's activations are alive at a time).
    Activations are the outputs of every leaf module for one batch, measured on the meta device (no memory
    used); autograd keeps about that much."""
    world = current()
    models, activations = 0, 0
    for cfg in cfgs:
        h, level = check_data(cfg)
        batch, res = _per_rank_batch(cfg, world), cfg.data.resolution
        with torch.device("meta"):
            model = build_run_model(cfg, h, level)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        trained = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        state = {"adamw": 2, "sgd": 1 if cfg.optim.momentum > 0 else 0}[cfg.optim.name]
        models += weights + trained * (1 + state)
        act_bytes = 2 if cfg.train.precision in ("bf16", "fp16") or (
            cfg.train.precision == "auto" and cfg.train.device != "cpu" and torch.cuda.is_available()) else 4
        activations = max(activations, _activation_bytes(model, batch, res, act_bytes, weights))
    cfg = cfgs[0]
    res, val_res = cfg.data.resolution, cfg.data.val_resolution or cfg.data.resolution
    batches = _per_rank_batch(cfg, world) * res * res * 3 * (1 + 4) + cfg.data.val_batch_size * val_res ** 2 * 3 * 5
    return int(models + activations + batches)


def _activation_bytes(model: torch.nn.Module, batch: int, res: int, act_bytes: int, weights: int) -> int:
    """Sum of the leaf modules' output sizes for one batch (a meta forward), in bytes of `act_bytes` per value;
    4 x the weights where the model cannot run on the meta device."""
    total = 0

    def count(_module, _inputs, output) -> None:
        nonlocal total
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor):
                total += t.numel() * act_bytes

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(torch.empty(batch, 3, res, res, device="meta"))
    except Exception:  # noqa: BLE001 - an op without a meta kernel: fall back to a multiple of the weights
        total = 4 * weights
    finally:
        for hk in hooks:
            hk.remove()
    return total
