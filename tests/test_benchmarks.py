"""The benchmark code runs on tiny inputs and its outputs have the promised shape. No speed is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import fused_vmap, gpu_all
from benchmarks import loader as loader_bench
from benchmarks import profiles
from benchmarks import report as bench_report
from benchmarks import run as bench_run
from benchmarks import sweep_rerun
from benchmarks.measure import summary
from launch import cli


def _last_json_line(text: str) -> dict:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines, "nothing printed"
    return json.loads(lines[-1])


def test_bench_loader_cli_prints_json_as_last_line(tiny_dataset, capsys):
    rc = cli.main(["bench", "loader", "--data", str(tiny_dataset), "--res", "16", "--workers", "1",
                   "--batch-size", "8", "--epochs", "3"])
    assert rc == 0
    out = _last_json_line(capsys.readouterr().out)
    assert out["images_per_second"] > 0
    stats = out["images_per_second_stats"]
    assert set(stats) >= {"median", "min", "max", "spread", "runs"}
    assert len(stats["runs"]) == 2  # 3 epochs, the first not counted
    assert out["settings"]["res"] == 16 and out["settings"]["warmup_epochs"] == 1
    assert {"python", "torch", "ffcv", "numba", "timm", "torchvision"} <= set(out["versions"])
    assert out["images_per_epoch"] == 96  # the tiny preset's 96 train images, 12 batches of 8


@pytest.mark.parametrize("mode", loader_bench.MODES)
def test_measure_loader_every_mode(tiny_dataset, mode):
    out = loader_bench.measure_loader(tiny_dataset, res=16, workers=1, batch_size=16, epochs=2, mode=mode)
    assert out["images_per_second"] > 0 and out["settings"]["mode"] == mode


@pytest.fixture(scope="module")
def mixed_sizes(tmp_path_factory) -> Path:
    """12 JPEGs of 6 different sizes (both orientations) under 2 levels, through `grainsweep convert csv`."""
    from PIL import Image

    root = tmp_path_factory.mktemp("mixed")
    rows = []
    for i in range(12):
        name = f"im{i}.jpg"
        Image.new("RGB", (24 + 8 * (i % 3), 40 - 8 * (i % 2)), (20 * i, 90, 200 - 10 * i)).save(root / name)
        rows.append((name, f"leaf{i % 4}", f"group{i % 2}"))
    with open(root / "train.csv", "w") as f:
        f.write("path,leaf,group\n" + "".join(",".join(r) + "\n" for r in rows))
    assert cli.main(["convert", "csv", str(root / "train.csv"), "--out", str(root / "ds"), "--workers", "1",
                     "--set", "write.write_mode=jpg"]) == 0
    return root / "ds"


def test_bench_loader_decode_mode_on_images_of_mixed_sizes(mixed_sizes, capsys):
    # ffcv's SimpleRGBImageDecoder refuses a beton of mixed sizes (TypeError at the first epoch)
    rc = cli.main(["bench", "loader", "--data", str(mixed_sizes), "--mode", "decode", "--res", "16",
                   "--workers", "1", "--batch-size", "4", "--epochs", "2"])
    assert rc == 0
    out = _last_json_line(capsys.readouterr().out)
    assert out["images_per_second"] > 0 and out["images_per_epoch"] == 12
    assert out["settings"]["decoder"] == "CenterCropRGBImageDecoder" and out["settings"]["res"] == 16


def test_bench_loader_refuses_a_single_epoch(tiny_dataset, capsys):
    rc = cli.main(["bench", "loader", "--data", str(tiny_dataset), "--epochs", "1"])
    assert rc == 2
    assert "--epochs" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_bench_loader_cuda_without_cuda_is_a_one_line_error(tiny_dataset, capsys):
    rc = cli.main(["bench", "loader", "--data", str(tiny_dataset), "--device", "cuda"])
    assert rc == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_bench_fused_cli_times_both_sides_and_prints_json(tiny_dataset, capsys):
    rc = cli.main(["bench", "fused", "--data", str(tiny_dataset), "--repeats", "1", "--no-warmup",
                   "--levels", "subclass,superclass", "--set", "model.name=bmlp",
                   "--set", "model.kwargs={depth: 1, width: 8}", "--set", "data.resolution=16",
                   "--set", "data.batch_size=16", "--set", "data.workers=1", "--set", "train.epochs=1",
                   "--set", "optim.warmup_epochs=0", "--set", "train.device=cpu"])
    assert rc == 0
    out = _last_json_line(capsys.readouterr().out)
    assert out["levels"] == ["subclass", "superclass"] and out["settings"]["models"] == 2
    for side in ("separate_seconds", "fused_seconds"):
        assert len(out[side]["runs"]) == 1 and out[side]["median"] > 0
    assert set(out["final_acc1"]) == {"separate", "fused"}
    assert all(0 <= a <= 1 for side in out["final_acc1"].values() for a in side.values())
    assert out["command"].startswith("grainsweep bench fused --data")


def test_summary_median_and_spread():
    s = summary([1.0, 3.0, 2.0])
    assert (s["median"], s["min"], s["max"]) == (2.0, 1.0, 3.0)
    assert s["spread"] == pytest.approx(1.0)


def test_quick_suite_writes_results_of_every_benchmark(tmp_path):
    results, report = tmp_path / "RESULTS.md", tmp_path / "results.json"
    rc = bench_run.main(["--quick", "--data-root", str(tmp_path / "data"), "--results", str(results),
                         "--json", str(report)])
    assert rc == 0
    raw = json.loads(report.read_text())
    assert {"machine", "versions", "command", "data", *profiles.BENCHMARKS} <= set(raw)
    for row in raw["loader_vs_torchvision"]:
        assert row["loader"]["images_per_second"] > 0 and row["torchvision"]["images_per_second"] > 0
        assert row["ratio"] > 0 and row["ratio_crop"] > 0
        assert row["stage"]["stage"] == "cpu_stage" and row["stage"]["project_ms"]["median"] > 0
        assert row["stage"]["reference_ms"]["median"] > 0
    assert {row["storage"] for row in raw["storage"]} == {"raw", "proportion"}
    for row in raw["storage"]:
        assert row["loader"]["images_per_second"] > 0 and row["loader_crop"]["images_per_second"] > 0
    for key in ("loader_train", "loader_crop_only", "ffcv_decode_only", "cv2_decode", "device_decode"):
        assert raw["decode_limit"][key]["images_per_second"] > 0
    assert [row["settings"]["resident"] for row in raw["train_step"]] == [False, True]
    for row in raw["train_step"]:
        assert row["real_loader"]["median"] > 0 and row["on_device"]["median"] > 0
        assert 0.0 <= row["data_wait_fraction"]["median"] <= 1.0
    assert raw["conversion"]["images"] == raw["data"]["train_images"]
    rerun = raw["sweep_rerun"]
    assert rerun["status"] == "measured" and rerun["runs"] >= 3  # pretrain, transfer, scratch at least
    assert rerun["rerun_in_process_seconds"]["median"] > 0 and rerun["rerun_command_seconds"]["median"] > 0
    for key in ("cold", "warm"):
        run = rerun[key]["runs"][0]
        assert run["compiled"] and run["steps"] >= 1
        assert 0 < run["first_step_seconds"] < run["to_first_step_seconds"] < run["process_seconds"]
    dist = raw["distributed"]
    assert [row["world_size"] for row in dist["rows"]] == [1, 2] and dist["skipped"] == {}
    for row in dist["rows"]:
        assert row["images_per_second"] > 0 and row["command"].startswith("grainsweep train")
        assert row["command"].endswith(f"--nproc {row['world_size']}")
    for row in raw["fused"]:
        assert len(row["levels"]) == row["settings"]["models"] >= 2
        assert row["separate_seconds"]["median"] > 0 and row["fused_seconds"]["median"] > 0 and row["speedup"] > 0
    assert raw["omp"]["applied"] is False  # torch was loaded before main(): the spin count cannot apply
    text = results.read_text()
    for heading in ("## Machine and versions", "## Loader vs torchvision DataLoader",
                    "## Loader vs the decode limit", "## The loader on other storage",
                    "## Training with the real loader", "## Conversion",
                    "## Sweep rerun", "## Training on several processes", "grainsweep train --nproc 8",
                    "## Fused pretraining",
                    "## How to run on the lent GPU"):
        assert heading in text
    assert "not measured yet" in text and "Quick mode" in text
    assert "## Sweep rerun and compile cache" in text and "| cold |" in text and "| warm |" in text
    # a partial rerun with --merge keeps the figures it did not measure
    assert bench_run.main(["--quick", "--only", "conversion", "--merge", "--data-root", str(tmp_path / "data"),
                           "--results", str(results), "--json", str(report)]) == 0
    merged = json.loads(report.read_text())
    assert merged["loader_vs_torchvision"] == raw["loader_vs_torchvision"]
    assert merged["sweep_rerun"] == raw["sweep_rerun"]
    assert merged["command"].count("python -m benchmarks.run") == 2
    text = results.read_text()
    # the report is a function of the raw figures alone
    results.unlink()
    assert bench_run.main(["--render-only", "--results", str(results), "--json", str(report)]) == 0
    assert results.read_text() == text
    # and so from the command line
    results.unlink()
    subprocess.run([sys.executable, "-m", "benchmarks.run", "--render-only", "--results", str(results), "--json",
                    str(report)], cwd=Path(__file__).resolve().parent.parent, check=True, capture_output=True)
    assert results.read_text() == text


def test_every_benchmark_has_its_table_in_the_suite_order():
    assert tuple(bench_report.TABLES) == profiles.BENCHMARKS


def test_sweep_rerun_settings_form_a_valid_sweep_and_bad_arguments_fail_fast(tmp_path, capsys):
    from launch import sweep_config

    file = sweep_rerun.write_sweep_file(tmp_path / "sweep.yaml")
    for all_levels in (False, True):
        cfg = sweep_config.load(file, sweep_rerun.sweep_overrides(tmp_path / "data", 2, 1, all_levels))
        assert cfg.seeds == (0, 1) and not cfg.clustering.enabled and cfg.transfer.modes == ("linear",)
        assert cfg.run.model.name == "bmlp" and dict(cfg.run.model.kwargs) == sweep_rerun.MODEL
    with pytest.raises(ValueError, match="reruns"):
        sweep_rerun.measure_sweep_rerun(tmp_path / "r", reruns=0)
    assert sweep_rerun.main(["first-step"]) == 2 and "usage" in capsys.readouterr().err



def test_gpu_all_dry_run_keeps_the_cpu_figures_and_the_figures_of_steps_that_finished(tmp_path, capsys):
    results, raw = tmp_path / "RESULTS.md", tmp_path / "results-gpu.json"
    results.write_text("# Benchmark results\n\nCPU figures\n\n" + "\n".join(gpu_all.placeholder()) + "\n")
    # the distributed step is killed at its 1 s cap: its figures are lost, the loader's kept, the run says so
    rc = gpu_all.main(["--device", "cpu", "--tiny", "--steps", "loader,distributed", "--cap", "distributed=1",
                       "--results", str(results), "--json", str(raw), "--data-root", str(tmp_path / "data")])
    assert rc == 1
    data = json.loads(raw.read_text())
    assert data["loader_vs_torchvision"] and "distributed" not in data
    assert [(s["step"], s["status"]) for s in data["gpu_all_steps"]] == [("loader", "done"),
                                                                          ("distributed", "timed out (killed)")]
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\nCPU figures") and "not measured yet" not in text
    assert text.count(gpu_all.START) == 1 and "| distributed | distributed | timed out (killed) |" in text
    assert "### Loader vs torchvision DataLoader" in text
    # a later CPU report keeps the GPU section and benchmarks/fused_vmap.py's
    vmap_block = f"{fused_vmap.START}\n## batched members\n{fused_vmap.END}"
    results.write_text(fused_vmap.splice(text, vmap_block))
    cpu = tmp_path / "cpu.json"
    cpu.write_text(json.dumps({**data, "device": "cpu"}))
    assert bench_run.main(["--render-only", "--results", str(results), "--json", str(cpu)]) == 0
    after = results.read_text()
    assert gpu_all.gpu_block(after) == gpu_all.gpu_block(text) and after.count(vmap_block) == 1


def test_gpu_all_refuses_bad_steps_and_caps():
    for argv in (["--steps", "nope"], ["--cap", "loader"], ["--cap", "nope=3"]):
        with pytest.raises(SystemExit):
            gpu_all.main(["--device", "cpu", *argv])
