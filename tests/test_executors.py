"""Executors are registered by name (the CLI's and the config's choices come from the registry), and `auto` does
not pick a SLURM whose controller does not answer: sbatch installed, controller down (a slurm.conf naming a
port where nothing listens, as on a machine whose slurmctld is stopped)."""

from __future__ import annotations

import socket
import typing
from pathlib import Path

import pytest

from core.format import config as cfglib
from launch import executors
from launch.cli import build_parser, main as cli
from launch.executors.base import Executor
from launch.executors.local import LocalExecutor
from launch.executors.slurm import SlurmExecutor
from launch.sweep_config import ExecutorConfig, SweepConfig
from tests.test_sweep_local import tiny_sweep


def test_registry_names_are_the_cli_and_config_choices(capsys):
    assert executors.CHOICES == ("auto", *executors.REGISTRY)
    for name in executors.REGISTRY:
        cls = executors.get(name)
        assert issubclass(cls, Executor) and cls.name == name
    assert typing.get_args(typing.get_type_hints(ExecutorConfig)["name"]) == executors.CHOICES
    with pytest.raises(cfglib.ConfigError, match=r"executor.name.*\['auto', 'local', 'slurm', 'debug'\]"):
        cfglib.load(SweepConfig, None, ["executor.name=nope"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep", "--executor", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="nope"):
        executors.get("nope")


@pytest.fixture
def controller_down(tmp_path, monkeypatch) -> Path:
    """SLURM's client tools pointed (SLURM_CONF) at a controller that is not running."""
    if not (SlurmExecutor.installed() and __import__("shutil").which("scontrol")):
        pytest.skip("sbatch/scontrol not installed (apt-get install slurm-client)")
    with socket.socket() as s:  # a free port: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = socket.gethostname().split(".")[0]
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"ClusterName=down\nSlurmctldHost={host}(127.0.0.1)\nSlurmctldPort={port}\n"
                    "AuthType=auth/munge\n"
                    f"NodeName={host} NodeAddr=127.0.0.1 CPUs=1 State=UNKNOWN\n"
                    f"PartitionName=debug Nodes={host} Default=YES State=UP\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    return conf


def test_auto_prefers_local_when_the_controller_does_not_answer(controller_down, tmp_path, capsys):
    why = SlurmExecutor.unavailable()
    assert why is not None and "controller" in why
    ex = executors.resolve("auto", ExecutorConfig(), tmp_path / "sw")
    assert isinstance(ex, LocalExecutor)
    out = capsys.readouterr().out
    assert "note: executor auto:" in out and "running locally" in out and "controller" in out
    # asked for by name, it is refused before anything is submitted, saying what to do
    ex = executors.resolve("slurm", ExecutorConfig(), tmp_path / "sw")
    with pytest.raises(cfglib.ConfigError) as e:
        ex.ready()
    assert "\n" not in str(e.value) and "--executor local" in str(e.value)


def test_slurm_with_the_controller_down_is_one_line_before_anything_is_written(controller_down, tmp_path,
                                                                                 capsys):
    cfg_file = tmp_path / "sweep.yaml"
    cfg_file.write_text(cfglib.to_yaml(tiny_sweep(tmp_path / "data", "seeds=[0]", "pretrain_levels=[superclass]")))
    sw = tmp_path / "sw"
    assert cli(["sweep", str(cfg_file), "--executor", "slurm", "--out", str(sw)]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("grainsweep")]  # not the progress bars
    assert len(err) == 1 and err[0].startswith("grainsweep sweep: error: executor.name='slurm'"), err
    assert "does not answer" in err[0] and "--executor local" in err[0]
    assert not sw.exists()
