"""`grainsweep sweep --dry-run`: what a sweep would run, by stage, with each job's dependency and the images it
will process, without submitting or writing anything into the sweep folder.

Images a job processes = its training epochs x the images of its dataset's training split (manifest.json), plus,
for transfer mode 'select', the selected pretraining images drawn alongside (one batch of `transfer.select
.batch_size`, default data.batch_size, per target step); a clustering job embeds its dataset's val split once, a
'probe' transfer its train and val splits once. Evaluation passes over val (and select's one feature pass over
both training sets) are not counted. A job whose run folder already holds result.json is marked done (a real
sweep skips it) and left out of the totals. With fuse.levels, the fused groups follow: each one job, its members'
levels, and how many are left to train.
"""

from __future__ import annotations

from core.format.run_folder import RunFolder
from launch.plan import JobSpec, Plan
from launch.plan_checks import split_images


def job_images(spec: JobSpec) -> tuple[int, str]:
    """(images the job processes, how that was counted); (0, why) where the dataset has no manifest."""
    cfg = spec.config
    if spec.kind == "cluster":  # k-means on frozen features: one pass over val, no training
        n = split_images(cfg.data.path, "val")
        return (n, f"val {n:,} x 1") if n is not None else (0, "val size unknown (no manifest.json)")
    n = split_images(cfg.data.path, "train")
    if n is None:
        return 0, "train size unknown (no manifest.json)"
    if spec.mode == "probe":  # frozen features of train and val once, then a logistic regression: no epochs
        val = split_images(cfg.data.path, "val") or 0
        return n + val, f"train {n:,} + val {val:,} x 1"
    epochs = cfg.train.epochs
    unit = "epoch" if epochs == 1 else "epochs"
    if spec.mode == "select" and spec.options is not None:
        steps = n // cfg.data.batch_size  # the target loader drops the last partial batch
        extra = steps * (spec.options.batch_size or cfg.data.batch_size)
        return epochs * (n + extra), f"{epochs} {unit} x ({n:,} + {extra:,} selected)"
    return epochs * n, f"{epochs} {unit} x {n:,}"


def describe(plan: Plan, executor: str) -> str:
    """The dry run's printout: the datasets, then each stage's jobs, their sources and images, and the totals."""
    lines = [f"dry run of {plan.sweep_dir} (executor {executor}): nothing submitted, nothing written there",
             f"pretraining dataset {plan.dataset}: levels " + ", ".join(f"{k} ({v})" for k, v in plan.classes.items()),
             f"target: {plan.target_level} ({plan.target_classes} classes) of {plan.target_dataset}"
             + ("" if plan.shared else "; pretraining runs are not read at the target level (other classes)")]
    total = 0
    width = max((len(j.name) for j in plan.jobs), default=0)
    for stage in sorted({j.stage for j in plan.jobs}):
        jobs = plan.stage(stage)
        rows, images, done = [], 0, 0
        for j in jobs:
            n, how = job_images(j)
            finished = RunFolder(j.run_dir).is_done()
            done += finished
            images += 0 if finished else n
            after = f"after {j.source_name}" if j.source_name else "no dependency"
            after += f" (in {j.group})" if j.group else ""
            rows.append(f"  {j.name:<{width}}  {after};  {how} = {n:,} images" + ("  [done: skipped]" if finished
                                                                                   else ""))
        total += images
        head = f"stage {stage}: {len(jobs)} jobs" + (f" ({done} done)" if done else "")
        if stage > 1:
            head += ", each after its pretraining run"
        lines += [f"{head}; {images:,} images to process", *rows]
    lines.append(f"total: {len(plan.jobs)} jobs, {total:,} images to process")
    lines += fused_groups(plan)
    return "\n".join(lines)


def fused_groups(plan: Plan) -> list[str]:
    """The fused groups (fuse.levels): each one job training its members from one loader."""
    from launch.fuse import groups

    found = groups(plan.jobs)
    if not found:
        return []
    runs = sum(len(m) for m in found.values())
    out = [f"fused: {runs} pretraining runs in {len(found)} jobs, one loader each (a job splits its group where the "
           "device's memory is short)"]
    for name, members in found.items():
        left = [m for m in members if not RunFolder(m.run_dir).is_done()]
        state = f"{len(left)} of {len(members)} to train" if len(left) < len(members) else f"{len(members)} runs"
        out.append(f"  {name} (seed {members[0].seed}, {state}): " + ", ".join(m.pretrain_level for m in members))
    return out
