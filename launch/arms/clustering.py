"""Clustering of frozen features (Adaloglou et al.): per pretraining run, k-means on its pooled val features at
every level's class count, scored by NMI, ARI and Hungarian accuracy (core/methods/cluster_run.py). The job's
config is its source's; its folder holds only result.json (the source gets clustering.json too)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from launch.arms.base import Arm

if TYPE_CHECKING:
    from launch.plan import JobSpec, PlanContext


@dataclass(frozen=True)
class ClusteringConfig:
    enabled: bool = True  # one stage-2 job per pretraining run (`grainsweep cluster` on it)


class Clustering(Arm):
    name = "clustering"
    switch = "clustering"
    one_process = True  # one solve on frozen features: nothing to spread over ranks
    stage = 2
    kind = "cluster"
    table = "clustering"

    def plan(self, ctx: PlanContext, sources: list[JobSpec]) -> list[JobSpec]:
        return [ctx.follow(self, src, src.config, src.level) for src in sources]

    def run(self, spec: JobSpec, run_dir: Path, resume: bool) -> dict:
        from core.methods import cluster_run

        return cluster_run.cluster_into(spec.source, run_dir)  # nothing to resume: k-means is one step

    def mode_label(self, spec: JobSpec) -> str:
        return "k-means"
