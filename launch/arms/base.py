"""What a sweep arm is: the jobs it plans, how one of its jobs runs, and how the report shows its results.

An arm is one module of launch/arms/ holding a subclass of `Arm` (and the dataclass of its sweep-config section),
registered by one line in launch/arms/__init__.py. Stage-1 arms plan runs from the dataset alone (pretraining,
the scratch baseline); stage-2 arms plan runs that start from a finished pretraining run (its `source`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from launch.plan import JobSpec, PlanContext
    from launch.sweep_config import SweepConfig


SOURCE_KIND = "pretrain"  # the kind of run stage-2 arms start from


class Arm:
    name: ClassVar[str]  # registry name
    stage: ClassVar[int]  # 1: needs only the dataset; 2: needs its source pretraining run to have finished
    kind: ClassVar[str]  # JobSpec.kind of its jobs (the first word of their folder names)
    table: ClassVar[str]  # the report table its results go to: 'target' (accuracy on the target level after
    # training on it), 'pretrained' (pretraining runs read at the target), 'clustering'
    modes: ClassVar[tuple[str, ...]] = ()  # transfer modes (transfer.modes) whose jobs it plans and runs; () =
    # every job of its kind is its own (launch.arms.runner)
    options: ClassVar[type | None] = None  # the dataclass of JobSpec.options for its jobs; None = no options
    one_process: ClassVar[bool] = False  # its jobs are not distributed: in a multi-task job rank 0 alone runs them
    switch: ClassVar[str] = ""  # the sweep-config section whose `enabled` turns the arm on; '' = always on

    # stage 1 only: what its jobs, and the jobs that start from them, carry as JobSpec.arm (in run names, the
    # report's `arm` column), and how the report shows that family
    tag: ClassVar[str] = ""
    suffix: ClassVar[str] = ""  # after the pretraining level in the pretrained and clustering tables
    plot: ClassVar[str] = "line"  # report.png: 'line' (one line over levels per mode), 'marker' (a star per
    # result), 'band' (a horizontal line with its spread: no pretraining level to put it at)

    def owns(self, tag: str) -> bool:
        """Stage 1: whether jobs carrying JobSpec.arm `tag` are its own (launch.arms.runner); an arm whose jobs
        carry several tags (one per hierarchy kind: launch/arms/hierarchies.py) answers for all of them."""
        return tag == self.tag

    def hierarchy(self, tag: str) -> str:
        """Stage 1: the name of the label hierarchy its runs' levels (JobSpec.arm `tag`) come from: one curve of
        report.png per hierarchy and transfer mode (for 'line' arms)."""
        return "taxonomy"

    def enabled(self, cfg: SweepConfig) -> bool:
        return not self.switch or getattr(cfg, self.switch).enabled

    def prepare(self, cfg: SweepConfig, data: Path) -> None:
        """Called by launch.plan.prepare (only when enabled) for what must exist before planning, e.g. derived
        label levels written into the dataset folder `data`; a rerun must reuse what an earlier one made."""

    def plan(self, ctx: PlanContext, sources: list[JobSpec]) -> list[JobSpec]:
        """Its jobs (called only when enabled); `sources` are the pretraining runs planned by the stage-1 arms
        (stage 2 only)."""
        raise NotImplementedError

    def run(self, spec: JobSpec, run_dir: Path, resume: bool) -> dict:
        """Runs `spec` into `run_dir` and returns its result (result.json); the default trains spec.config."""
        from core.train import run as train_run

        return train_run.run(spec.config, run_dir, resume=resume)

    def mode_label(self, spec: JobSpec) -> str:
        """The 'mode' shown for one of its jobs (`grainsweep status`)."""
        return spec.mode

    def setting(self, pretrain_level: str, target: str) -> str:
        """Stage 1: the report's 'setting' label of the target results that descend from its runs."""
        return self.name
