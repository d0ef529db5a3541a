"""A whole sweep: check the executor, prepare (convert the dataset once), plan, skip finished runs, submit the rest;
or, as a dry run, everything up to the submission.

The sweep folder holds sweep.yaml (the resolved sweep config of the last call), plan.json (every run, its
config and folder), jobs.json (submissions), runs/<run>/ (one train_run folder each), logs/, submitit/ and
inductor-cache/ (TORCHINDUCTOR_CACHE_DIR for every job).
"""

from __future__ import annotations

from pathlib import Path

from core.format import config as cfglib, provenance
from core.format.lock import FolderLock
from launch import executors, status
from launch.executors import base
from launch.plan import Plan, plan_sweep, prepare
from launch.sweep_config import SweepConfig


def default_out(cfg: SweepConfig) -> Path:
    return Path("data") / "sweeps" / cfg.name


def run_sweep(cfg: SweepConfig, out: str | Path | None = None, executor: str | None = None) -> tuple[Plan, list[dict]]:
    """Plans and submits (or, locally, runs) every unfinished run. Returns the plan and the submission records.

    Every check (config keys, executor parameters, dataset, levels, model, a cluster that answers) runs before
    anything is written into the sweep folder.
    """
    sweep_dir = Path(out) if out is not None else default_out(cfg)
    ex = executors.resolve(executor or cfg.executor.name, cfg.executor, sweep_dir.resolve())
    prepare(cfg)  # the dataset (converted once) and a model built once
    plan = plan_sweep(cfg, sweep_dir)
    ex.ready()

    # one sweep per folder at a time: two would run (or submit) every run twice into the same folders; the lock
    # is held while the local executor runs the jobs, and while the others submit them
    with FolderLock(plan.sweep_dir, what=f"grainsweep sweep ({ex.name})"):
        plan.save()
        provenance.write_atomic(plan.sweep_dir / "sweep.yaml", cfglib.to_yaml(cfg))

        # what is left, from the runs themselves: neither done nor with a live job (queued or running)
        rows = {r["name"]: r for r in status.job_states(plan.sweep_dir)}
        busy = [n for n, r in rows.items() if r["state"] in (base.PENDING, base.RUNNING)]
        todo = [j for j in plan.jobs if rows[j.name]["state"] != base.DONE and j.name not in busy]
        done = sum(r["state"] == base.DONE for r in rows.values())
        print(f"sweep {plan.sweep_dir}: {len(plan.jobs)} runs, {done} done, {len(busy)} queued/running, "
              f"{len(todo)} to {'run' if ex.runs_here else 'submit'} ({ex.name})", flush=True)
        if not todo:
            return plan, []
        return plan, ex.submit(plan, todo)


def dry_run(cfg: SweepConfig, out: str | Path | None = None, executor: str | None = None) -> tuple[Plan, str]:
    """Every check run_sweep makes (config keys, executor parameters, datasets, levels, model), then the plan
    described (launch/dry_run.py) instead of submitted: nothing is written into the sweep folder. `prepare` still
    converts the synthetic dataset when `dataset.synthetic_preset` names one and it is not there yet (and enabled
    arms derive their levels), outside the sweep folder and once, as the sweep itself would; nothing is trained.
    A cluster that does not answer now is a note, not an error (its parameters were checked)."""
    from launch.dry_run import describe

    sweep_dir = Path(out) if out is not None else default_out(cfg)
    ex = executors.resolve(executor or cfg.executor.name, cfg.executor, sweep_dir.resolve())
    prepare(cfg)
    plan = plan_sweep(cfg, sweep_dir)
    text = describe(plan, ex.name)
    try:
        ex.ready()
    except cfglib.ConfigError as e:
        text += f"\nnote: {e}"
    return plan, text
