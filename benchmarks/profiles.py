"""The suite's profiles: every setting of a run of `python -m benchmarks.run`, with its unit, in one place, and
the names of the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TrainCase:
    model: str  # timm name or 'bmlp'
    res: int  # crop side, px
    batch_size: int  # images per step
    model_kwargs: dict = field(default_factory=dict)
    train_per_leaf: int = 0  # 0 = the suite's dataset; else a smaller one (CPU: few steps for a big model)
    resident: bool = False  # the real loader is data.resident's (decoded set on the device) instead of ffcv's


@dataclass(frozen=True)
class DistributedCase:
    """`grainsweep train --nproc N` at each world size (benchmarks/distributed.py)."""

    train: TrainCase  # model, crop side, global batch (split over the processes)
    world_sizes: tuple[int, ...]  # processes per run; on CUDA one GPU each (sizes above the GPU count: skipped)
    epochs: int  # measured epochs per run, after one warm-up epoch
    runs: int  # runs per world size, alternating world sizes


@dataclass(frozen=True)
class FusedCase:
    """One row of the fused benchmark (benchmarks/fused.py): a seed's level runs, fused vs separate."""

    name: str  # the row's label
    data: str  # 'suite': the suite's JPEG beton; 'demo': the demo sweep's dataset (launch/sweeps/default.yaml)
    sets: tuple[str, ...]  # RunConfig overrides ('demo': on top of the demo sweep's `run` section)
    repeats: int  # measured repeats of each side
    warmup: bool = True  # one uncounted run of each side at one epoch first (imports, numba, page cache)


@dataclass(frozen=True)
class Profile:
    preset: str  # synthetic tree ('large' = 144 leaves)
    image_size: int  # stored image side, px (JPEG q90)
    train_per_leaf: int  # train images per leaf: 144 leaves x this = images per epoch
    resolutions: tuple[int, ...]  # crop sides, px, for loader vs torchvision
    batch_size: int  # loader benchmarks, images per batch
    loader_epochs: int  # per figure, the first one is warm-up (not counted)
    decode_passes: int  # cv2 decode passes over the data, the first not counted
    conversion_runs: int  # conversions of the JPEG folder, the first not counted when > 1
    train_epochs: int  # measured epochs per side (real / on-device), after one warm-up epoch each
    train: tuple[TrainCase, ...]
    sweep_seeds: int  # seeds of the tiny sweep that is rerun (runs = seeds x (levels + transfers + scratch))
    sweep_all_levels: bool  # pretrain at every level of the tiny preset (else at the target level only)
    sweep_reruns: int  # reruns of the finished sweep, in process and as a fresh command, each
    compile_runs: int  # fresh processes timing a compiled first step with a cold, then a warm inductor cache
    distributed: DistributedCase
    fused: tuple[FusedCase, ...]


