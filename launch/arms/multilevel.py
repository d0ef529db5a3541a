"""Multi-level pretraining (ImageNet-21K-P's semantic softmax): one more pretraining run per seed, at the finest
pretraining level with one head per level from there up (core/train/semantic_softmax.py); transferred and
clustered like the single-level runs (report rows 'multi-level', stars in report.png)."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.train.run_config import TrainConfig
from launch.arms.base import SOURCE_KIND, Arm

if TYPE_CHECKING:
    from launch.plan import JobSpec, PlanContext


# the names train.objective_weights accepts, and its default: the run schema's, not a copy
ObjectiveWeights = typing.get_type_hints(TrainConfig)["objective_weights"]


@dataclass(frozen=True)
class MultiLevelConfig:
    enabled: bool = False  # one more pretraining run per seed, from the finest pretraining level up
    weights: ObjectiveWeights = TrainConfig.objective_weights  # train.objective_weights of that run


class MultiLevel(Arm):
    name = "multilevel"
    switch = "multilevel"
    stage = 1
    kind = SOURCE_KIND
    table = "pretrained"
    tag = "multilevel"
    suffix = ", multi-level"
    plot = "marker"

    def plan(self, ctx: PlanContext, sources: list[JobSpec]) -> list[JobSpec]:
        level = ctx.levels[0]
        objective = {"train.objective": "semantic_softmax", "train.objective_weights": ctx.cfg.multilevel.weights}
        return [ctx.job(self, ctx.run_config(level, seed, objective, key="multilevel"), level, seed,
                        pretrain_level=level) for seed in ctx.cfg.seeds]

    def setting(self, pretrain_level: str, target: str) -> str:
        return "multi-level pretraining (semantic softmax)"
