"""The schema of a sweep (`grainsweep sweep`): every default in one place, with its meaning.

A sweep pretrains on `dataset` at each level of `pretrain_levels` for each seed, then transfers each pretrained
run to `target_level` of `target_dataset` (default: the pretraining dataset itself; one transfer per mode in
`transfer.modes`); baselines: training on the target from scratch (`scratch.enabled`: `run` + `transfer.set` +
`scratch.set`, random init) and, where the target level is also a level of the pretraining dataset with the same
classes, pretraining directly on it (the target level in `pretrain_levels`, added when missing). Further arms:
transfer mode 'select' (fine-tuning with selected pretraining data, Liu et al.) and `multilevel.enabled`
(semantic-softmax pretraining over all levels, ImageNet-21K-P). `fuse.levels` trains a seed's pretraining runs
at several levels as one job from one loader (launch/fuse.py). With `clustering.enabled`, each pretraining run
also gets a clustering evaluation of its frozen features (Adaloglou et al.). Job settings are RunConfigs: `run` is
the pretraining run; `transfer.set` (dotted overrides, as `--set`) changes it for the transfers and the scratch
baseline. The arms are modules of launch/arms/, each with the schema of its section here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.format import config as cfglib
from core.train.run_config import DataConfig, RunConfig
from launch.arms.clustering import ClusteringConfig
from launch.arms.hierarchies import HierarchiesConfig
from launch.arms.multilevel import MultiLevelConfig
from launch.arms.scratch import ScratchConfig
from launch.arms.transfer import TransferConfig
from launch import executors

SWEEPS_DIR = Path(__file__).parent / "sweeps"  # packaged sweep files; `default.yaml` is the default
EXECUTORS = executors.CHOICES  # 'auto' and the registered executors' names (launch/executors/__init__.py)
_SBATCH_KEY = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass(frozen=True)
class DatasetConfig:
    path: str = DataConfig.path  # dataset folder (train.beton, val.beton, hierarchy.json); relative to the cwd
    synthetic_preset: str = ""  # '' = `path` must exist; a preset name (tiny|default|large) = convert the
    # synthetic data into `path` first (convert-once: an identical dataset already there is reused)
    synthetic_set: tuple[str, ...] = ()  # dotted overrides for that conversion, e.g. 'synthetic.seed=1'


@dataclass(frozen=True)
class SlurmConfig:
    partition: str = ""  # '' = the cluster's default partition
    gpus_per_node: int = 0  # GPUs per node of a job
    nodes: int = 1  # nodes per job; a job runs nodes x tasks processes (one torch.distributed rank each)
    tasks_per_node: int = 0  # processes per node; 0 = one per GPU (gpus_per_node), at least 1
    cpus_per_task: int = 2  # CPU cores per job (ffcv decode threads + the training process)
    mem_gb: float = 0.0  # memory per job in GiB; 0 = the partition's default
    timeout_min: int = 60  # wall-clock limit per job in minutes; a timed-out job is requeued and resumes
    account: str = ""  # --account; '' = none
    qos: str = ""  # --qos; '' = none
    array_parallelism: int = 64  # most tasks of one array running at once
    max_num_timeout: int = 3  # requeues after timeouts before a job is failed (preemptions are unlimited)
    additional: dict[str, Any] = field(default_factory=dict)  # more sbatch options, e.g. {constraint: a100}
    setup: tuple[str, ...] = ()  # shell lines run before each job (module load ..., source venv)

    def __post_init__(self) -> None:
        for name in ("gpus_per_node", "max_num_timeout", "tasks_per_node"):
            if getattr(self, name) < 0:
                raise ValueError(f"executor.slurm.{name}={getattr(self, name)} must be >= 0")
        for name in ("cpus_per_task", "timeout_min", "array_parallelism", "nodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"executor.slurm.{name}={getattr(self, name)} must be >= 1")
        if self.mem_gb < 0:
            raise ValueError(f"executor.slurm.mem_gb={self.mem_gb} must be >= 0")
        for key in self.additional:
            if not isinstance(key, str) or not _SBATCH_KEY.match(key):
                raise ValueError(f"executor.slurm.additional.{key}: not an sbatch option name")


@dataclass(frozen=True)
class LocalConfig:
    slots: int = 1  # jobs run at once by the local executor (one GPU each where there are GPUs); 1 = one by one

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError(f"executor.local.slots={self.slots} must be >= 1")


@dataclass(frozen=True)
class ExecutorConfig:
    name: Literal[EXECUTORS] = "auto"  # auto = slurm if sbatch is installed and its controller answers, else local
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    local: LocalConfig = field(default_factory=LocalConfig)


@dataclass(frozen=True)
class FuseConfig:
    levels: bool = False  # train each seed's pretraining runs that differ only in data.level (levels and
    # hierarchies arms) as one job from one loader: decoded once, each model its own head, optimiser and run folder
    max_models: int | None = None  # most runs in one fused job; None = all of a seed's (a job still splits a
    # group that does not fit its device's memory: launch/fuse.py)

    def __post_init__(self) -> None:
        if self.max_models is not None and self.max_models < 1:
            raise ValueError(f"fuse.max_models must be >= 1, got {self.max_models}")


@dataclass(frozen=True)
class SweepConfig:
    name: str = "sweep"  # the default output folder is data/sweeps/<name>
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    target_dataset: str = ""  # dataset folder the transfers and the scratch baseline train and evaluate on (as
    # dataset.path: converted, relative to the cwd); '' = dataset.path (pretraining and target share the images)
    target_level: str = ""  # the level of target_dataset transferred to; '' = its coarsest level
    pretrain_levels: tuple[str, ...] = ()  # () = every level from the finest to the target (to the coarsest
    # where the target level is not a level of the pretraining dataset)
    seeds: tuple[int, ...] = (0, 1, 2)  # one pretraining (and transfer, scratch) run per seed
    run: RunConfig = field(default_factory=RunConfig)  # the pretraining runs' settings (data.path, data.level
    # and train.seed are set per job)
    # the sweep arms' sections (launch/arms/: each arm's module holds its section's schema and meaning)
    transfer: TransferConfig = field(default_factory=TransferConfig)  # transfers (modes full/linear/select)
    scratch: ScratchConfig = field(default_factory=ScratchConfig)  # the baseline without pretraining
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)  # k-means on frozen features
    multilevel: MultiLevelConfig = field(default_factory=MultiLevelConfig)  # semantic-softmax pretraining
    hierarchies: HierarchiesConfig = field(default_factory=HierarchiesConfig)  # derived control hierarchies
    fuse: FuseConfig = field(default_factory=FuseConfig)  # fused pretraining jobs (off: one job per run)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("seeds: at least one seed is needed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: {list(self.seeds)} repeats a seed")
        if not re.match(r"^[A-Za-z0-9_.-]+$", self.name):
            raise ValueError(f"name={self.name!r}: use letters, digits, '_', '-' and '.'")


def load(file: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> SweepConfig:
    """defaults -> `file` (default: launch/sweeps/default.yaml) -> dotted overrides."""
    return cfglib.load(SweepConfig, file if file is not None else SWEEPS_DIR / "default.yaml", overrides)


def sweep_file(name_or_path: str | None) -> Path | None:
    """A path as given, or the name of a packaged sweep (`default` -> launch/sweeps/default.yaml)."""
    if name_or_path is None:
        return None
    path = Path(name_or_path)
    if path.is_file() or path.suffix in (".yaml", ".yml"):
        return path
    packaged = SWEEPS_DIR / f"{name_or_path}.yaml"
    if packaged.is_file():
        return packaged
    names = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
    raise cfglib.ConfigError(f"sweep config {name_or_path!r}: no such file, nor a packaged sweep {names}")
