"""``python -m benchmarks.bench``: training throughput of vitlib against standard implementations.

Every row trains for ``--warmup`` steps (compilation, DataLoader workers starting, caches filling),
then is timed over ``--steps`` steps by the wall clock, the device synchronised at both ends, so
each timed step includes loading and augmenting its batch: images per second end to end. No
evaluation runs. FLOPs per image (forward + backward) are counted with
``torch.utils.flop_counter`` on the CPU, with SDPA on its math path so that attention is counted
as matmuls; MFU divides the achieved FLOP/s by the matmul peak of the GPU's fast half precision
measured on the same GPU in the same run (fp32 rows too, so every row is on one scale): bf16 from
compute capability 8.0, float16 below it (a T4 or V100 has no bf16 tensor cores); the table's
last lines and the results file (``peak_dtype``) name it.

Rows:

- vitlib, measured through the real thing: ``ViTCLI`` builds the module, data module and Trainer
  from ``configs/fast.yaml`` (or ``reference.yaml``) exactly as ``python -m vitlib fit`` does,
  and ``Trainer.fit`` runs with one timing callback added, so the step timed is the step users run
  (Lightning's loop, logging, callbacks included). Its precision and compile are the machine's
  (:func:`vitlib.support.hardware.choose`), as for every run; each row says what ran. The variants
  change one setting of the recipe at a time: compiled, eager (the pair that decides
  ``hardware.COMPILE_MEASURED``), CPU-worker augmentation, the plain teaching path.
- timm's ``VisionTransformer`` of the same size, trained the usual way: a DataLoader with CPU
  workers over the same torchvision v2 transforms (crop, flip, RandAugment), CutMix/MixUp on the
  device in the loop, float32, eager, AdamW, batch 256 (the reference recipe's).
- vit-pytorch's SPT + LSA ViT (``vit_pytorch.vit_for_small_dataset``), the same way, against
  vitlib's ``slvit`` preset.

Data: CIFAR-100 from ``--data-dir`` when it is there, else synthetic uint8 images of the same
shape written in the same file layout (speed does not depend on pixel values). ``--tiny`` runs
tiny models on tiny synthetic data in seconds on a CPU (a test does), without torch.compile.
The results go to ``<out>/<gpu>-<date>.json`` with the run's provenance.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shlex
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from vitlib.augment import AugmentConfig, BatchMixer, MixConfig, soft_target_cross_entropy, train_transform
from vitlib.cli import ViTCLI
from vitlib.config import ViTConfig
from vitlib.lab.results.launch import Data, RunSpec
from vitlib.model import ViT, count_parameters
from vitlib.schedule import ScheduleConfig, build_scheduler
from vitlib.support.cifar import (
    DatasetNotFoundError,
    default_data_dir,
    ensure_cifar100,
    load_cifar100,
    quick_mode,
    write_cifar100,
)
from vitlib.support.files import write_json_atomic
from vitlib.support.hardware import Capabilities
from vitlib.support.provenance import commit_and_dirty, gpu_name, slug, this_machine

__all__ = ["ROWS", "Row", "StepTimer", "main", "matmul_peak_flops", "peak_dtype", "run_benchmark", "training_flops_per_image"]

REPO = Path(__file__).resolve().parents[1]
CIFAR_TRAIN_IMAGES = 50_000  # one epoch, for epoch_s
BASELINE_BATCH = 256  # the reference recipe's batch size: how the baselines are usually trained
TINY_MODEL = {"dim": 32, "depth": 1, "heads": 2}
TINY_BATCH = 16
TINY_TRAIN_IMAGES = 128


@dataclass(frozen=True)
class Row:
    """One implementation and setting to time. ``config``/``options``: vitlib rows only."""

    name: str
    impl: str  # "vitlib", "timm" or "vit-pytorch"
    model: str  # the vitlib preset it is (or matches in size)
    config: str = "fast.yaml"
    options: tuple[tuple[str, object], ...] = ()  # CLI options over the config, e.g. ("model.compile", True)
    default: bool = False  # vitlib's default preset with the fast recipe
    what: str = ""


ROWS = (
    Row("vitlib-vit-fast", "vitlib", "vit", default=True,
        what="configs/fast.yaml as it is: precision and compile as the machine's decision picks"),
    Row("vitlib-vit-fast-compiled", "vitlib", "vit", options=(("model.compile", True),), what="fast, torch.compile"),
    Row("vitlib-vit-fast-eager", "vitlib", "vit", options=(("model.compile", False),), what="fast, no torch.compile"),
    Row("vitlib-vit-fast-cpu-workers", "vitlib", "vit", options=(("data.pipeline", "torchvision"),),
        what="fast, augmentation in DataLoader workers"),
    Row("vitlib-vit-plain", "vitlib", "vit", config="reference.yaml",
        options=(("data.pipeline", "torchvision"), ("trainer.precision", "32-true")),
        what="the teaching path: reference.yaml, DataLoader workers, float32, eager"),
    Row("timm-vit", "timm", "vit", what="timm VisionTransformer, DataLoader workers, float32, eager"),
    Row("vitlib-slvit-fast", "vitlib", "slvit", options=(("model.preset", "slvit"),), what="fast, slvit preset"),
    Row("vit-pytorch-slvit", "vit-pytorch", "slvit", what="vit-pytorch SPT+LSA ViT, DataLoader workers, float32, eager"),
)  # fmt: skip
BASELINE_IMPLS = ("timm", "vit-pytorch")


# ----------------------------------------------------------------------------------------------
# Measuring


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(L.Callback):
    """Wall-clock time of steps ``warmup + 1 .. warmup + steps``, the device synchronised at both
    ends only (a sync inside would stall the queue being measured), and the peak device memory
    over those steps. A Lightning callback, or called by hand with :meth:`step_done`."""

    def __init__(self, warmup: int, steps: int) -> None:
        if warmup < 1 or steps < 1:
            raise ValueError(f"warm-up and timed steps must be >= 1 (the first step compiles); got {warmup}, {steps}")
        self.warmup, self.steps = warmup, steps
        self.done = 0
        self.start: float | None = None
        self.seconds: float | None = None
        self.peak_bytes: int | None = None

    def step_done(self, device: torch.device) -> bool:
        """Call after every step; True once the timed steps are over."""
        self.done += 1
        if self.done == self.warmup:
            synchronize(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            self.start = time.perf_counter()
        elif self.done == self.warmup + self.steps:
            synchronize(device)
            self.seconds = time.perf_counter() - self.start
            self.peak_bytes = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        return self.seconds is not None

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        if self.step_done(module.device):
            trainer.should_stop = True


def training_flops_per_image(model: nn.Module, image_size: int = 32) -> float:
    """FLOPs of one training step (forward + backward) per image, counted on the CPU in float32
    with SDPA on its math path, where attention is plain matmuls that the counter sees (its fused
    CPU kernel is not counted)."""
    images = torch.randn(2, 3, image_size, image_size)
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        model.train()(images).float().square().mean().backward()
    return counter.get_total_flops() / images.shape[0]


def peak_dtype(capabilities: Capabilities) -> torch.dtype:
    """The dtype of a GPU's fast matmuls, MFU's scale: bf16 from compute capability 8.0, float16 below."""
    return torch.bfloat16 if capabilities.bf16_native else torch.float16


def matmul_peak_flops(device: torch.device, dtype: torch.dtype = torch.bfloat16, size: int = 8192, repeats: int = 20) -> float:
    """FLOP/s of the fastest of five timings of ``repeats`` square matmuls of ``size``."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    out = torch.empty_like(a)
    for _ in range(3):
        torch.mm(a, b, out=out)
    best = math.inf
    for _ in range(5):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b, out=out)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best


