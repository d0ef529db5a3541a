"""The baseline without pretraining: per seed, one run trained on the target (its dataset and level) from a random
init, with the transfers' settings (`run` + `transfer.set`) and then `scratch.set`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from launch.arms.base import Arm

if TYPE_CHECKING:
    from launch.plan import JobSpec, PlanContext


@dataclass(frozen=True)
class ScratchConfig:
    enabled: bool = True  # baseline without pretraining: random init, trained on the target level
    set: tuple[str, ...] = ()  # dotted overrides on top of `run` + `transfer.set` (e.g. a longer schedule)


class Scratch(Arm):
    name = "scratch"
    switch = "scratch"
    stage = 1
    kind = "scratch"
    table = "target"
    tag = ""
    plot = "band"

    def plan(self, ctx: PlanContext, sources: list[JobSpec]) -> list[JobSpec]:
        return [ctx.job(self, ctx.target_config(seed, ctx.scratch_set, key="scratch.set"), ctx.target, seed,
                        pretrain_level="") for seed in ctx.cfg.seeds]

    def setting(self, pretrain_level: str, target: str) -> str:
        return "no pretraining (scratch)"
