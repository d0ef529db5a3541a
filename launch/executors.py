"""One generic launcher for a sweep's two stages; every cluster detail lives in `slurm_parameters`.

Executors:
  slurm - stage 1 goes out as ONE job array (submitit `executor.batch()`), stage 2 as a second array with
          `--dependency=afterok:<stage-1 array id>`, so no transfer starts before every stage-1 task succeeded
          (a failed pretraining run leaves its transfers pending with DependencyNeverSatisfied, or cancelled
          where the cluster has kill_invalid_depend; rerun the sweep to retry). Jobs are RunJob
          Checkpointables: a timeout or preemption requeues them and they resume from their last checkpoint.
  local - runs the jobs itself, in this process, one after the other: stage 1, then each transfer and
          clustering job whose pretraining run finished (afterok per job). In-process because every new
          process spends ~8-10 s importing torch/ffcv, longer than many of the demo's runs; on 2 cores a pool
          would only contend.
          A failed run is logged (<sweep>/logs/<run>.error) and the sweep goes on.
  debug - submitit's DebugExecutor (in-process, synchronous; a failure opens pdb when run interactively).
  auto  - slurm when `sbatch` is on PATH, else local.

Every submission is appended to <sweep>/jobs.json (executor, stage, array id, run name -> job id), which
`grainsweep status` reads. Runs already finished are never submitted; runs whose job is still queued or
running (per squeue) are not submitted twice.
"""

from __future__ import annotations

import json
import shutil
import time
import traceback
from pathlib import Path

import submitit

from core.format import config as cfglib, provenance
from launch.jobs import RunJob
from launch.plan import LOGS_DIR, JobSpec, Plan
from launch.sweep_config import ExecutorConfig, SlurmConfig

JOBS_FILE = "jobs.json"
SUBMITIT_DIR = "submitit"


def resolve_name(name: str) -> str:
    if name == "auto":
        return "slurm" if shutil.which("sbatch") else "local"
    if name not in ("local", "slurm", "debug"):
        raise cfglib.ConfigError(f"executor.name={name!r}; choose from ['auto', 'local', 'slurm', 'debug']")
    return name


def slurm_parameters(cfg: SlurmConfig) -> dict:
    """The sweep config's SLURM section as submitit parameters: the one place that knows the cluster."""
    params = dict(timeout_min=cfg.timeout_min, cpus_per_task=cfg.cpus_per_task, tasks_per_node=1, nodes=1,
                  slurm_array_parallelism=cfg.array_parallelism)
    if cfg.gpus_per_node:
        params["gpus_per_node"] = cfg.gpus_per_node
    if cfg.mem_gb:
        params["mem_gb"] = cfg.mem_gb
    if cfg.partition:
        params["slurm_partition"] = cfg.partition
    if cfg.account:
        params["slurm_account"] = cfg.account
    if cfg.qos:
        params["slurm_qos"] = cfg.qos
    if cfg.additional:
        params["slurm_additional_parameters"] = dict(cfg.additional)
    if cfg.setup:
        params["slurm_setup"] = list(cfg.setup)
    return params


def make_executor(name: str, cfg: ExecutorConfig, sweep_dir: Path) -> submitit.Executor:
    """A configured submitit executor ('slurm' or 'debug'). Bad parameters raise ConfigError, naming the key."""
    folder = sweep_dir / SUBMITIT_DIR / "%j"
    if name == "debug":
        return submitit.AutoExecutor(folder=folder, cluster="debug")
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=cfg.slurm.max_num_timeout)
    params = slurm_parameters(cfg.slurm)
    try:
        ex.update_parameters(**params)
    except (ValueError, TypeError, NameError) as e:
        raise cfglib.ConfigError(f"executor.slurm: {e}") from None
    return ex


def check_additional(cfg: SlurmConfig) -> None:
    """submitit passes slurm_additional_parameters through unchecked; refuse ones that shadow named settings."""
    named = {k.removeprefix("slurm_") for k in slurm_parameters(cfg)} | {
        "partition", "account", "qos", "time", "gres", "gpus", "cpus_per_task", "mem", "array", "dependency",
        "output", "error", "job_name", "signal", "requeue"}
    for key in cfg.additional:
        if key.replace("-", "_") in named:
            raise cfglib.ConfigError(f"executor.slurm.additional.{key}: set by grainsweep or by its own key in "
                                     "executor.slurm")


