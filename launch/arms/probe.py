"""Transfer mode 'probe': a converged linear probe on frozen features (issue 16; being built)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from launch.arms.base import Arm

if TYPE_CHECKING:
    from launch.plan import JobSpec, PlanContext


class Probe(Arm):
    name = "probe"
    stage = 2
    kind = "transfer"
    table = "target"
    modes = ("probe",)

    def plan(self, ctx: PlanContext, sources: list[JobSpec]) -> list[JobSpec]:
        return []
