"""The book's tables, rendered from the records at build time: accuracy, the recipe, speed,
tuning, and the GPU benchmarks of ``python -m benchmarks.bench`` (``benchmarks/results/``)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...augment import AugmentConfig, MixConfig
from ...config import PRESETS
from ...schedule import ScheduleConfig
from .records import HOW_TO_RUN, Record, load_benchmarks, load_results


def recipe_row(record: Record) -> dict[str, Any]:
    """The recipe of a recorded run as one table row: model, optimizer, schedule, batch, epochs,
    augmentation, read from the config it ran with."""
    model, data = record.model, record.data
    if "depth" in model and "preset" not in model:  # the CNN baseline (vitlib.lab.results.baseline.ResNetModule)
        arch = {"heads": "-", "mlp_ratio": "-", "drop_path": "-"}
        description = f"ResNet-{model['depth']} (CNN)"
    else:
        arch = {**dataclasses.asdict(PRESETS[model.get("preset", "vit")]), **(model.get("overrides") or {})}
        description = f"{arch['stem']} stem, {arch['attention']}, {arch['dim']} x {arch['depth']}, patch {arch['patch_size']}, {arch['pool']} pool"
    optimizer = model.get("optimizer") or {}
    return {
        "run": record.name,
        "model": description,
        "heads": arch["heads"],
        "MLP ratio": arch["mlp_ratio"],
        "optimizer": f"AdamW, weight decay {optimizer.get('weight_decay', 0.05)}",
        "label smoothing": model.get("label_smoothing"),
        "stochastic depth": arch["drop_path"],
        "batch": data.get("batch_size"),
        "epochs": record.epochs,
        "schedule": ScheduleConfig(**(model.get("schedule") or {})).describe(),
        "augmentation": _augmentation(data.get("augment"), data.get("mix")),
    }


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table with the keys of the first row as columns (``|`` in values is escaped)."""
    if not rows:
        raise ValueError("markdown_table needs at least one row")
    columns = list(rows[0])

    def cell(value: Any) -> str:
        if isinstance(value, float):
            value = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
        return str("" if value is None else value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _percent(value: Any) -> str:
    return f"{100 * value:.2f} %" if isinstance(value, (int, float)) else "n/a"


def split_name(record: Record) -> str:
    """Which images a record's metrics were measured on, as a reader needs it: a ``fit`` validates
    on the split ``split`` says, which for the book's runs is the test set (as in the reference
    project) or training images held out from training."""
    split, images = record.split, record.images
    if split == "val" and "test set" in images:
        return "test (used as validation)"
    if split == "val" and "held out" in images:
        return "held-out training images"
    return split or "?"


def accuracy_table(folder: str | Path = "results") -> str:
    """Markdown: one row per recorded run, or a plain statement that none is recorded and how to
    make one."""
    results = load_results(folder)
    if not results:
        return f"**No full training run is recorded yet**, so this book reports no accuracy. {HOW_TO_RUN}"
    rows = [
        {
            "run": r.name,
            "model": recipe_row(r)["model"] if r.model else "?",
            "split": split_name(r),
            "top-1": _percent(r.metrics.top1),
            "top-5": _percent(r.metrics.top5),
            "loss": r.metrics.loss,
            "epochs": r.epochs or "?",
            "dataset": r.dataset.label,
            "hardware": r.hardware,
            "date": r.date[:10],
            "commit": r.commit[:10],
        }
        for r in results
    ]
    commands = [f"- **{r.name}**: `{r.command}`" for r in results]
    return markdown_table(rows) + "\n\n" + details("The command that re-creates each run", commands)


def path_table(steps: Sequence[tuple[Record, str]]) -> str:
    """Markdown: one row per step of a path of runs (each a record and how it was decided, in the
    order they ran), with its test top-1 and time and what changed in its recipe from the step
    before, read from the configs the runs ran with."""
    if not steps:
        raise ValueError("path_table needs at least one step")
    rows, before = [], None
    for record, decided in steps:
        recipe = recipe_row(record)
        changed = "; ".join(f"{key}: {before[key]} → {value}" for key, value in recipe.items() if key != "run" and before[key] != value) if before else "(the first)"
        fit_s = (record.throughput or {}).get("fit_wall_s")
        rows.append({
            "run": record.name,
            "top-1": _percent(record.metrics.top1),
            "measured on": split_name(record),
            "epochs": record.epochs or "?",
            "fit (min)": f"{fit_s / 60:.0f}" if fit_s else "?",
            "what changed": changed or "nothing in the recipe",
            "how it was decided": decided,
        })  # fmt: skip
        before = recipe
    return markdown_table(rows)


def details(summary: str, lines: Sequence[str]) -> str:
    """Markdown inside a collapsed ``<details>`` block: long provenance (commands, notes) under a
    table instead of in its cells, where it would make every row tall."""
    return f"<details>\n<summary>{summary}</summary>\n\n" + "\n".join(lines) + "\n\n</details>"


# Published results the book compares with (CIFAR-100 from scratch), cited on the results page.
REFERENCE_RESULTS = (
    {"result": "reference Lightning notebook (reshalfahsi)", "top-1": "64.92 %", "setting": "ViT of 52.6 M parameters (51.97 M of them a flatten-MLP head, 9,600 → 4,800 → 1,200 → 100, on inputs upsampled to 80x80; the transformer trunk about 0.6 M), 100 epochs, T4 GPU, about 3 hours (1 min 44 s per epoch in its logs, times 100), official CIFAR-100; the checkpoint reported was picked on the test set"},
    {"result": "Keras example: Train a ViT on small datasets (Gosthipaty)", "top-1": "56.1 %", "setting": "SPT + LSA, 50 epochs, images resized to 72x72, GPU, official CIFAR-100"},
)  # fmt: skip


def throughput_table(folder: str | Path = "results") -> str:
    """Markdown: wall time and images/s of every recorded run that measured them (the whole
    ``fit``, its training epochs, and the bare step of the same model in the same process)."""
    rows = []
    for r in load_results(folder):
        t = r.throughput or {}
        if not t.get("fit_wall_s"):
            continue
        rows.append({
            "run": r.name,
            "hardware": r.hardware,
            "fit wall time (min)": f"{t['fit_wall_s'] / 60:.1f}",
            "images/s, whole fit": f"{t['fit_images_per_s']:.0f}",
            "images/s, training epochs": f"{t['train_images_per_s']:.0f}",
            "images/s, bare step": f"{t['bare_step_images_per_s']:.0f}" if t.get("bare_step_images_per_s") else "n/a",
            "training / bare": f"{t['train_vs_bare']:.0%}" if t.get("train_vs_bare") else "n/a",
            "threads": t.get("threads"),
            "resumed": f"{len(t['parts']) - 1} times, all parts timed" if t.get("parts") else ("yes, this part only" if t.get("resumed_from") else "no"),
        })  # fmt: skip
    if not rows:
        return "**No recorded run measured its speed.**"
    # What a record says about its own numbers (an overrun, a disturbed machine) goes with them.
    notes = [f"- {r.name}: {r.note}" for r in load_results(folder) if r.note and (r.throughput or {}).get("fit_wall_s")]
    return markdown_table(rows) + ("\n\n" + details("Notes recorded with the runs", notes) if notes else "")


def bare_step_table(folder: str | Path = "results/speed") -> str:
    """Markdown: each bare-step comparison of ``python -m vitlib.lab.results.speed --out`` in ``folder``
    as its own short table (speeds are relative to the first model of the same comparison), with
    its provenance above it and the models' full overrides collapsed below it."""
    parts = []
    for file, payload in _speed_files(folder, fit=False):
        rows = [
            {
                "model": row["name"],
                "parameters": f"{row['parameters']:,}",
                "images/s, bare step": f"{row['images_per_s']:.0f}",
                "relative to the first": f"{row['relative_to_first']:.2f}x",
            }
            for row in payload["rows"]
        ]
        overrides = [f"- **{row['name']}**: " + ", ".join(f"{k}={v}" for k, v in row["overrides"].items()) for row in payload["rows"]]
        parts.append(
            f"**{file.stem}**: {payload['hardware']}, batch {payload['batch_size']}, {payload['threads']} threads, "
            f"commit {str(payload['commit'])[:10]}\n\n{markdown_table(rows)}\n\n{details('The models (ViTConfig overrides of the vit preset)', overrides)}"
        )
    return "\n\n".join(parts) if parts else "**No bare-step comparison is recorded.**"


def _speed_files(folder: str | Path, fit: bool) -> list[tuple[Path, dict[str, Any]]]:
    """The files of ``python -m vitlib.lab.results.speed --out`` in ``folder``: those of ``--fit`` or of ``--model``."""
    files = sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else []
    payloads = [(file, json.loads(file.read_text())) for file in files]
    return [(file, payload) for file, payload in payloads if (payload.get("kind") == "fit") == fit]


def _augmentation(augment: dict[str, Any] | None, mix: dict[str, Any] | None) -> str:
    """A config's augmentation and mixing in words, as the configs describe themselves."""
    steps = [AugmentConfig(**augment).describe()] if augment else []
    steps = [step for step in steps if step != "none"] + ([MixConfig(**mix).describe()] if mix else [])
    return ", ".join(steps) or "none"


def fit_speed_table(folder: str | Path = "results/speed") -> str:
    """Markdown: each comparison of ``python -m vitlib.lab.results.speed --fit --out`` in ``folder`` as a
    short table, one row per config: its augmentation, the training images/s of a fit, the bare
    step's in the same process, and their ratio."""
    parts = []
    for file, payload in _speed_files(folder, fit=True):
        rows = [
            {
                "config": f"{row['name']} (`{row['config']}`)",
                "augmentation": _augmentation(row.get("augment"), row.get("mix")),
                "images/s, training": f"{row['train_images_per_s']:.0f}",
                "images/s, bare step": f"{row['bare_step_images_per_s']:.0f}",
                "training / bare": f"{row['train_vs_bare']:.0%}",
            }
            for row in payload["rows"]
        ]
        parts.append(
            f"**{file.stem}**: {payload['hardware']}, {payload['threads']} threads, {payload['batches']} batches an epoch, "
            f"second epoch of each fit, commit {str(payload['commit'])[:10]}, {str(payload['date'])[:10]}\n\n{markdown_table(rows)}"
        )
    return "\n\n".join(parts) if parts else "**No fit-speed comparison is recorded.**"


def tuning_table(folder: str | Path = "results/tuning") -> str:
    """Markdown: the runs that chose a recipe, validated on held-out training images (never the
    test set): each run's model and schedule, its held-out top-1 after every epoch, its speed."""
    runs = load_results(folder)
    if not runs:
        return "**No tuning run is recorded.**"
    rows = []
    for r in runs:
        arch = {**dataclasses.asdict(PRESETS[r.model.get("preset", "vit")]), **(r.model.get("overrides") or {})}
        rows.append({
            "run": r.name,
            "model": f"{arch['stem']} stem, {arch['dim']} x {arch['depth']}, {arch['heads']} heads",
            "schedule": f"{(r.model.get('schedule') or {}).get('name')}, {r.planned_epochs} epochs, max LR {(r.model.get('schedule') or {}).get('max_lr')}",
            "held-out top-1 by epoch": " → ".join(f"{100 * v:.1f} %" for _, v in r.history.get("val/top1", [])),
            "note": r.stopped_early or "",
            "split": r.images,
        })  # fmt: skip
    return markdown_table(rows)


def benchmark_table(folder: str | Path = "benchmarks/results") -> str:
    """Markdown: one row per benchmarked configuration, or a statement that none is recorded."""
    benches = load_benchmarks(folder)
    if not benches:
        return (
            "**No GPU benchmark is recorded yet.** On a machine with a GPU run `python -m benchmarks.bench`; "
            "it writes `benchmarks/results/<gpu>-<date>.json`, which this page then shows."
        )
    rows = [
        {
            "gpu": bench["gpu"],
            "date": str(bench["date"])[:10],
            "name": row.get("name"),
            "impl": row.get("impl"),
            "model": row.get("model"),
            "images/s": row.get("images_per_s"),
            "epoch (s)": row.get("epoch_s"),
            "MFU": row.get("mfu"),
            "peak memory (GB)": row.get("peak_mem_gb"),
            "batch": row.get("batch_size"),
            "precision": row.get("precision"),
            "torch": bench["torch"],
            "commit": str(bench["commit"])[:10],
        }
        for bench in benches
        for row in bench["rows"]
    ]
    return markdown_table(rows)
