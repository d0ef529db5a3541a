"""Single-level pretraining: one run per (pretraining level, seed), each training one head at its level.

Where the target level is a level of the pretraining dataset (launch.plan_checks.Target.shared), it always joins the
pretraining levels: pretraining directly on the target is the baseline the finer levels are compared with (the
report's 'pretrain on target' rows, circled in report.png). A separate target with classes of its own (ImageNet-21k
-> ImageNet-1k) has no such level; the scratch baseline is the comparison there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from launch.arms.base import SOURCE_KIND, Arm

if TYPE_CHECKING:
    from launch.plan import JobSpec, PlanContext


class Levels(Arm):
    name = "levels"
    stage = 1
    kind = SOURCE_KIND
    table = "pretrained"
    tag = ""
    plot = "line"

    def plan(self, ctx: PlanContext, sources: list[JobSpec]) -> list[JobSpec]:
        levels = sorted({*ctx.levels, *([ctx.target] if ctx.shared else [])}, key=ctx.hierarchy.index)
        return [ctx.job(self, ctx.run_config(lv, seed), lv, seed, pretrain_level=lv)
                for seed in ctx.cfg.seeds for lv in levels]

    def setting(self, pretrain_level: str, target: str) -> str:
        """`target` is '' where the target level is not one of the pretraining dataset's (a separate target)."""
        if not target:
            return "pretrain"
        return "pretrain on target" if pretrain_level == target else "pretrain finer"
