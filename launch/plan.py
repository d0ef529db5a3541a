"""Planning a sweep: which runs exist, their resolved configs, their folders, and which stage each belongs to.

Two steps: `prepare(cfg)` converts the synthetic dataset (when `dataset.synthetic_preset` is set) and checks the
model by building it once; `plan_sweep(cfg, sweep_dir)` then only reads (the dataset's hierarchy.json and
manifest.json) and asks every sweep arm (launch/arms/) for its jobs: stage-1 arms plan the pretraining runs and
the scratch baseline, stage-2 arms the transfers and clustering jobs that start from a finished pretraining run.
With `fuse.levels`, pretraining runs that can share one loader get a common JobSpec.group (launch/fuse.py).

A run's folder is named `<kind>-[<arm>-]<level>[-<mode>]-s<seed>-<hash>`, the hash over its resolved RunConfig,
its kind, and for a job with a source run that run's folder name (and the mode, and the arm's options). The same
settings always map to the same folder, so rerunning a sweep finds finished runs (result.json) and skips them;
changed settings get new folders. Everything that can be checked without training is checked before anything
is submitted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from core.format import config as cfglib
from core.format import derived
from core.format import hierarchy as hlib
from core.train.run_config import SINGLE_HEAD, RunConfig
from launch import arms, fuse
from launch import plan_checks as checks
from launch.arms.base import SOURCE_KIND, Arm
from launch.sweep_config import SweepConfig

PLAN_FILE = "plan.json"
RUNS_DIR = "runs"
LOGS_DIR = "logs"
CACHE_DIR = "inductor-cache"  # TORCHINDUCTOR_CACHE_DIR of every job: reruns reuse compiled graphs


@dataclass(frozen=True)
class JobSpec:
    """One run of a sweep: everything a job needs, as typed objects (pickled into SLURM jobs)."""

    name: str  # run folder name under <sweep>/runs
    kind: str  # pretrain | transfer | scratch | cluster
    stage: int  # 1 (pretrain, scratch) or 2 (transfer, cluster)
    level: str  # the level this run trains on (cluster: its pretraining level)
    pretrain_level: str  # the level its weights were pretrained on ('' for scratch)
    seed: int
    config: RunConfig  # resolved
    sweep_dir: str  # absolute: the folder the plan was made for or loaded from
    source_name: str = ""  # a stage-2 job: its pretraining run's folder name
    mode: str = ""  # transfer: full | linear | select
    arm: str = ""  # the stage-1 arm it comes from: '' = single-level pretraining (and scratch), 'multilevel'
    options: Any = None  # its arm's own settings (an instance of launch.arms.runner(...).options); None = none
    group: str = ""  # the fused job it trains in (launch/fuse.py: fuse.levels); '' = a job of its own

    @property
    def run_dir(self) -> str:
        return str(Path(self.sweep_dir) / RUNS_DIR / self.name)

    @property
    def source(self) -> str:
        """The source run's folder ('' for none)."""
        return str(Path(self.sweep_dir) / RUNS_DIR / self.source_name) if self.source_name else ""

    @property
    def log_file(self) -> Path:
        return Path(self.sweep_dir) / LOGS_DIR / f"{self.name}.starts.jsonl"

    @property
    def cache_dir(self) -> Path:
        return Path(self.sweep_dir) / CACHE_DIR

    def to_dict(self) -> dict:
        """plan.json's entry: folders relative to the sweep folder, so a moved sweep folder still works."""
        return {"name": self.name, "kind": self.kind, "stage": self.stage, "level": self.level,
                "pretrain_level": self.pretrain_level, "seed": self.seed, "run_dir": f"{RUNS_DIR}/{self.name}",
                "config": cfglib.to_dict(self.config),
                "source": f"{RUNS_DIR}/{self.source_name}" if self.source_name else "", "mode": self.mode,
                "arm": self.arm, "options": cfglib.to_dict(self.options) if self.options is not None else {},
                **({"group": self.group} if self.group else {})}

    @classmethod
    def from_dict(cls, d: dict, sweep_dir: Path) -> JobSpec:
        """An entry of plan.json, new or from before relative paths (absolute run_dir, source and sweep_dir:
        only the folder names are kept, the folders are those under `sweep_dir`)."""
        schema = arms.runner(d["kind"], d.get("mode", ""), d.get("arm", "")).options
        options = cfglib.parse(schema, d["options"], "options") if schema is not None and d.get("options") else None
        return cls(d["name"], d["kind"], d["stage"], d["level"], d["pretrain_level"], d["seed"],
                   cfglib.parse(RunConfig, d["config"], "config"), str(sweep_dir),
                   source_name=Path(d["source"]).name if d.get("source") else "", mode=d.get("mode", ""),
                   arm=d.get("arm", ""), options=options, group=d.get("group", ""))


