"""The sweep arms, in planning order. Adding an arm: a module here with its `Arm` subclass (and its config
section, a field of launch/sweep_config.SweepConfig), and one line in ARMS."""

from __future__ import annotations

from typing import TYPE_CHECKING

from launch.arms.base import SOURCE_KIND, Arm
from launch.arms.clustering import Clustering
from launch.arms.hierarchies import Hierarchies
from launch.arms.levels import Levels
from launch.arms.multilevel import MultiLevel
from launch.arms.probe import Probe
from launch.arms.scratch import Scratch
from launch.arms.select import Select
from launch.arms.transfer import Transfer

if TYPE_CHECKING:
    from launch.plan import JobSpec

ARMS: tuple[Arm, ...] = (
    Levels(),
    MultiLevel(),
    Hierarchies(),
    Scratch(),
    Transfer(),
    Probe(),
    Select(),
    Clustering(),
)


def transfer_modes() -> tuple[str, ...]:
    """Every value `transfer.modes` accepts, each owned by one arm."""
    return tuple(m for a in ARMS for m in a.modes)


def runner(kind: str, mode: str = "", arm: str = "") -> Arm:
    """The arm whose job is of `kind` (transfer `mode`; stage-1 arms: JobSpec.arm `arm`): it runs the job and
    files its result."""
    for a in ARMS:
        if a.kind == kind and (not a.modes or mode in a.modes) and (a.stage == 2 or a.owns(arm)):
            return a
    raise ValueError(f"no sweep arm runs jobs of kind {kind!r}" + (f", mode {mode!r}" if mode else "")
                     + (f", arm {arm!r}" if arm else ""))


def origin(kind: str, arm: str) -> Arm:
    """The stage-1 arm a job (or report row) of `kind` and JobSpec.arm `arm` comes from: its own arm for a
    stage-1 job, its source pretraining run's for a stage-2 one."""
    stage1 = {a.kind for a in ARMS if a.stage == 1}
    return runner(kind if kind in stage1 else SOURCE_KIND, "", arm)


def mode_label(spec: JobSpec) -> str:
    """The 'mode' shown for a job (`grainsweep status`): the transfer mode, or its arm's method (k-means)."""
    return runner(spec.kind, spec.mode, spec.arm).mode_label(spec)
