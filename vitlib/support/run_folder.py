"""The folder a run writes, and how to read it back: the one place that spells its layout.

``python -m vitlib fit`` (or ``test``) writes into ``<root>/vitlib/version_N/``::

    config.yaml              the configuration it ran with (the CLI's SaveConfigCallback)
    metrics.csv              per-step and per-epoch values (CSVLogger, flushed every epoch)
    metrics.json             final metrics, what ran, timing (MetricsWriter; at a fit's or test's end)
    checkpoints/last.ckpt    the weights after the last epoch (EveryEpochCheckpoint)
    events.out.tfevents.*    the same curves for TensorBoard

A fit that was stopped and resumed (``--ckpt_path <part>/checkpoints/last.ckpt``) spans several
such folders, its *parts*: each resumed part names its predecessor's checkpoint in its
``config.yaml``. The callbacks and the CLI write through the names below; everything that reads a
run (records, comparisons, speed measurements, benchmarks) reads through the functions.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .cifar import DatasetId, default_data_dir, identify_cifar100, quick_mode
from .files import read_json

LOGGER_NAME = "vitlib"  # <root>/vitlib/version_N: the loggers' name
VERSION_PREFIX = "version_"
CONFIG = "config.yaml"
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
CHECKPOINTS = "checkpoints"
LAST_CKPT = "last.ckpt"
# LearningRateMonitor names its columns "lr-<optimizer>" or, with several parameter groups,
# "lr-<optimizer>/pg1", "/pg2", ...: the first group's is the learning rate of the schedule.
LR_PREFIX = "lr-"

History = dict[str, list[tuple[int, float]]]


def version_folder(root: str | Path, version: int, name: str = LOGGER_NAME) -> Path:
    """``<root>/<name>/version_<version>``: where a run under ``root`` writes (``name``: the
    loggers' name, ``vitlib`` unless a command line gives its own loggers)."""
    return Path(root) / name / f"{VERSION_PREFIX}{version}"


def last_checkpoint(folder: str | Path) -> Path:
    return Path(folder) / CHECKPOINTS / LAST_CKPT


def config_of(folder: str | Path) -> dict[str, Any]:
    """The run's ``config.yaml`` (empty when it has none)."""
    file = Path(folder) / CONFIG
    return (yaml.safe_load(file.read_text()) or {}) if file.is_file() else {}


def final_metrics(folder: str | Path) -> dict[str, Any] | None:
    """The run's ``metrics.json``; ``None`` when it did not finish (or is no run folder)."""
    return read_json(Path(folder) / METRICS_JSON)


def read_history(metrics_csv: str | Path) -> History:
    """Per-epoch values of a run's ``metrics.csv`` (Lightning's CSVLogger):
    ``{"train/loss": [(epoch, value), ...], "val/top1": [...], ..., "lr": [...]}``.

    ``lr`` is the learning rate of the last step of each epoch (the logger writes it per step,
    without an epoch number; an epoch's rows carry the step index of its last step)."""
    history: History = {}
    lr_steps: list[tuple[int, float]] = []
    epoch_ends: dict[int, int] = {}
    with open(metrics_csv, newline="") as f:
        reader = csv.DictReader(f)
        lr_column = min((c for c in reader.fieldnames or () if c.startswith(LR_PREFIX)), default=None)
        for row in reader:
            lr = row.get(lr_column) if lr_column else None
            if lr and row.get("step"):
                lr_steps.append((int(row["step"]), float(lr)))
            if not row.get("epoch"):
                continue
            epoch = int(row["epoch"])
            epoch_ends[epoch] = max(epoch_ends.get(epoch, 0), int(row.get("step") or 0))
            for key, value in row.items():
                if "/" in key and not key.startswith(LR_PREFIX) and value not in ("", None):
                    history.setdefault(key, []).append((epoch, float(value)))
    for epoch, end in sorted(epoch_ends.items()):
        before = [lr for step, lr in lr_steps if step <= end]
        if before:
            history.setdefault("lr", []).append((epoch, before[-1]))
    return history


def history(folder: str | Path) -> History:
    """The per-epoch history of the run in ``folder`` (empty when it logged nothing yet)."""
    file = Path(folder) / METRICS_CSV
    return read_history(file) if file.is_file() else {}


def validated_epochs(folder: str | Path) -> int:
    """How many epochs of the fit in ``folder`` ended with a validation (0 when none did)."""
    points = history(folder).get("val/top1")
    return points[-1][0] + 1 if points else 0


def planned_epochs(folder: str | Path) -> int | None:
    return (config_of(folder).get("trainer") or {}).get("max_epochs")


def run_folders(root: str | Path) -> list[Path]:
    """The ``vitlib/version_N`` folders under ``root``, in the order they were made (by number:
    a copy of the folder, such as a clone of a repository, does not keep file times)."""
    folders = (Path(root) / LOGGER_NAME).glob(f"{VERSION_PREFIX}*")
    return sorted((f for f in folders if f.name.split("_")[-1].isdigit()), key=lambda f: int(f.name.split("_")[-1]))


def finished(folder: Path) -> bool:
    """Whether the fit in ``folder`` ran its whole schedule: it wrote ``metrics.json``, or it was
    killed after validating its last epoch, before writing it (resuming such a fit trains nothing
    and validates nothing, so it would never write one)."""
    if (folder / METRICS_JSON).is_file():
        return True
    planned = planned_epochs(folder)
    return planned is not None and validated_epochs(folder) >= planned


def resumed_from(folder: Path) -> Path | None:
    """The folder whose ``last.ckpt`` the fit in ``folder`` resumed from, if it did."""
    ckpt = config_of(folder).get("ckpt_path")
    return Path(ckpt).parent.parent if ckpt else None


def parts_ending(last: Path) -> list[Path]:
    """The folders of the fit that ``last`` ends, first part to last."""
    parts = [last]
    while (before := resumed_from(parts[0])) is not None:
        parts.insert(0, before)
    return parts


def check_parts(run_dir: str | Path | Sequence[str | Path]) -> list[Path]:
    """``run_dir`` (one folder, or the parts of a resumed fit in the order they ran) as a list,
    after checking that each part resumed from a checkpoint of the one before."""
    parts = [Path(run_dir)] if isinstance(run_dir, (str, Path)) else [Path(p) for p in run_dir]
    if not parts:
        raise ValueError("no run folder given")
    for before, after in zip(parts, parts[1:]):
        ckpt = config_of(after).get("ckpt_path")
        if not ckpt or before.resolve() not in Path(ckpt).resolve().parents:
            raise ValueError(
                f"{after} was not resumed from a checkpoint of {before} (its ckpt_path is {ckpt!r}): "
                "give the folders of one fit in the order they ran"
            )
    return parts


def finished_parts(root: str | Path) -> list[Path] | None:
    """The folders of the last fit under ``root`` that finished, first part to last; ``None``
    when none finished."""
    done = [f for f in run_folders(root) if finished(f)]
    return parts_ending(done[-1]) if done else None


def resume_point(root: str | Path) -> Path | None:
    """The ``last.ckpt`` of the newest fit under ``root`` that wrote one, to resume from; ``None``
    when a fit finished."""
    if finished_parts(root):
        return None
    checkpoints = [c for c in map(last_checkpoint, run_folders(root)) if c.is_file()]
    return checkpoints[-1] if checkpoints else None


def stopped_parts(root: str | Path) -> list[Path] | None:
    """The folders of the fit under ``root`` that stopped before its end and can be resumed
    (:func:`resume_point`), first part to last; ``None`` when there is none, or it validated no
    epoch yet."""
    ckpt = resume_point(root)
    if ckpt is None:
        return None
    last = ckpt.parent.parent
    return parts_ending(last) if validated_epochs(last) else None


def merged_history(parts: Sequence[Path]) -> History:
    """The per-epoch history of a fit run in several parts: a later part's epochs replace an
    earlier part's (an epoch cut short by a kill is trained again after the resume). Refuses holes:
    a missing epoch would make the curves lie."""
    merged: dict[str, dict[int, float]] = {}
    for part in parts:
        for key, points in history(part).items():
            merged.setdefault(key, {}).update(dict(points))
    result = {key: sorted(points.items()) for key, points in merged.items()}
    for key in ("val/top1", "train/top1"):
        epochs = [epoch for epoch, _ in result.get(key, [])]
        missing = sorted(set(range(max(epochs, default=-1) + 1)) - set(epochs))
        if missing:
            raise ValueError(
                f"{key} has no row for epoch(s) {missing} in {', '.join(map(str, parts))}: a part of the run is "
                f"missing (give every folder of the fit, in order) or its {METRICS_CSV} lost rows"
            )
    return result


def _logged_timing(history: History) -> tuple[float, int]:
    """Seconds spent training and images trained, from the epochs' logged times."""
    epoch_s = dict(history.get("time/train_epoch_s", []))
    rates = dict(history.get("time/train_images_per_s", []))
    return sum(epoch_s.values()), round(sum(epoch_s[e] * rates[e] for e in epoch_s if e in rates))


def merged_timing(parts: Sequence[Path], last: dict[str, Any] | None, history: History) -> dict[str, Any] | None:
    """The timing of a fit run in several parts (``last``: the last part's own): the training
    epochs that count (each once), and the wall time of every part up to its last epoch that
    counts, plus the whole last part. Work redone after a kill (the epoch it cut short) is not
    counted."""
    if len(parts) == 1 or last is None:
        return last
    train_s, train_images = _logged_timing(history)
    wall = []
    for part, following in zip(parts, parts[1:]):
        first_again = min(e for e, _ in read_history(following / METRICS_CSV)["val/top1"])
        elapsed = [v for e, v in read_history(part / METRICS_CSV).get("time/elapsed_s", []) if e < first_again]
        if not elapsed:
            raise ValueError(f"{part / METRICS_CSV} has no time/elapsed_s before epoch {first_again}: it cannot be timed")
        wall.append(elapsed[-1])
    wall.append(last["fit_wall_s"])
    bare = last.get("bare_step_images_per_s")
    return {
        **last,
        "fit_wall_s": sum(wall),
        "train_s": train_s,
        "train_images": train_images,
        "fit_images_per_s": train_images / sum(wall),
        "train_images_per_s": train_images / train_s,
        "train_vs_bare": train_images / train_s / bare if bare else None,
        "parts": [{"folder": str(part), "wall_s": seconds} for part, seconds in zip(parts, wall)],
    }


def _csv_timing(history: History) -> dict[str, Any] | None:
    """The timing of a fit that wrote no ``metrics.json``, from the per-epoch times it logged
    (``ThroughputMonitor``); the bare-step rate, measured at the fit's end, is unknown."""
    elapsed = dict(history.get("time/elapsed_s", []))
    if not (history.get("time/train_epoch_s") and elapsed):
        return None
    train_s, train_images = _logged_timing(history)
    wall_s = elapsed[max(elapsed)]
    return {
        "fit_wall_s": wall_s, "train_s": train_s, "train_images": train_images,
        "fit_images_per_s": train_images / wall_s, "train_images_per_s": train_images / train_s,
        "bare_step_images_per_s": None, "train_vs_bare": None,
    }  # fmt: skip


def stopped_summary(folder: Path) -> dict[str, Any]:
    """What ``metrics.json`` would hold for a fit that ended without writing it, from its
    ``config.yaml`` and ``metrics.csv``: the last validation of the epochs that finished. A fit
    killed after its last epoch, before it wrote ``metrics.json``, ran its whole schedule: it is
    not "stopped early"."""
    if not ((folder / CONFIG).is_file() and (folder / METRICS_CSV).is_file()):
        raise FileNotFoundError(f"{folder} has no {CONFIG} and {METRICS_CSV}: not the folder of a `vitlib fit` run")
    config = config_of(folder)
    logged = history(folder)
    if not logged.get("val/top1"):
        raise ValueError(f"{folder} finished no validation: nothing to record")
    last = {key: points[-1][1] for key, points in logged.items() if key.startswith("val/")}
    epochs = logged["val/top1"][-1][0] + 1
    planned = (config.get("trainer") or {}).get("max_epochs")
    data = config.get("data", {})
    quick = data.get("quick") or (data.get("quick") is None and quick_mode())
    return {
        "stage": "fit", "split": "val",
        "dataset": (DatasetId.SYNTHETIC if quick else identify_cifar100(data.get("data_dir") or default_data_dir())).label,
        "images": f"{data.get('val_split')} training images held out (seed {data.get('seed')})" if data.get("val_split") else "test set (used as the validation set)",
        "loss": last.get("val/loss"), "top1": last.get("val/top1"), "top5": last.get("val/top5"), "samples": int(last.get("val/count", 0)),
        "epoch": epochs,
        "stopped_early": None if planned is not None and epochs >= planned else f"stopped after {epochs} of {planned} epochs",
        "throughput": _csv_timing(logged),
        "config": config,
    }  # fmt: skip