@dataclass
class Plan:
    sweep_dir: Path
    dataset: str
    target_level: str
    classes: dict[str, int]  # level -> number of classes, finest first
    jobs: list[JobSpec] = field(default_factory=list)
    # the target (launch.plan_checks.Target); a plan.json from before separate targets has none of these keys:
    # its target was `dataset`, shared
    target_dataset: str = ""  # the dataset transfers and scratch runs train on; '' = `dataset`
    target_classes: int = 0  # target_level's classes in target_dataset; 0 = classes[target_level]
    shared: bool = True  # target_level is a level of `dataset` with the same classes: pretraining runs are read at it

    def __post_init__(self) -> None:
        self.target_dataset = self.target_dataset or self.dataset
        self.target_classes = self.target_classes or self.classes[self.target_level]

    def stage(self, n: int) -> list[JobSpec]:
        return [j for j in self.jobs if j.stage == n]

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "target_level": self.target_level, "classes": self.classes,
                "target_dataset": self.target_dataset, "target_classes": self.target_classes, "shared": self.shared,
                "jobs": [j.to_dict() for j in self.jobs]}

    def save(self) -> None:
        from core.format import provenance

        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        provenance.write_atomic(self.sweep_dir / PLAN_FILE, json.dumps(self.to_dict(), indent=1) + "\n")


def load_plan(sweep_dir: str | Path) -> Plan:
    """The plan saved in `sweep_dir`; its runs are the folders under `sweep_dir`, wherever it was planned."""
    sweep_dir = Path(sweep_dir).resolve()
    path = sweep_dir / PLAN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{sweep_dir}: no {PLAN_FILE}; is this a folder written by 'grainsweep sweep'?")
    d = json.loads(path.read_text())
    return Plan(sweep_dir, d["dataset"], d["target_level"], d["classes"],
                [JobSpec.from_dict(j, sweep_dir) for j in d["jobs"]], target_dataset=d.get("target_dataset", ""),
                target_classes=d.get("target_classes", 0), shared=d.get("shared", True))


# Run folders keep their names when RunConfig grows or changes a default that does not change the run:
# fields added after sweeps were already being run, at these values, are left out of the hash (as in runs planned
# before the field existed); data.resident=true is another run and hashed as it is
LATER_FIELDS = {("data", "resident"): False, ("data", "resident_max_gb"): 8.0, ("data", "augment"): {},
                ("model", "sync_bn"): False}
# fields that do not change what a run computes, hashed at a fixed value whatever theirs: keep_checkpoints only
# decides how many checkpoint files stay on disk (hashed as 1, its default when the first sweeps were named)
FIXED_FIELDS = {("train", "keep_checkpoints"): 1}


def hashed_config(config: RunConfig) -> dict:
    """The config as the run hash sees it: LATER_FIELDS at their defaults left out, FIXED_FIELDS at their value."""
    return {section: {k: FIXED_FIELDS.get((section, k), v) for k, v in values.items()
                      if (section, k) not in LATER_FIELDS or LATER_FIELDS[section, k] != v}
            for section, values in cfglib.to_dict(config).items()}


