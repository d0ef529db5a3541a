"""Transfer mode 'select' (Liu et al., NeurIPS 2022): full fine-tuning on the target plus the pretraining data of
the k pretraining classes selected by unbalanced optimal transport (core/methods/select_transfer.py). The extra data
come from the source run's own dataset (the pretraining one), the target batches from the job's config (the target
dataset): with a separate `target_dataset` they are other images, as in Liu et al."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from launch.arms.base import Arm

if TYPE_CHECKING:
    from launch.plan import JobSpec, PlanContext


@dataclass(frozen=True)
class SelectArmConfig:
    k: int = 100  # pretraining classes whose images join the fine-tuning (Liu et al.: 100); capped per job at the
    # pretraining level's number of classes
    lam: float = 0.3  # weight of the selected data's loss: L_target + lam * L_selected
    batch_size: int = 0  # selected images per step; 0 = data.batch_size

    def __post_init__(self) -> None:
        if self.k < 1 or self.lam < 0 or self.batch_size < 0:
            raise ValueError(f"transfer.select: k={self.k} must be >= 1, lam={self.lam} and batch_size="
                             f"{self.batch_size} >= 0")


class Select(Arm):
    name = "select"
    stage = 2
    kind = "transfer"
    table = "target"
    modes = ("select",)
    options = SelectArmConfig  # the job's own settings, k capped (the rest of SelectConfig keeps core's defaults)

    def plan(self, ctx: PlanContext, sources: list[JobSpec]) -> list[JobSpec]:
        sel = ctx.cfg.transfer.select
        return [ctx.follow(self, src, ctx.transfer_config(src.seed), ctx.target, mode=mode,
                           options=dataclasses.replace(sel, k=min(sel.k, ctx.classes(src.pretrain_level))))
                for src in sources for mode in ctx.cfg.transfer.modes if mode in self.modes]

    def run(self, spec: JobSpec, run_dir: Path, resume: bool) -> dict:
        from core.methods.select_transfer import SelectConfig, finetune_selected

        o = spec.options
        select = SelectConfig(k=o.k, lam=o.lam, batch_size=o.batch_size)
        return finetune_selected(spec.source, spec.config, run_dir, select, mode="full", resume=resume)
