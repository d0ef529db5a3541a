"""Plain transfers: every pretraining run fine-tuned on the target (its dataset and level), once per mode of
`transfer.modes` that is a core transfer mode (full: every weight trains; linear: a new head on frozen features;
core/train/transfer.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.train.run_config import TRANSFER_MODES
from launch.arms.base import Arm
from launch.arms.select import SelectArmConfig

if TYPE_CHECKING:
    from launch.plan import JobSpec, PlanContext


@dataclass(frozen=True)
class TransferConfig:
    modes: tuple[str, ...] = ("full",)  # one transfer job per mode and pretraining run: full, linear (this arm)
    # or select (launch/arms/select.py: full fine-tuning plus selected pretraining data, settings in `select`)
    set: tuple[str, ...] = ()  # dotted RunConfig overrides for transfers and scratch runs, e.g. 'train.epochs=5'
    select: SelectArmConfig = field(default_factory=SelectArmConfig)

    def __post_init__(self) -> None:
        from launch.arms import transfer_modes

        if not self.modes:
            raise ValueError("transfer.modes: at least one mode is needed")
        for i, mode in enumerate(self.modes):
            if mode not in transfer_modes():
                raise ValueError(f"transfer.modes[{i}]={mode!r}; choose from {list(transfer_modes())}")


class Transfer(Arm):
    name = "transfer"
    stage = 2
    kind = "transfer"
    table = "target"
    modes = TRANSFER_MODES

    def plan(self, ctx: PlanContext, sources: list[JobSpec]) -> list[JobSpec]:
        return [ctx.follow(self, src, ctx.transfer_config(src.seed), ctx.target, mode=mode)
                for src in sources for mode in ctx.cfg.transfer.modes if mode in self.modes]

    def run(self, spec: JobSpec, run_dir: Path, resume: bool) -> dict:
        from core.train import transfer

        return transfer.finetune(spec.source, spec.config, run_dir, mode=spec.mode, resume=resume)
