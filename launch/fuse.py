"""Fused sweeps (`fuse: {levels: true}`): the pretraining runs of one seed that differ only in data.level train as
ONE job from one loader (core.train.fused.run_fused), since grainsweep's crops and orders are a pure function of
the seed and the epoch: K runs of a seed at K levels read identical batches, which a separate job per run decodes
K times.

Planning (`group_jobs`, pure, no torch) gives such runs of the levels and hierarchies arms a common JobSpec.group,
at most `fuse.max_models` per group, in plan order; every run keeps its own JobSpec and run folder, so status,
report, transfers and reruns read them as before. Executors run each group's unfinished members as one job
(`units`); finished members are skipped, and a group left with one unfinished member runs as an ordinary job.
The job (`train`) measures the device it landed on and splits a group whose estimate does not fit into parts
trained one after the other (printing what and why), so the same plan fits a small GPU and a large one.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import TYPE_CHECKING, Callable

from core.format import config as cfglib
from launch import arms
from launch.arms.hierarchies import Hierarchies
from launch.arms.levels import Levels

if TYPE_CHECKING:
    from core.train.run_config import RunConfig
    from launch.plan import JobSpec
    from launch.sweep_config import FuseConfig

FUSABLE = (Levels, Hierarchies)  # arms whose runs of a seed differ only in the label column
GROUP_PREFIX = "fused"


# planning
def group_jobs(jobs: list[JobSpec], fuse: FuseConfig) -> list[JobSpec]:
    """`jobs` (in plan order) with JobSpec.group set on the runs that train together; unchanged when fuse.levels
    is off. A family (same seed, same config apart from data.level) larger than max_models is cut into
    consecutive groups; a group of one is no group."""
    from dataclasses import replace

    if not fuse.levels:
        return jobs
    families: dict[str, list[int]] = {}
    for i, j in enumerate(jobs):
        if j.stage == 1 and j.options is None and isinstance(arms.runner(j.kind, j.mode, j.arm), FUSABLE):
            families.setdefault(_family_key(j), []).append(i)
    cap = fuse.max_models or len(jobs)
    out = list(jobs)
    for members in families.values():
        for k in range(0, len(members), cap):
            chunk = members[k:k + cap]
            if len(chunk) < 2:
                continue
            name = group_name([jobs[i] for i in chunk])
            for i in chunk:
                out[i] = replace(jobs[i], group=name)
    return out


def _family_key(j: JobSpec) -> str:
    d = cfglib.to_dict(j.config)
    d["data"] = {k: v for k, v in d["data"].items() if k != "level"}
    return json.dumps({"seed": j.seed, "config": d}, sort_keys=True)


def group_name(members: list[JobSpec]) -> str:
    """fused-s<seed>-<10 hex digits over the members' run names>: the same members, the same name."""
    digest = hashlib.sha256("\n".join(sorted(m.name for m in members)).encode()).hexdigest()[:10]
    return f"{GROUP_PREFIX}-s{members[0].seed}-{digest}"


def groups(jobs: list[JobSpec]) -> dict[str, list[JobSpec]]:
    """group name -> its members, in plan order."""
    out: dict[str, list[JobSpec]] = {}
    for j in jobs:
        if j.group:
            out.setdefault(j.group, []).append(j)
    return out


# executors
def units(todo: list[JobSpec]) -> list[list[JobSpec]]:
    """The jobs an executor runs for `todo` (unfinished runs), in order: a group's members in `todo` as one job at
    its first member's place, every other run alone."""
    out: list[list[JobSpec]] = []
    seen: dict[str, list[JobSpec]] = {}
    for s in todo:
        if s.group and s.group in seen:
            seen[s.group].append(s)
            continue
        out.append([s])
        if s.group:
            seen[s.group] = out[-1]
    return out


def unit_name(unit: list[JobSpec]) -> str:
    """A job's name in logs and printouts: its group's, or its run's."""
    return unit[0].group if len(unit) > 1 else unit[0].name


def job_arg(unit: list[JobSpec]) -> JobSpec | list[JobSpec]:
    """What launch.jobs.RunJob is called with: the list of a group's members, or the one run."""
    return list(unit) if len(unit) > 1 else unit[0]


# the job
def train(specs: list[JobSpec], resume: bool) -> list[dict]:
    """Trains the group's members `specs` (unfinished ones; core skips any done meanwhile) into their own run
    folders, fused, in parts that fit the device's memory. Returns their results in order."""
    estimate, run_fused = _core()
    cfgs = [s.config for s in specs]
    budget, where = device_bytes(cfgs[0])
    parts = split(cfgs, budget, estimate)
    if len(parts) > 1:
        sizes = " + ".join(str(len(p)) for p in parts)
        print(f"fuse: {specs[0].group}: {len(specs)} models need ~{estimate(cfgs) / 2**30:.2f} GiB, {where} has "
              f"{budget / 2**30:.2f} GiB: trained as {sizes} model(s), one part after the other", flush=True)
    out: list[dict] = []
    at = 0
    for part in parts:
        members = specs[at:at + len(part)]
        at += len(part)
        if len(members) == 1:  # nothing to share: the ordinary run
            from core.train import run as train_run

            out.append(train_run.run(members[0].config, members[0].run_dir, resume=resume))
        else:
            out += run_fused([m.config for m in members], [m.run_dir for m in members], resume=resume)
    return out


def split(cfgs: list[RunConfig], budget: int, estimate: Callable[[list[RunConfig]], int]) -> list[list[RunConfig]]:
    """`cfgs` cut into consecutive parts whose estimate fits `budget` bytes; a model that does not fit alone is a
    part of its own (as it would be in a sweep without fuse: the run itself then reports the device's error)."""
    parts: list[list[RunConfig]] = []
    for c in cfgs:
        if parts and estimate(parts[-1] + [c]) <= budget:
            parts[-1].append(c)
        else:
            parts.append([c])
    return parts


def device_bytes(cfg: RunConfig) -> tuple[int, str]:
    """(bytes a fused job may use, where): free memory of the CUDA device, else the available RAM. In a
    distributed job (WORLD_SIZE > 1) the device's total, divided among the node's processes on the CPU, so
    that every rank makes the same split."""
    import psutil
    import torch

    from core.device import resolve_device

    device = resolve_device(cfg.train.device)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return (total if distributed else free), f"{device} ({'total' if distributed else 'free'})"
    if distributed:
        return psutil.virtual_memory().total // int(os.environ.get("LOCAL_WORLD_SIZE", "1")), "RAM (total share)"
    return psutil.virtual_memory().available, "RAM (available)"


def _core() -> tuple[Callable[[list[RunConfig]], int], Callable[..., list[dict]]]:
    """core.train.fused's estimate_bytes and run_fused (torch: imported when a job runs, not when planning)."""
    from core.train.fused import estimate_bytes, run_fused

    return estimate_bytes, run_fused
