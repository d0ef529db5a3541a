"""Where a sweep's jobs run: one `Executor` class per module (launch/executors/base.py says what one does),
registered here by name. Adding an executor = its module + one line in REGISTRY; the CLI's --executor choices
and the sweep config's `executor.name` are this registry's names plus 'auto'.

  local - in this process, one job after the other; with executor.local.slots = N > 1, up to N child processes
          at once (launch/executors/local.py, slots.py)
  slurm - stage 1 as one job array, then per pretraining run an array of its transfers and clustering job held by
          afterok on that run alone (launch/executors/slurm.py)
  debug - submitit's DebugExecutor: in-process, synchronous, pdb on failure (launch/executors/debug.py)
  auto  - slurm when sbatch is installed and its controller answers, else local (with a note saying why)

This module imports no implementation (the config schema reads its names, and the implementations import the
plan, which imports the schema); `get` imports the one asked for.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from launch.executors.base import Executor
    from launch.sweep_config import ExecutorConfig

REGISTRY = {  # name -> "module:class"
    "local": "launch.executors.local:LocalExecutor",
    "slurm": "launch.executors.slurm:SlurmExecutor",
    "debug": "launch.executors.debug:DebugExecutor",
}
AUTO = "auto"
CHOICES = (AUTO, *REGISTRY)


def get(name: str) -> type[Executor]:
    """The executor class registered as `name` (not 'auto'); ValueError naming the choices otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"executor {name!r}: choose from {list(CHOICES)}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def resolve(name: str, cfg: ExecutorConfig, sweep_dir: Path) -> Executor:
    """The executor to submit with: 'auto' resolved, its parameters checked (ConfigError naming the key)."""
    from core.format.config import ConfigError

    slurm = get("slurm")
    slurm.check_section(cfg.slurm)  # a bad SLURM section is an error wherever the sweep runs (it may go there next)
    if name == AUTO:
        why_not = slurm.unavailable()
        if why_not is None:
            name = "slurm"
        else:
            name = "local"
            if slurm.installed():  # sbatch is there, so SLURM was probably meant: say why it is not used
                print(f"note: executor auto: {why_not}; running locally", flush=True)
    try:
        cls = get(name)
    except ValueError as e:
        raise ConfigError(f"executor.name: {e}") from None
    ex = cls(cfg, Path(sweep_dir))
    ex.check()
    return ex
