"""Planning a sweep: which runs exist, their resolved configs, their folders, and which stage each belongs to.

Stage 1: one pretraining run per (pretraining level, seed), plus the scratch baseline per seed; with
`multilevel.enabled` one more per seed, at the finest pretraining level with one head per level (semantic softmax).
Stage 2: one transfer per (pretraining run, mode; mode 'select' adds selected pretraining data), and with
`clustering.enabled` one clustering evaluation per
pretraining run (k-means on its frozen features, core/methods/cluster_run.py), each starting only after its pretraining
run succeeded.

A run's folder is named `<kind>-<level>[-<mode>]-s<seed>-<hash>`, the hash over its resolved RunConfig, its kind,
and for a transfer or clustering job the source run's folder name (and the mode). A clustering job's config is
its pretraining run's; its folder holds only result.json (the metrics; the source gets clustering.json too).
The same settings always map to the same folder, so rerunning a sweep finds finished runs (result.json) and
skips them; changed settings get new folders.
Everything that can be checked without training is checked here, before anything is submitted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.format import config as cfglib
from core.format import hierarchy as hlib
from core.train.run_config import RunConfig
from launch.sweep_config import SweepConfig

PLAN_FILE = "plan.json"
_ABSENT = object()
RUNS_DIR = "runs"
LOGS_DIR = "logs"
CACHE_DIR = "inductor-cache"  # TORCHINDUCTOR_CACHE_DIR of every job: reruns reuse compiled graphs


@dataclass(frozen=True)
class JobSpec:
    """One run of a sweep: everything a job needs, as plain data (pickled into SLURM jobs)."""

    name: str  # run folder name under <sweep>/runs
    kind: str  # pretrain | transfer | scratch | cluster
    stage: int  # 1 (pretrain, scratch) or 2 (transfer, cluster)
    level: str  # the level this run trains on (cluster: its pretraining level)
    pretrain_level: str  # the level its weights were pretrained on ('' for scratch)
    seed: int
    run_dir: str  # absolute
    config: dict  # resolved RunConfig as plain data
    sweep_dir: str  # absolute
    source: str = ""  # transfer, cluster: the pretraining run folder (absolute)
    mode: str = ""  # transfer: full | linear | select
    arm: str = ""  # '' = single-level pretraining; 'multilevel' = semantic-softmax pretraining (and what follows it)
    options: dict = field(default_factory=dict)  # mode 'select': core.methods.select_transfer.SelectConfig as plain data

    @property
    def log_file(self) -> Path:
        return Path(self.sweep_dir) / LOGS_DIR / f"{self.name}.starts.jsonl"

    @property
    def cache_dir(self) -> Path:
        return Path(self.sweep_dir) / CACHE_DIR


@dataclass
class Plan:
    sweep_dir: Path
    dataset: str
    target_level: str
    classes: dict[str, int]  # level -> number of classes, finest first
    jobs: list[JobSpec] = field(default_factory=list)

    def stage(self, n: int) -> list[JobSpec]:
        return [j for j in self.jobs if j.stage == n]

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "target_level": self.target_level, "classes": self.classes,
                "jobs": [asdict(j) for j in self.jobs]}

    def save(self) -> None:
        from core.format import provenance

        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        provenance.write_atomic(self.sweep_dir / PLAN_FILE, json.dumps(self.to_dict(), indent=1) + "\n")


def load_plan(sweep_dir: str | Path) -> Plan:
    sweep_dir = Path(sweep_dir)
    path = sweep_dir / PLAN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{sweep_dir}: no {PLAN_FILE}; is this a folder written by 'grainsweep sweep'?")
    d = json.loads(path.read_text())
    return Plan(sweep_dir, d["dataset"], d["target_level"], d["classes"], [JobSpec(**j) for j in d["jobs"]])


# RunConfig fields added after sweeps were already being run, with their defaults: a field at its default is left
# out of the hash, so runs planned before the field existed keep their folders (and are skipped, not rerun)
LATER_FIELDS = {("data", "resident"): False, ("data", "resident_max_gb"): 8.0}


def run_hash(config: dict, kind: str, source: str = "", mode: str = "", options: dict | None = None) -> str:
    config = {section: {k: v for k, v in values.items() if LATER_FIELDS.get((section, k), _ABSENT) != v}
              if isinstance(values, dict) else values for section, values in config.items()}
    d = {"config": config, "kind": kind, "source": source, "mode": mode}
    if options:  # only where there are some, so folders planned before `options` existed keep their names
        d["options"] = options
    blob = json.dumps(d, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def ensure_dataset(cfg: SweepConfig) -> Path:
    """The dataset folder; the synthetic one is converted first when `dataset.synthetic_preset` is set."""
    path = Path(cfg.dataset.path).resolve()
    if cfg.dataset.synthetic_preset:
        from data_tools import convert_synthetic

        conv = convert_synthetic.load_config(cfg.dataset.synthetic_preset, None, list(cfg.dataset.synthetic_set))
        _, built = convert_synthetic.convert(path, conv)
        print(f"dataset {path}: {'converted' if built else 'already converted'}", flush=True)
    elif not path.is_dir():
        raise cfglib.ConfigError(f"dataset.path={cfg.dataset.path!r}: no such dataset folder (set "
                                 "dataset.synthetic_preset to generate the synthetic one)")
    for name in ("train.beton", "val.beton", hlib.FILENAME):
        if not (path / name).is_file():
            raise cfglib.ConfigError(f"dataset.path={cfg.dataset.path!r}: missing {name}")
    return path


def plan_sweep(cfg: SweepConfig, sweep_dir: str | Path) -> Plan:
    """Checks the sweep against its dataset and lists its runs. Raises ConfigError naming the key at fault."""
    sweep_dir = Path(sweep_dir).resolve()
    for key, value, default in (("run.data.path", cfg.run.data.path, RunConfig().data.path),
                                ("run.data.level", cfg.run.data.level, "")):
        if value != default:
            raise cfglib.ConfigError(f"{key}={value!r}: the sweep sets it per job (use dataset.path, "
                                     "pretrain_levels and target_level)")
    data = ensure_dataset(cfg)
    h = hlib.load(data)

    # levels
    target = cfg.target_level or h.names[-1]
    if target not in h.names:
        raise cfglib.ConfigError(f"target_level={target!r} is not a level of {data}; its levels are {h.names}")
    levels = list(cfg.pretrain_levels) or h.names[:h.index(target) + 1]
    for i, lv in enumerate(levels):
        if lv not in h.names:
            raise cfglib.ConfigError(f"pretrain_levels[{i}]={lv!r} is not a level of {data}; its levels are "
                                     f"{h.names}")
        if h.index(lv) > h.index(target):
            raise cfglib.ConfigError(f"pretrain_levels[{i}]={lv!r} is coarser than target_level={target!r}; "
                                     "transfer goes from finer (or equal) levels to the target")
    if target not in levels:  # the baseline "pretrain directly on the target level"
        levels.append(target)
    levels = sorted(dict.fromkeys(levels), key=h.index)

    # configs
    run_base = cfglib.to_dict(cfg.run)
    for key, sets, fixed in (("transfer.set", cfg.transfer.set, ("model.name", "model.kwargs", "data.path",
                                                                    "data.level")),
                             ("scratch.set", cfg.scratch.set, ("data.path", "data.level"))):
        bad = [s for s in sets if s.split("=", 1)[0].strip() in fixed]
        if bad:
            raise cfglib.ConfigError(f"{key}: {bad[0]!r} cannot be changed here ({', '.join(fixed)} are fixed: "
                                     "a transfer keeps the pretrained model, the sweep sets the data)")

    def resolved(level: str, seed: int, *sets: str, key: str = "run") -> dict:
        try:
            c = cfglib.load(RunConfig, None, [f"data.path={data}", f"data.level={level}",
                                              f"train.seed={seed}", *sets], base=run_base)
        except cfglib.ConfigError as e:
            raise cfglib.ConfigError(f"{key}: {e}") from None
        return cfglib.to_dict(c)

    _check_model(cfg.run, h.level(levels[0]).num_classes)
    _check_batch_size(cfg, data)
    plan = Plan(sweep_dir, str(data), target, {lv.name: lv.num_classes for lv in h.levels})
    runs = sweep_dir / RUNS_DIR
    common = dict(sweep_dir=str(sweep_dir))
    # transfers and scratch runs train one head, whatever objective the pretraining runs use
    single = ("train.objective=single", "train.objective_levels=[]", "train.objective_weights=ridnik")
    multilevel = ("train.objective=semantic_softmax", f"train.objective_weights={cfg.multilevel.weights}")
    for seed in cfg.seeds:
        arms = [(lv, "", resolved(lv, seed)) for lv in levels]
        if cfg.multilevel.enabled:
            arms.append((levels[0], "multilevel", resolved(levels[0], seed, *multilevel, key="multilevel")))
        for lv, arm, c in arms:
            tag = f"{arm}-{lv}" if arm else lv
            name = f"pretrain-{tag}-s{seed}-{run_hash(c, 'pretrain')}"
            pre = JobSpec(name, "pretrain", 1, lv, lv, seed, str(runs / name), c, arm=arm, **common)
            plan.jobs.append(pre)
            for mode in cfg.transfer.modes:
                t = resolved(target, seed, *single, *cfg.transfer.set, key="transfer.set")
                options = _select_options(cfg, h.level(lv).num_classes) if mode == "select" else {}
                tname = f"transfer-{tag}-{mode}-s{seed}-{run_hash(t, 'transfer', pre.name, mode, options)}"
                plan.jobs.append(JobSpec(tname, "transfer", 2, target, lv, seed, str(runs / tname), t,
                                         source=pre.run_dir, mode=mode, arm=arm, options=options, **common))
            if cfg.clustering.enabled:
                cname = f"cluster-{tag}-s{seed}-{run_hash(c, 'cluster', pre.name)}"
                plan.jobs.append(JobSpec(cname, "cluster", 2, lv, lv, seed, str(runs / cname), c,
                                         source=pre.run_dir, arm=arm, **common))
        if cfg.scratch.enabled:
            c = resolved(target, seed, *single, *cfg.transfer.set, *cfg.scratch.set, key="scratch.set")
            name = f"scratch-{target}-s{seed}-{run_hash(c, 'scratch')}"
            plan.jobs.append(JobSpec(name, "scratch", 1, target, "", seed, str(runs / name), c, **common))
    plan.jobs.sort(key=lambda j: (j.stage, j.kind != "pretrain", h.index(j.pretrain_level or target), j.arm,
                                  j.seed))
    return plan


def _select_options(cfg: SweepConfig, pretrain_classes: int) -> dict:
    """SelectConfig of a 'select' transfer from a run pretrained on `pretrain_classes` classes, as plain data."""
    sel = cfg.transfer.select
    return {"k": min(sel.k, pretrain_classes), "lam": sel.lam, "batch_size": sel.batch_size}


def _check_model(run: RunConfig, num_classes: int) -> None:
    # building the model once on the CPU catches an unknown name or bad kwargs before any job is submitted
    from core.models.build import build_model

    try:
        build_model(run.model.name, num_classes, run.data.resolution, **run.model.kwargs)
    except (ValueError, TypeError, RuntimeError) as e:
        raise cfglib.ConfigError(f"run.model.name={run.model.name!r} / run.model.kwargs={run.model.kwargs}: "
                                 f"{e}") from None


def _check_batch_size(cfg: SweepConfig, data: Path) -> None:
    # training drops the last partial batch: a batch larger than the training set would run no step at all
    manifest = data / "manifest.json"
    if not manifest.is_file():
        return
    n = json.loads(manifest.read_text()).get("splits", {}).get("train")
    if isinstance(n, int) and cfg.run.data.batch_size > n:
        raise cfglib.ConfigError(f"run.data.batch_size={cfg.run.data.batch_size} is larger than the training set "
                                 f"of {data} ({n} images)")
