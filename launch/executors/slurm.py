"""The SLURM executor: stage 1 as ONE job array (submitit `executor.batch()`); stage 2 as one small array per
pretraining run, held by `--dependency=afterok:<that run's job>` (an array task `<array>_<task>`). So a failed
pretraining run holds back only its own transfers and clustering job: they stay pending (DependencyNeverSatisfied)
or are cancelled where the cluster has kill_invalid_depend, and `grainsweep status` shows them "blocked" by it.
A stage-2 job whose source run is already done has no dependency; one whose source is still queued or running
from an earlier submission waits for that job. A rerun resubmits the failed run and its dependants (cancelling
dependants still pending on the old, failed job), nothing else. Jobs are RunJob Checkpointables: a timeout or
preemption requeues them and they resume from their last checkpoint. Every cluster detail lives in
`slurm_parameters`.

Per-run arrays rather than `aftercorr` between two aligned arrays: task i of stage 2 would have to match task i of
stage 1, which breaks as soon as some pretraining runs are done from an earlier sweep and not resubmitted, or a
run has several dependants (a transfer per mode, a clustering job).

A fused group (launch/fuse.py) is one array task; jobs.json maps each member to it (and its record's "groups" names
it), so a stage-2 job waits with afterok on its source's group task. A group that fails in one member leaves the
finished members' dependants pending forever (DependencyNeverSatisfied): status shows them to do, and a rerun
cancels and resubmits them without a dependency, their source being done.

States come from squeue, then from text: the run's own error log (<sweep>/logs/<run>.error, written by the job)
and submitit's stderr log. submitit's result pickles are never read: a file planted in a shared sweep folder
would run its code in whoever reads the status.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import submitit

from core.format import config as cfglib
from core.format.run_folder import is_done
from launch import fuse
from launch.executors import base, records
from launch.executors.job import SweepJob
from launch.plan import JobSpec, Plan
from launch.sweep_config import SlurmConfig

PING_TIMEOUT_S = 10  # `scontrol ping` answers in milliseconds when the controller is up or refuses connections
RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING"}
PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESV_DEL_HOLD"}
# a pending job whose dependency failed (squeue's reason DependencyNeverSatisfied) will never start: a transfer of
# a finished run whose fused group failed in another member; shown as to do, cancelled and resubmitted by a rerun
NEVER = "DEPENDENCY_NEVER_SATISFIED"
_JOB_ID = re.compile(r"^\d+(_\d+)?$")  # also keeps a doctored jobs.json from naming paths outside the sweep


class SlurmExecutor(base.Executor):
    name = "slurm"

    @staticmethod
    def installed() -> bool:
        return shutil.which("sbatch") is not None

    @classmethod
    def unavailable(cls) -> str | None:
        """Why jobs cannot be submitted now (sbatch missing, controller not answering), or None."""
        if not cls.installed():
            return "sbatch is not on PATH"
        if not shutil.which("scontrol"):
            return "scontrol is not on PATH (it comes with sbatch in slurm-client)"
        try:
            res = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=PING_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return f"the SLURM controller did not answer within {PING_TIMEOUT_S} s (scontrol ping)"
        except OSError as e:
            return f"scontrol ping: {e}"
        if res.returncode == 0 and " UP" in res.stdout:
            return None
        said = next((x.strip() for x in (res.stdout + res.stderr).splitlines() if x.strip()), "no answer")
        return f"the SLURM controller does not answer (scontrol ping: {said})"

    @staticmethod
    def check_section(cfg: SlurmConfig) -> None:
        check_additional(cfg)

    def check(self) -> None:
        self._executor()

    def ready(self) -> None:
        why_not = self.unavailable()
        if why_not is not None:
            raise cfglib.ConfigError(f"executor.name='slurm': {why_not}; start SLURM (slurmctld) or use "
                                     "--executor local")

    def _executor(self) -> submitit.AutoExecutor:
        ex = submitit.AutoExecutor(folder=self.sweep_dir / base.SUBMITIT_DIR / "%j", cluster="slurm",
                                   slurm_max_num_timeout=self.cfg.slurm.max_num_timeout)
        try:
            ex.update_parameters(**slurm_parameters(self.cfg.slurm))
        except (ValueError, TypeError, NameError) as e:
            raise cfglib.ConfigError(f"executor.slurm: {e}") from None
        return ex

    def submit(self, plan: Plan, todo: list[JobSpec]) -> list[dict]:
        queue = squeue_states() or {}
        earlier = records.latest_jobs(self.sweep_dir)
        # a stage-2 job handed back while still queued waits on a failed source's old job (DependencyNeverSatisfied
        # where the cluster keeps such jobs): cancel it, or it would run twice once resubmitted
        stale = [earlier[j.name][1] for j in todo if j.stage == 2 and j.name in earlier
                 and queue.get(earlier[j.name][1]) in (*PENDING, NEVER)]
        if stale:
            subprocess.run(["scancel", *stale], capture_output=True, timeout=60)
        out = []
        stage1 = [j for j in todo if j.stage == 1]
        if stage1:
            out.append(self._submit_array(1, stage1, ""))
        submitted = {name: job_id for rec in out for name, job_id in rec["jobs"].items()}
        # stage 2: one array per dependency (per source run still to finish; one without for sources done)
        groups: dict[str, list[JobSpec]] = {}
        for spec in (j for j in todo if j.stage == 2):
            groups.setdefault(_dependency(spec, submitted, earlier, queue), []).append(spec)
        out += [self._submit_array(2, specs, dependency) for dependency, specs in groups.items()]
        return out

    def _submit_array(self, stage: int, specs: list[JobSpec], dependency: str) -> dict:
        ex = self._executor()
        if dependency:
            ex.update_parameters(slurm_dependency=dependency)
        units = fuse.units(specs)  # a fused group's members: one task
        with ex.batch():
            jobs = [ex.submit(SweepJob(), fuse.job_arg(u)) for u in units]
        array_id = jobs[0].job_id.split("_")[0]
        rec = {"time": time.time(), "executor": self.name, "stage": stage, "array_id": array_id,
               "dependency": dependency, "folder": str(self.sweep_dir / base.SUBMITIT_DIR),
               "jobs": {s.name: j.job_id for u, j in zip(units, jobs) for s in u}}
        fused = {fuse.unit_name(u): j.job_id for u, j in zip(units, jobs) if len(u) > 1}
        if fused:
            rec["groups"] = fused
        records.append_record(self.sweep_dir, rec)
        print(f"stage {stage}: {len(specs)} run(s) in {len(units)} job(s) as array {array_id}"
              + (f" ({len(fused)} fused)" if fused else "") + (f" (after {dependency})" if dependency else ""),
              flush=True)
        return rec

    @classmethod
    def states(cls, sweep_dir: Path, jobs: dict[str, tuple[dict, str]]) -> dict[str, tuple[str, str]]:
        queue = squeue_states()
        out = {}
        for name, (rec, job_id) in jobs.items():
            if not _JOB_ID.match(job_id):
                out[name] = (base.FAILED, f"jobs.json: {job_id!r} is not a SLURM job id")
            elif queue is not None and queue.get(job_id) == NEVER:
                out[name] = (base.TODO, "its dependency failed (another run of its source's fused job); a rerun "
                                        "resubmits it")
            elif job_id in (queue or {}):
                state = queue[job_id]
                out[name] = (base.RUNNING if state in RUNNING else base.PENDING if state in PENDING else base.FAILED,
                             state)
            elif queue is None:
                out[name] = (base.PENDING, "squeue unavailable; no result yet")
            else:
                out[name] = (base.FAILED, base.error_note(sweep_dir, name, since=rec.get("time", 0.0))
                             or _submitit_error(sweep_dir, job_id)
                             or "ended without a result (cancelled, or its dependency failed)")
        return out


def _dependency(spec: JobSpec, submitted: dict[str, str], earlier: dict[str, tuple[dict, str]],
                queue: dict[str, str]) -> str:
    """afterok on the job of the stage-2 job's source run: the one just submitted, else one still queued or running
    from an earlier submission; none where the source is done (or has no live job: the job then fails at once,
    saying its source has not finished, rather than wait for nothing)."""
    source = spec.source_name
    if not source or is_done(spec.source):
        return ""
    if source in submitted:
        return f"afterok:{submitted[source]}"
    if source in earlier and earlier[source][1] in queue:
        return f"afterok:{earlier[source][1]}"
    return ""


def squeue_states() -> dict[str, str] | None:
    """job id (array tasks as <array>_<task>) -> SLURM state (NEVER for a pending job whose dependency failed);
    None where squeue does not answer."""
    if not shutil.which("squeue"):
        return None
    try:
        res = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T %r"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    out = {}
    for line in res.stdout.splitlines():
        words = line.split()
        if len(words) >= 2:
            never = words[1] == "PENDING" and len(words) > 2 and words[2] == "DependencyNeverSatisfied"
            out[words[0]] = NEVER if never else words[1]
    return out


def _submitit_error(sweep_dir: Path, job_id: str) -> str:
    """What went wrong, from submitit's stderr log of the job (text), e.g. a time limit or an out-of-memory kill."""
    path = Path(sweep_dir) / base.SUBMITIT_DIR / job_id / f"{job_id}_0_log.err"
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    line = base.last_error_line(text[-20000:])
    return line if "rror" in line or "CANCELLED" in line or "Exception" in line else ""


def slurm_parameters(cfg: SlurmConfig) -> dict:
    """The sweep config's SLURM section as submitit parameters: the one place that knows the cluster."""
    params = dict(timeout_min=cfg.timeout_min, cpus_per_task=cfg.cpus_per_task,
                  tasks_per_node=cfg.tasks_per_node or max(cfg.gpus_per_node, 1), nodes=cfg.nodes,
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


def check_additional(cfg: SlurmConfig) -> None:
    """submitit passes slurm_additional_parameters through unchecked; refuse ones that shadow named settings."""
    named = {k.removeprefix("slurm_") for k in slurm_parameters(cfg)} | {
        "partition", "account", "qos", "time", "gres", "gpus", "cpus_per_task", "mem", "array", "dependency",
        "output", "error", "job_name", "signal", "requeue"}
    for key in cfg.additional:
        if key.replace("-", "_") in named:
            raise cfglib.ConfigError(f"executor.slurm.additional.{key}: set by grainsweep or by its own key in "
                                     "executor.slurm")
