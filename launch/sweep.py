"""A whole sweep: check the executor, plan (converting the dataset once), skip finished runs, submit the rest.

The sweep folder holds sweep.yaml (the resolved sweep config of the last call), plan.json (every run, its
config and folder), jobs.json (submissions), runs/<run>/ (one train_run folder each), logs/, submitit/ and
inductor-cache/ (TORCHINDUCTOR_CACHE_DIR for every job).
"""

from __future__ import annotations

from pathlib import Path

from core.format import config as cfglib, provenance
from launch import executors, status
from launch.plan import Plan, plan_sweep
from launch.sweep_config import SweepConfig


def default_out(cfg: SweepConfig) -> Path:
    return Path("data") / "sweeps" / cfg.name


def run_sweep(cfg: SweepConfig, out: str | Path | None = None, executor: str | None = None) -> tuple[Plan, list[dict]]:
    """Plans and submits (or, locally, runs) every unfinished run. Returns the plan and the submission records.

    Every check (config keys, executor parameters, dataset, levels, model) runs before the first submission.
    """
    sweep_dir = Path(out) if out is not None else default_out(cfg)
    name = executors.check_executor(executor or cfg.executor.name, cfg.executor, sweep_dir.resolve())
    plan = plan_sweep(cfg, sweep_dir)
    plan.save()
    provenance.write_atomic(plan.sweep_dir / "sweep.yaml", cfglib.to_yaml(cfg))

    # skip finished runs, and runs whose SLURM job is still queued or running (a local run "running" in the
    # log but not done belongs to an interrupted earlier call: it is resumed)
    rows = {r["name"]: r for r in status.job_states(plan.sweep_dir)}
    busy = [n for n, r in rows.items() if r["state"] in ("pending", "running") and r["executor"] == "slurm"]
    todo = [j for j in plan.jobs if rows[j.name]["state"] != "done" and j.name not in busy]
    done = sum(r["state"] == "done" for r in rows.values())
    print(f"sweep {plan.sweep_dir}: {len(plan.jobs)} runs, {done} done, {len(busy)} queued/running, "
          f"{len(todo)} to {'run' if name == 'local' else 'submit'} ({name})", flush=True)
    if not todo:
        return plan, []
    return plan, executors.submit(plan, todo, name, cfg.executor)