# ----------------------------------------------------------------------------------------------
# The run's settings and data


@dataclass
class Settings:
    warmup: int
    steps: int
    workers: int
    tiny: bool
    data_root: Path
    data: str  # what the data are, for the results file
    verify_md5: bool
    device: torch.device
    overrides: tuple[str, ...] = ()  # extra `python -m vitlib fit` arguments for every vitlib row
    skipped: list[dict[str, str]] = field(default_factory=list)  # baseline packages not installed
    failed: list[dict[str, str]] = field(default_factory=list)  # rows that raised: the others still run

    def model_config(self, preset: str) -> ViTConfig:
        return ViTConfig.from_preset(preset, **(TINY_MODEL if self.tiny else {}))


def prepare_data(data_dir: Path, tiny: bool, scratch: Path) -> tuple[Path, str, bool]:
    """(root, description, verify_md5): the official CIFAR-100 under ``data_dir`` if it is there
    (never downloaded here), else synthetic uint8 images of the same shape under ``scratch``."""
    if not tiny:
        try:
            root = ensure_cifar100(data_dir, download=False)
            load_cifar100(root, train=False, download=False, verify_md5=True)
            return root, f"CIFAR-100 at {root}", True
        except DatasetNotFoundError:
            pass
    n_train = TINY_TRAIN_IMAGES if tiny else CIFAR_TRAIN_IMAGES
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_train + 100, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(n_train + 100) % 100
    write_cifar100(scratch, images[:n_train], labels[:n_train], images[n_train:], labels[n_train:])
    return scratch, f"synthetic uint8 images in the CIFAR-100 layout ({n_train} training images)", False


