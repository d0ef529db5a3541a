"""Derived control hierarchies as pretraining arms (Hong et al.): k-means aligned/misaligned, random groupings,
one class per sample. (Being built: issue 15.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from launch.arms.base import SOURCE_KIND, Arm

if TYPE_CHECKING:
    from launch.plan import JobSpec, PlanContext


@dataclass(frozen=True)
class HierarchiesConfig:
    enabled: bool = False


class Hierarchies(Arm):
    name = "hierarchies"
    switch = "hierarchies"
    stage = 1
    kind = SOURCE_KIND
    table = "pretrained"
    tag = "derived"

    def plan(self, ctx: PlanContext, sources: list[JobSpec]) -> list[JobSpec]:
        return []