PROFILES: dict[str, Profile] = {
    # tiny everything, one measured repetition: proves the code paths, measures nothing useful
    "quick": Profile(preset="tiny", image_size=48, train_per_leaf=4, resolutions=(32,), batch_size=8,
                     loader_epochs=2, decode_passes=2, conversion_runs=1, train_epochs=1,
                     train=(TrainCase("bmlp", 32, 8, {"depth": 1, "width": 32}),
                            TrainCase("bmlp", 32, 8, {"depth": 1, "width": 32}, resident=True)),
                     sweep_seeds=1, sweep_all_levels=False, sweep_reruns=1, compile_runs=1,
                     distributed=DistributedCase(TrainCase("bmlp", 32, 8, {"depth": 1, "width": 32}), (1, 2), 1, 1),
                     fused=(FusedCase("bmlp at 32 px, JPEG", "suite",
                                      ("model.name=bmlp", "model.kwargs={depth: 1, width: 16}", "data.resolution=32",
                                       "data.batch_size=8", "train.epochs=1", "optim.warmup_epochs=0"), 1, warmup=False),)),
    # 2 CPU cores: 1,152 images at 256 px (an epoch takes ~0.5 s at 224 px: 9 measured epochs a figure, since
    # 3 gave figures that moved by a third between runs); ResNet-50 on 144 images (9 steps of 16) since a CPU
    # step takes seconds
    "cpu": Profile(preset="large", image_size=256, train_per_leaf=8, resolutions=(64, 160, 224), batch_size=64,
                   loader_epochs=10, decode_passes=6, conversion_runs=3, train_epochs=2,
                   train=(TrainCase("bmlp", 64, 64), TrainCase("bmlp", 64, 64, resident=True),
                          TrainCase("resnet50", 160, 16, train_per_leaf=1)),
                   sweep_seeds=2, sweep_all_levels=True, sweep_reruns=3, compile_runs=2,
                   # 18 steps of 64 an epoch, a small MLP (the suite's default bmlp took ~90 s an epoch on 2
                   # shared cores); each run pays its processes' start (~10 s of imports each)
                   distributed=DistributedCase(TrainCase("bmlp", 64, 64, {"depth": 2, "width": 256}), (1, 2), 2, 2),
                   # (a) loader-bound: on 2 shared cores the model must be tiny for decoding to dominate (depth 1,
                   # width 32: ~3,000 img/s, 60% data wait, 2026-12-02); (b) the demo's CNN on the demo's data
                   fused=(FusedCase("bmlp at 64 px, JPEG (loader-bound)", "suite",
                                    ("model.name=bmlp", "model.kwargs={depth: 1, width: 32}", "data.resolution=64",
                                     "data.batch_size=256", "train.epochs=8"), 3),
                          FusedCase("the demo's CNN (data.resident)", "demo", ("train.epochs=2",), 3))),
    # one H100 + 16 cores: 9,216 images at 256 px, bf16 + torch.compile as `grainsweep train` on CUDA
    "cuda": Profile(preset="large", image_size=256, train_per_leaf=64, resolutions=(64, 160, 224), batch_size=256,
                    loader_epochs=5, decode_passes=5, conversion_runs=3, train_epochs=3,
                    train=(TrainCase("bmlp", 64, 256), TrainCase("bmlp", 64, 256, resident=True),
                           TrainCase("resnet50", 160, 256),
                           TrainCase("resnet50", 192, 256)),
                    sweep_seeds=2, sweep_all_levels=True, sweep_reruns=3, compile_runs=2,
                    # ResNet-50 at 160 px, global batch 1024 (128 a GPU at 8); on a node of 8 GPUs (RESULTS.md)
                    distributed=DistributedCase(TrainCase("resnet50", 160, 1024), (1, 2, 4, 8), 3, 1),
                    # (a) the Scaling-MLPs B_6-Wi_1024 at 64 px (the GPU case the issue calls loader-bound); (b) the
                    # demo's CNN; bf16 and compile as `grainsweep train` on CUDA
                    fused=(FusedCase("bmlp-6-1024 at 64 px, JPEG (loader-bound)", "suite",
                                     ("model.name=bmlp", "data.resolution=64", "data.batch_size=256",
                                      "train.epochs=3"), 3),
                           FusedCase("the demo's CNN (data.resident)", "demo", ("train.epochs=4",),
                                     3))),
    # benchmarks/gpu_all.py: every GPU row on one H100/H200 inside the device tool's 10 minutes a command (half the
    # 'cuda' data, fewer epochs and repeats; gpu_all gives each step its own time cap)
    "gpu10": Profile(preset="large", image_size=256, train_per_leaf=32, resolutions=(64, 160, 224), batch_size=256,
                     loader_epochs=3, decode_passes=3, conversion_runs=1, train_epochs=2,
                     train=(TrainCase("bmlp", 64, 256), TrainCase("bmlp", 64, 256, resident=True),
                            TrainCase("resnet50", 160, 256)),
                     sweep_seeds=1, sweep_all_levels=False, sweep_reruns=1, compile_runs=1,
                     distributed=DistributedCase(TrainCase("resnet50", 160, 256), (1,), 2, 1),
                     fused=(FusedCase("bmlp-6-1024 at 64 px, JPEG (loader-bound)", "suite",
                                      ("model.name=bmlp", "data.resolution=64", "data.batch_size=256",
                                       "train.epochs=2"), 2),
                            FusedCase("the demo's CNN (data.resident)", "demo", ("train.epochs=2",),
                                      2))),
}
CPU_GOMP_SPINCOUNT = 100  # libgomp spin count of the cpu profile: libgomp's own when threads outnumber the cores
BENCHMARKS = ("loader_vs_torchvision", "storage", "decode_limit", "train_step", "conversion", "sweep_rerun",
              "distributed", "fused")