def run_hash(config: RunConfig, kind: str, source: str = "", mode: str = "", options: Any = None) -> str:
    """10 hex digits over the resolved config, the kind, the source run's folder name, the mode and options."""
    d = {"config": hashed_config(config), "kind": kind, "source": source, "mode": mode}
    if options is not None:  # only where there are some, so folders planned before `options` existed keep their names
        d["options"] = cfglib.to_dict(options)
    blob = json.dumps(d, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


# preparing: the one step that writes (the synthetic dataset) or builds a model
def prepare(cfg: SweepConfig) -> Path:
    """Converts the synthetic dataset when `dataset.synthetic_preset` is set (convert-once: an identical one
    already there is reused), checks both datasets' betons against their hierarchies (the pretraining dataset's
    and the target's, as a run does when it starts) and builds the model once on the CPU; then each enabled arm
    prepares (e.g. derives its levels). Trains nothing. Returns the pretraining dataset folder. Run before
    plan_sweep; raises ConfigError naming the key at fault."""
    checks.check_run(cfg)
    path = Path(cfg.dataset.path).resolve()
    if cfg.dataset.synthetic_preset:
        from data_tools import convert_synthetic

        conv = convert_synthetic.load_config(cfg.dataset.synthetic_preset, None, list(cfg.dataset.synthetic_set))
        _, built = convert_synthetic.convert(path, conv)
        print(f"dataset {path}: {'converted' if built else 'already converted'}", flush=True)
    data = _dataset(cfg)
    h = hlib.load(data)
    goal = checks.target(cfg, h, data)
    levels = checks.levels(cfg, h, data, goal)
    checks.check_data("dataset.path", cfglib.with_values(cfg.run, {"data.path": str(data), "data.level": levels[0]}))
    if goal.data != data:
        checks.check_data("target_dataset", cfglib.with_values(cfg.run, {"data.path": str(goal.data),
                                                                         "data.level": goal.level}))
    checks.check_model(cfg.run, h.level(levels[0]).num_classes)
    for arm in arms.ARMS:
        if arm.enabled(cfg):
            arm.prepare(cfg, data)
    return data


def _dataset(cfg: SweepConfig) -> Path:
    if not Path(cfg.dataset.path).is_dir():
        raise cfglib.ConfigError(f"dataset.path={cfg.dataset.path!r}: no such dataset folder (set "
                                 "dataset.synthetic_preset to generate the synthetic one; `grainsweep sweep` "
                                 "converts it first)")
    return checks.dataset_folder("dataset.path", cfg.dataset.path)


# planning: reads only
def plan_sweep(cfg: SweepConfig, sweep_dir: str | Path) -> Plan:
    """Checks the sweep against its (prepared) datasets and lists its runs. Raises ConfigError naming the key."""
    checks.check_run(cfg)
    data = _dataset(cfg)
    h = hlib.load(data)
    goal = checks.target(cfg, h, data)
    levels = checks.levels(cfg, h, data, goal)
    target = goal.level
    transfer_set = checks.parse_sets("transfer.set", cfg.transfer.set, ("model.name", "model.kwargs", "data.path",
                                                                   "data.level"))
    scratch_set = checks.parse_sets("scratch.set", cfg.scratch.set, ("data.path", "data.level"))
    ctx = PlanContext(cfg, Path(sweep_dir).resolve(), data, h, target, tuple(levels), transfer_set, scratch_set,
                      goal.data, goal.hierarchy, goal.shared)
    # fail on a bad override or a batch larger than a training set before planning anything, naming the key
    seed = cfg.seeds[0]
    checks.check_batch_size("run.data.batch_size", ctx.run_config(levels[0], seed))
    checks.check_batch_size("data.batch_size of the transfers (run.data, then transfer.set)",
                            ctx.transfer_config(seed))
    checks.check_batch_size("data.batch_size of the scratch runs (run.data, transfer.set, then scratch.set)",
                            ctx.target_config(seed, scratch_set, key="scratch.set"))

    jobs = [j for a in arms.ARMS if a.stage == 1 and a.enabled(cfg) for j in a.plan(ctx, [])]
    sources = [j for j in jobs if j.kind == SOURCE_KIND]
    jobs += [j for a in arms.ARMS if a.stage == 2 and a.enabled(cfg) for j in a.plan(ctx, sources)]
    modes = list(cfg.transfer.modes)
    # by stage, pretraining runs first, then finest pretraining level first; a run's transfers in the order of
    # transfer.modes, its clustering job last
    # level -> classes: the dataset's levels finest first, then the derived levels pretrained on (in planning order)
    classes = {lv.name: lv.num_classes for lv in h.levels}
    classes.update({j.pretrain_level: ctx.classes(j.pretrain_level) for j in sources
                    if j.pretrain_level not in classes})
    rank = {lv: i for i, lv in enumerate(classes)}
    jobs.sort(key=lambda j: (j.stage, j.kind != SOURCE_KIND, rank[j.pretrain_level] if j.pretrain_level else 0,
                             j.arm, j.seed, modes.index(j.mode) if j.mode in modes else len(modes)))
    jobs = fuse.group_jobs(jobs, cfg.fuse)
    return Plan(ctx.sweep_dir, str(data), target, classes, jobs,
                target_dataset=str(goal.data), target_classes=goal.hierarchy.level(target).num_classes,
                shared=goal.shared)


@dataclass(frozen=True)
class PlanContext:
    """What the arms plan from: the sweep config, its datasets, and the settings every arm shares."""

    cfg: SweepConfig
    sweep_dir: Path  # absolute
    data: Path  # the pretraining dataset folder, absolute
    hierarchy: hlib.Hierarchy  # the pretraining dataset's
    target: str  # the target level (of target_data)
    levels: tuple[str, ...]  # the pretraining levels asked for, finest first (the target may be missing)
    transfer_set: dict[str, Any]  # transfer.set, parsed: dotted key -> value
    scratch_set: dict[str, Any]
    target_data: Path  # the dataset transfers and scratch runs train and evaluate on, absolute (`data` by default)
    target_hierarchy: hlib.Hierarchy
    shared: bool  # the target level is a level of `data` with the same classes (launch.plan_checks.Target)
    single_head: ClassVar[dict[str, Any]] = SINGLE_HEAD  # transfers and scratch runs train one head

    def classes(self, level: str) -> int:
        """A pretraining level's number of classes."""
        if level in self.hierarchy.derived:  # a derived level (launch/arms/hierarchies.py): its sidecar's count
            return derived.load(self.data, level).num_classes
        return self.hierarchy.level(level).num_classes

    def run_config(self, level: str, seed: int, *changes: dict[str, Any], key: str = "run",
                   data: Path | None = None) -> RunConfig:
        """`run` for one job: the dataset (default: the pretraining one), `level` and `seed` set, then `changes`
        in order."""
        cfg = self.cfg.run
        try:
            # one after the other: a later change wins, also where it names a whole section an earlier one
            # changed a key of
            for values in ({"data.path": str(data or self.data), "data.level": level, "train.seed": seed}, *changes):
                cfg = cfglib.with_values(cfg, values)
        except cfglib.ConfigError as e:
            raise cfglib.ConfigError(f"{key}: {e}") from None
        return cfg

    def target_config(self, seed: int, *changes: dict[str, Any], key: str = "transfer.set") -> RunConfig:
        """A run on the target: `run` on the target dataset and level, one head, `transfer.set`, then `changes`."""
        return self.run_config(self.target, seed, self.single_head, self.transfer_set, *changes, key=key,
                               data=self.target_data)

    def transfer_config(self, seed: int) -> RunConfig:
        """A transfer's config: `run` on the target, one head, then `transfer.set`."""
        return self.target_config(seed)

    def job(self, arm: Arm, config: RunConfig, level: str, seed: int, pretrain_level: str,
            source: JobSpec | None = None, mode: str = "", options: Any = None) -> JobSpec:
        """A job of `arm`, named after its settings."""
        family = source.arm if source is not None else arm.tag
        src = source.name if source is not None else ""
        tag = "-".join(x for x in (family, pretrain_level or level) if x)
        digest = run_hash(config, arm.kind, src, mode, options)
        name = "-".join(x for x in (arm.kind, tag, mode, f"s{seed}", digest) if x)
        return JobSpec(name, arm.kind, arm.stage, level, pretrain_level, seed, config, str(self.sweep_dir),
                       source_name=src, mode=mode, arm=family, options=options)

    def follow(self, arm: Arm, source: JobSpec, config: RunConfig, level: str, mode: str = "",
               options: Any = None) -> JobSpec:
        """A stage-2 job of `arm` starting from the pretraining run `source`."""
        return self.job(arm, config, level, source.seed, source.pretrain_level, source, mode, options)