# ----------------------------------------------------------------------------------------------
# Rows


def cpu_workers(n: int) -> str:
    return f"torchvision, {n} CPU worker{'s' if n != 1 else ''}"


def run_vitlib(row: Row, settings: Settings, scratch: Path) -> dict[str, Any]:
    """``Trainer.fit`` of the module, data module and Trainer that ViTCLI builds from the config."""
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(scratch)}}
    options = (
        *row.options, ("seed_everything", 0), ("data.num_workers", settings.workers),
        ("trainer.max_steps", settings.warmup + settings.steps), ("trainer.max_epochs", -1),
        ("trainer.limit_val_batches", 0), ("trainer.num_sanity_val_steps", 0),
        ("trainer.enable_progress_bar", False), ("trainer.enable_model_summary", False), ("trainer.logger", json.dumps(logger)),
        ("checkpoint.save_top_k", 0), ("checkpoint.save_last", False), ("checkpoint.monitor", None),
    )  # fmt: skip
    if settings.tiny:
        options += (("model.overrides", json.dumps(TINY_MODEL)), ("data.batch_size", TINY_BATCH), ("model.compile", False))
    spec = RunSpec(REPO / "configs" / row.config, options, Data(settings.data_root, settings.verify_md5), scratch,
                   extra=tuple(settings.overrides))  # fmt: skip
    args = spec.argv()[1:]  # ViTCLI(run=False) takes no subcommand
    with warnings.catch_warnings():  # "args given while sys.argv has the benchmark's own": intended
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = ViTCLI(args=args, run=False)
    timer = StepTimer(settings.warmup, settings.steps)
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    dm, module = cli.datamodule, cli.model
    pipeline = dm.active_pipeline
    return {
        "batch_size": dm.batch_size * cli.trainer.world_size,
        "precision": str(cli.trainer.precision),
        "pipeline": pipeline if pipeline == "batched" else cpu_workers(dm.num_workers),
        "compile": module.compiled,  # what ran: "eager" after a compile that failed
        "timer": timer,
        "model_config": module.config,
        "build": lambda: ViT(module.config),
    }


def build_timm(cfg: ViTConfig) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=cfg.image_size, patch_size=cfg.patch_size, in_chans=cfg.in_channels, num_classes=cfg.num_classes,
        embed_dim=cfg.dim, depth=cfg.depth, num_heads=cfg.heads, mlp_ratio=cfg.mlp_ratio,
        drop_rate=cfg.dropout, drop_path_rate=cfg.drop_path, class_token=cfg.pool == "cls",
        # timm has no sequence pooling ("seq"): its mean pooling costs the same but for one dot
        # product per token, nothing beside the blocks' cost.
        global_pool="token" if cfg.pool == "cls" else "avg",
    )  # fmt: skip


def build_vit_pytorch(cfg: ViTConfig) -> nn.Module:
    from vit_pytorch.vit_for_small_dataset import ViT as SmallDatasetViT

    return SmallDatasetViT(
        image_size=cfg.image_size, patch_size=cfg.patch_size, num_classes=cfg.num_classes, dim=cfg.dim,
        depth=cfg.depth, heads=cfg.heads, mlp_dim=int(cfg.dim * cfg.mlp_ratio), dim_head=cfg.head_dim,
        dropout=cfg.dropout, pool=cfg.pool, channels=cfg.in_channels,
    )  # fmt: skip


BUILDERS: dict[str, Callable[[ViTConfig], nn.Module]] = {"timm": build_timm, "vit-pytorch": build_vit_pytorch}


def endless(loader: DataLoader) -> Iterator[Any]:
    while True:
        yield from loader


