"""Transfer mode 'probe': per pretraining run, a converged linear probe on its frozen features (features computed
once, L2 logistic regression by lbfgs, C chosen on a held-out part of the train split; core/methods/probe.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from launch.arms.base import Arm

if TYPE_CHECKING:
    from launch.plan import JobSpec, PlanContext


class Probe(Arm):
    name = "probe"
    one_process = True  # one solve on frozen features: nothing to spread over ranks
    stage = 2
    kind = "transfer"
    table = "target"
    modes = ("probe",)

    def plan(self, ctx: PlanContext, sources: list[JobSpec]) -> list[JobSpec]:
        # the transfer config (target level, transfer.set) is kept for its data settings and so that the folder
        # name follows the other transfers'; the probe trains no epochs, so optim.* and train.epochs are unused
        return [ctx.follow(self, src, ctx.transfer_config(src.seed), ctx.target, mode=mode)
                for src in sources for mode in ctx.cfg.transfer.modes if mode in self.modes]

    def run(self, spec: JobSpec, run_dir: Path, resume: bool) -> dict:
        from core.methods.probe import probe

        return probe(spec.source, spec.config, run_dir, resume=resume)