def check_executor(name: str, cfg: ExecutorConfig, sweep_dir: Path) -> str:
    """Resolves 'auto' and validates the executor's parameters; call before anything is submitted."""
    name = resolve_name(name)
    check_additional(cfg.slurm)  # a bad SLURM section is an error wherever this sweep runs
    if name == "slurm":
        if not shutil.which("sbatch"):
            raise cfglib.ConfigError("executor.name='slurm' but sbatch is not on PATH")
        make_executor(name, cfg, sweep_dir)
    return name


def submit(plan: Plan, todo: list[JobSpec], name: str, cfg: ExecutorConfig) -> list[dict]:
    """Runs or submits `todo` (unfinished runs of `plan`) stage by stage; returns the submission records."""
    if not todo:
        return []
    if name == "local":
        return [_run_local(plan, todo)]
    records = []
    dependency = ""
    for stage in (1, 2):
        specs = [j for j in todo if j.stage == stage]
        if not specs:
            continue
        ex = make_executor(name, cfg, plan.sweep_dir)
        if name == "slurm":
            if dependency:
                ex.update_parameters(slurm_dependency=dependency)
            with ex.batch():
                jobs = [ex.submit(RunJob(), spec) for spec in specs]
        else:
            jobs = [ex.submit(RunJob(), spec) for spec in specs]
        array_id = jobs[0].job_id.split("_")[0]
        rec = {"time": time.time(), "executor": name, "stage": stage, "array_id": array_id,
               "dependency": dependency, "folder": str(plan.sweep_dir / SUBMITIT_DIR),
               "jobs": {s.name: j.job_id for s, j in zip(specs, jobs)}}
        if name == "debug":  # runs now; collect the outcome like the local executor does
            rec["states"] = {s.name: _debug_outcome(plan, s, j) for s, j in zip(specs, jobs)}
        append_record(plan.sweep_dir, rec)
        records.append(rec)
        print(f"stage {stage}: {len(specs)} job(s) as array {array_id}"
              + (f" (after {dependency})" if dependency else ""), flush=True)
        dependency = f"afterok:{array_id}"
    return records


def _run_local(plan: Plan, todo: list[JobSpec]) -> dict:
    rec = {"time": time.time(), "executor": "local", "jobs": {s.name: "local" for s in todo}, "states": {}}
    append_record(plan.sweep_dir, rec)
    done_or_ok = {j.run_dir for j in plan.jobs if j not in todo}  # finished before this call
    for i, spec in enumerate(sorted(todo, key=lambda j: j.stage)):
        print(f"[{i + 1}/{len(todo)}] {spec.name}", flush=True)
        if spec.source and spec.source not in done_or_ok:  # a transfer or clustering job needs its source
            rec["states"][spec.name] = "failed"
            _write_error(plan, spec, f"not run: its pretraining run {Path(spec.source).name} did not succeed\n")
        else:
            t0 = time.time()
            try:
                RunJob()(spec)
                rec["states"][spec.name] = "done"
                done_or_ok.add(spec.run_dir)
                print(f"    done in {time.time() - t0:.1f} s", flush=True)
            except Exception:  # noqa: BLE001 - one failed run must not stop the others
                rec["states"][spec.name] = "failed"
                _write_error(plan, spec, traceback.format_exc())
                print(f"    FAILED; see {plan.sweep_dir / LOGS_DIR / (spec.name + '.error')}", flush=True)
        _update_last_record(plan.sweep_dir, rec)
    return rec


def _debug_outcome(plan: Plan, spec: JobSpec, job) -> str:
    try:
        job.result()
        return "done"
    except Exception:  # noqa: BLE001
        _write_error(plan, spec, traceback.format_exc())
        return "failed"


def _write_error(plan: Plan, spec: JobSpec, text: str) -> None:
    path = plan.sweep_dir / LOGS_DIR / f"{spec.name}.error"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# the submission log
def read_records(sweep_dir: Path) -> list[dict]:
    path = Path(sweep_dir) / JOBS_FILE
    return json.loads(path.read_text()) if path.is_file() else []


def append_record(sweep_dir: Path, rec: dict) -> None:
    records = read_records(sweep_dir) + [rec]
    provenance.write_atomic(Path(sweep_dir) / JOBS_FILE, json.dumps(records, indent=1) + "\n")


def _update_last_record(sweep_dir: Path, rec: dict) -> None:
    records = read_records(sweep_dir)
    records[-1] = rec
    provenance.write_atomic(Path(sweep_dir) / JOBS_FILE, json.dumps(records, indent=1) + "\n")