def run_baseline(row: Row, settings: Settings, scratch: Path) -> dict[str, Any]:
    """The usual training loop: CPU-worker augmentation, float32, eager, no host syncs added."""
    cfg = settings.model_config(row.model)
    device = settings.device
    torch.manual_seed(0)
    model = BUILDERS[row.impl](cfg).to(device)  # ImportError when the package is missing: skipped
    batch_size = TINY_BATCH if settings.tiny else BASELINE_BATCH
    dataset = load_cifar100(settings.data_root, True, train_transform(AugmentConfig()), download=False,
                            verify_md5=settings.verify_md5)  # fmt: skip
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=settings.workers,
                        pin_memory=device.type == "cuda", persistent_workers=settings.workers > 0)  # fmt: skip
    mixer = BatchMixer(MixConfig(), cfg.num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    scheduler = build_scheduler(optimizer, ScheduleConfig(), len(loader), max_epochs=100)
    timer = StepTimer(settings.warmup, settings.steps)
    model.train()
    batches = endless(loader)
    while True:
        images, labels = next(batches)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        images, targets = mixer(images, labels)
        loss = soft_target_cross_entropy(model(images), targets, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if timer.step_done(device):
            break
    del batches, loader  # stops the workers
    return {
        "batch_size": batch_size,
        "precision": "32-true",
        "pipeline": cpu_workers(settings.workers),
        "compile": "eager",
        "timer": timer,
        "model_config": cfg,
        "build": lambda: BUILDERS[row.impl](cfg),
    }


def free_memory(device: torch.device) -> None:
    gc.collect()
    torch._dynamo.reset()  # each compiled row starts from an empty cache
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_row(row: Row, settings: Settings, peak_flops: float | None) -> dict[str, Any] | None:
    """Runs one row. None, with an entry in ``settings.skipped`` when a baseline's package is
    missing, or in ``settings.failed`` when the row raised (out of memory, say): one bad row must
    not take the others down with it."""
    with tempfile.TemporaryDirectory(prefix=f"vitlib-bench-{row.name}-") as scratch:
        try:
            run = (run_vitlib if row.impl == "vitlib" else run_baseline)(row, settings, Path(scratch))
        except ImportError as err:
            if row.impl == "vitlib":
                raise
            settings.skipped.append({"name": row.name, "reason": f"{type(err).__name__}: {err}"})
            return None
        except Exception as err:  # noqa: BLE001 - recorded, printed, and the exit status says so
            traceback.print_exc()
            settings.failed.append({"name": row.name, "error": f"{type(err).__name__}: {err}"})
            free_memory(settings.device)
            return None
    timer: StepTimer = run["timer"]
    images_per_s = settings.steps * run["batch_size"] / timer.seconds
    model = run["build"]()
    flops = training_flops_per_image(model, run["model_config"].image_size)
    mfu = flops * images_per_s / peak_flops if peak_flops else None
    result = {
        "name": row.name,
        "impl": row.impl,
        "model": row.model,
        "default": row.default,
        "images_per_s": round(images_per_s, 1),
        "epoch_s": round(CIFAR_TRAIN_IMAGES / images_per_s, 3),
        "mfu": None if mfu is None else round(mfu, 4),
        "peak_mem_gb": None if timer.peak_bytes is None else round(timer.peak_bytes / 1e9, 3),
        "batch_size": run["batch_size"],
        "precision": run["precision"],
        "pipeline": run["pipeline"],
        "compile": run["compile"],
        "params": count_parameters(model),
        "training_flops_per_image": flops,  # forward + backward; results records keep forward FLOPs as flops_per_image
        "what": row.what,
    }
    del run, model
    free_memory(settings.device)
    return result


# ----------------------------------------------------------------------------------------------
# Provenance, the table, the file


def comparisons(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every vitlib row against each baseline row of the same model: how many times faster."""
    out = []
    for row in rows:
        if row["impl"] != "vitlib":
            continue
        for base in rows:
            if base["impl"] in BASELINE_IMPLS and base["model"] == row["model"]:
                speedup = round(row["images_per_s"] / base["images_per_s"], 2)
                out.append({"row": row["name"], "baseline": base["name"], "speedup": speedup})
    return out


def table(rows: Sequence[dict[str, Any]]) -> str:
    columns = [
        ("name", "name", "{}"), ("impl", "impl", "{}"), ("model", "model", "{}"), ("batch", "batch_size", "{}"),
        ("precision", "precision", "{}"), ("pipeline", "pipeline", "{}"), ("compile", "compile", "{}"),
        ("images/s", "images_per_s", "{:,.0f}"), ("epoch s", "epoch_s", "{:.2f}"), ("MFU", "mfu", "{:.1%}"),
        ("peak GB", "peak_mem_gb", "{:.2f}"),
    ]  # fmt: skip
    cells = [[title for title, _, _ in columns]]
    for row in rows:
        cells.append(["-" if row[key] is None else fmt.format(row[key]) for _, key, fmt in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def results_path(out: Path, gpu: str, date: datetime) -> Path:
    return out / f"{slug(gpu)}-{date:%Y-%m-%d}.json"


def run_benchmark(
    out: Path,
    rows: Sequence[Row] = ROWS,
    warmup: int = 20,
    steps: int = 100,
    workers: int | None = None,
    tiny: bool = False,
    data_dir: Path | None = None,
    overrides: Sequence[str] = (),
    command: str = "",
    commit: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Runs ``rows``, prints the table, writes the results file; returns its path and contents.
    ``overrides``: extra ``python -m vitlib fit`` arguments for every vitlib row. ``commit``: the
    commit measured, for a copy of the tree without its git history (else read from git)."""
    if quick_mode():
        raise ValueError("VITLIB_QUICK is set: unset it; the benchmark chooses its own data (--tiny for a small run)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    workers = (1 if tiny else os.cpu_count() or 1) if workers is None else workers
    started = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory(prefix="vitlib-bench-data-") as scratch:
        root, data, verify_md5 = prepare_data(data_dir or default_data_dir(), tiny, Path(scratch))
        settings = Settings(warmup, steps, workers, tiny, root, data, verify_md5, device, tuple(overrides))
        dtype = peak_dtype(Capabilities.detect()) if device.type == "cuda" else None
        peak = matmul_peak_flops(device, dtype) if dtype is not None else None
        results = [r for r in (measure_row(row, settings, peak) for row in rows) if r is not None]
    gpu = gpu_name(device) or "cpu"
    commit, dirty = (commit, None) if commit else commit_and_dirty(REPO)
    payload = {
        "gpu": gpu,
        "torch": torch.__version__,
        "commit": commit,
        "dirty": dirty,
        "date": started.isoformat(timespec="seconds"),
        "hardware": this_machine(detail=True),  # the device is the current GPU, else the CPU
        "command": command,
        "data": data,
        "tiny": tiny,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "vitlib_overrides": list(overrides),
        "peak_tflops": None if peak is None else round(peak / 1e12, 1),
        "peak_dtype": None if dtype is None else str(dtype).removeprefix("torch."),  # MFU's scale
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "epoch_images": CIFAR_TRAIN_IMAGES,
        "rows": results,
        "comparisons": comparisons(results),
        "skipped": settings.skipped,
        "failed": settings.failed,
    }
    path = results_path(out, gpu, started)
    write_json_atomic(path, payload)
    print(table(results))
    if peak is not None:
        print(f"MFU against the {payload['peak_dtype']} matmul peak measured here: {payload['peak_tflops']} TFLOP/s")
    for comparison in payload["comparisons"]:
        print(f"{comparison['row']}: {comparison['speedup']}x {comparison['baseline']}")
    for skip in settings.skipped:
        print(f"skipped {skip['name']}: {skip['reason']}")
    for failure in settings.failed:
        print(f"FAILED {failure['name']}: {failure['error']}")
    print(f"results written to {path}")
    return path, payload


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for <gpu>-<date>.json")
    parser.add_argument("--rows", default="", help=f"comma-separated subset of: {', '.join(r.name for r in ROWS)}")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per row (default 20; tiny: 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row (default 100; tiny: 2)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: all CPUs; tiny: 1)")
    parser.add_argument("--data-dir", type=Path, default=None, help="where CIFAR-100 is (default: $VITLIB_DATA or ./data)")
    parser.add_argument("--tiny", action="store_true", help="tiny models and data, no compile: seconds on a CPU")
    parser.add_argument("--commit", default=None, help="the commit measured, where the tree has no .git (default: git's HEAD)")
    parser.add_argument("--override", action="append", default=[], metavar="ARG",
                        help="an extra `python -m vitlib fit` argument for every vitlib row, once per word: "
                        "--override=--data.batch_size --override=2048")  # fmt: skip
    args = parser.parse_args(argv)
    rows = ROWS
    if args.rows:
        names = [name.strip() for name in args.rows.split(",")]
        unknown = sorted(set(names) - {r.name for r in ROWS})
        if unknown:
            parser.error(f"unknown rows {unknown}; choose from {', '.join(r.name for r in ROWS)}")
        rows = tuple(r for r in ROWS if r.name in names)
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 20)
    steps = args.steps if args.steps is not None else (2 if args.tiny else 100)
    command = shlex.join(["python", "-m", "benchmarks.bench", *argv])
    try:
        _, results = run_benchmark(
            args.out, rows, warmup, steps, args.workers, args.tiny, args.data_dir, args.override, command, args.commit
        )
    except ValueError as error:
        print(f"benchmarks.bench: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if results["failed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
