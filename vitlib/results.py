"""Results files: a finished run recorded as JSON, and the tables the book renders from them.

The book never prints a number that no run produced. A full training run (``python -m vitlib fit``
or ``test``) leaves ``runs/vitlib/version_N/metrics.json``; this module turns it into
``results/<name>.json`` with what is needed to trust and repeat it (command, commit, hardware,
date, dataset, metrics), and renders every such file (and the GPU benchmark files of
``python -m vitlib.bench`` in ``benchmarks/results/``) as Markdown tables at book-build time::

    python -m vitlib.results runs/vitlib/version_3 --name vit-reference
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from .checkpoints import CONFIG_KEY, load_checkpoint, network_state
from .config import PRESETS, ViTConfig
from .data import default_data_dir, identify_cifar100, quick_mode
from .files import write_json_atomic
from .provenance import git_commit, this_machine
from .measure import model_flops
from .model import ViT, count_parameters
from .pretrained import TIMEOUT_S, WEIGHTS_NAME, from_pretrained, save_pretrained, sha256_of

REQUIRED = ("name", "command", "commit", "hardware", "date", "dataset", "metrics")
BENCH_REQUIRED = ("gpu", "torch", "commit", "date", "rows")
HOW_TO_RUN = (
    "On a machine with a GPU and CIFAR-100, train with `python -m vitlib fit --config configs/<recipe>.yaml` "
    "(for example `configs/reference.yaml`), optionally `python -m vitlib test --config configs/<recipe>.yaml "
    "--ckpt_path runs/vitlib/version_N/checkpoints/last.ckpt`, then record the run with "
    "`python -m vitlib.results runs/vitlib/version_N --name <name>` and commit `results/<name>.json`."
)


def read_history(metrics_csv: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch values of a run's ``metrics.csv`` (Lightning's CSVLogger):
    ``{"train/loss": [(epoch, value), ...], "val/top1": [...], ..., "lr": [...]}``.

    ``lr`` is the learning rate of the last step of each epoch (the logger writes it per step,
    without an epoch number; an epoch's rows carry the step index of its last step)."""
    history: dict[str, list[tuple[int, float]]] = {}
    lr_steps: list[tuple[int, float]] = []
    epoch_ends: dict[int, int] = {}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            lr = row.get("lr-AdamW/pg1") or row.get("lr-AdamW")
            if lr and row.get("step"):
                lr_steps.append((int(row["step"]), float(lr)))
            if not row.get("epoch"):
                continue
            epoch = int(row["epoch"])
            epoch_ends[epoch] = max(epoch_ends.get(epoch, 0), int(row.get("step") or 0))
            for key, value in row.items():
                if "/" in key and not key.startswith("lr-") and value not in ("", None):
                    history.setdefault(key, []).append((epoch, float(value)))
    for epoch, end in sorted(epoch_ends.items()):
        before = [lr for step, lr in lr_steps if step <= end]
        if before:
            history.setdefault("lr", []).append((epoch, before[-1]))
    return history


def _stopped_run(run_dir: Path) -> dict[str, Any]:
    """What ``metrics.json`` would hold for a fit stopped before its end, from its ``config.yaml``
    and ``metrics.csv``: the last validation of the epochs that finished."""
    config_file, csv_file = run_dir / "config.yaml", run_dir / "metrics.csv"
    if not (config_file.is_file() and csv_file.is_file()):
        raise FileNotFoundError(f"{run_dir} has no config.yaml and metrics.csv: not the folder of a `vitlib fit` run")
    config = yaml.safe_load(config_file.read_text())
    history = read_history(csv_file)
    if not history.get("val/top1"):
        raise ValueError(f"{run_dir} finished no validation: nothing to record")
    last = {key: points[-1][1] for key, points in history.items() if key.startswith("val/")}
    epochs = history["val/top1"][-1][0] + 1
    data = config.get("data", {})
    quick = data.get("quick") or (data.get("quick") is None and quick_mode())
    return {
        "stage": "fit", "split": "val",
        "dataset": "synthetic data in the CIFAR-100 layout (quick mode)" if quick else identify_cifar100(data.get("data_dir") or default_data_dir()),
        "images": f"{data.get('val_split')} training images held out (seed {data.get('seed')})" if data.get("val_split") else "test set (used as the validation set)",
        "loss": last.get("val/loss"), "top1": last.get("val/top1"), "top5": last.get("val/top5"), "samples": int(last.get("val/count", 0)),
        "epoch": epochs,
        "stopped_early": f"stopped after {epochs} of {config.get('trainer', {}).get('max_epochs')} epochs",
        "config": config,
    }  # fmt: skip


def export_weights(run_dir: Path, folder: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The run's ``last.ckpt`` as a ``save_pretrained`` folder: ``(its folder name, sha256 and
    bytes; the model's parameters and FLOPs per image)``."""
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt} not found: the run left no last checkpoint to export")
    checkpoint = load_checkpoint(ckpt)
    model = ViT(ViTConfig.from_dict(checkpoint[CONFIG_KEY]))
    model.load_state_dict(network_state(checkpoint))
    save_pretrained(model, folder)
    return weights_entry(folder), {"parameters": count_parameters(model), "flops_per_image": model_flops(model)}


def weights_entry(folder: Path) -> dict[str, Any]:
    """The record's ``weights``: the exported folder's name and its weights file's sha256 and size."""
    weights = folder / WEIGHTS_NAME
    return {"folder": folder.name, "sha256": sha256_of(weights), "bytes": weights.stat().st_size}


def _parts(run_dir: str | Path | Sequence[str | Path]) -> list[Path]:
    """The folders of one fit, in order: the first run and each resume from its predecessor's
    checkpoint (``--ckpt_path``, which Lightning saves in the resumed run's ``config.yaml``)."""
    parts = [Path(run_dir)] if isinstance(run_dir, (str, Path)) else [Path(p) for p in run_dir]
    if not parts:
        raise ValueError("no run folder given")
    for before, after in zip(parts, parts[1:]):
        config_file = after / "config.yaml"
        ckpt = (yaml.safe_load(config_file.read_text()) or {}).get("ckpt_path") if config_file.is_file() else None
        if not ckpt or before.resolve() not in Path(ckpt).resolve().parents:
            raise ValueError(
                f"{after} was not resumed from a checkpoint of {before} (its ckpt_path is {ckpt!r}): "
                "give the folders of one fit in the order they ran"
            )
    return parts


def _merged_history(parts: Sequence[Path]) -> dict[str, list[tuple[int, float]]]:
    """The per-epoch history of a fit run in several parts: a later part's epochs replace an
    earlier part's (an epoch cut short by a kill is trained again after the resume). Refuses holes:
    a missing epoch would make the curves lie."""
    merged: dict[str, dict[int, float]] = {}
    for part in parts:
        csv_file = part / "metrics.csv"
        for key, points in (read_history(csv_file) if csv_file.is_file() else {}).items():
            merged.setdefault(key, {}).update(dict(points))
    history = {key: sorted(points.items()) for key, points in merged.items()}
    for key in ("val/top1", "train/top1"):
        epochs = [epoch for epoch, _ in history.get(key, [])]
        missing = sorted(set(range(max(epochs, default=-1) + 1)) - set(epochs))
        if missing:
            raise ValueError(
                f"{key} has no row for epoch(s) {missing} in {', '.join(map(str, parts))}: a part of the run is "
                "missing (give every folder of the fit, in order) or its metrics.csv lost rows"
            )
    return history


def _merged_throughput(parts: Sequence[Path], last: dict[str, Any] | None, history: dict[str, list[tuple[int, float]]]) -> dict[str, Any] | None:
    """The timing of a fit run in several parts: the training epochs that count (each once), and
    the wall time of every part up to its last epoch that counts, plus the whole last part. Work
    redone after a kill (the epoch it cut short) is not counted."""
    if len(parts) == 1 or last is None:
        return last
    epoch_s = dict(history.get("time/train_epoch_s", []))
    rates = dict(history.get("time/train_images_per_s", []))
    train_s = sum(epoch_s.values())
    train_images = round(sum(epoch_s[e] * rates[e] for e in epoch_s if e in rates))
    wall = []
    for part, following in zip(parts, parts[1:]):
        first_again = min(e for e, _ in read_history(following / "metrics.csv")["val/top1"])
        elapsed = [v for e, v in read_history(part / "metrics.csv").get("time/elapsed_s", []) if e < first_again]
        if not elapsed:
            raise ValueError(f"{part}/metrics.csv has no time/elapsed_s before epoch {first_again}: it cannot be timed")
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


def record_run(
    run_dir: str | Path | Sequence[str | Path],
    name: str,
    out_dir: str | Path = "results",
    command: str | None = None,
    hardware: str | None = None,
    weights: bool = True,
    unfinished: bool = False,
    note: str | None = None,
    exporter: Callable[[Path, Path], tuple[dict[str, Any], dict[str, int]]] | None = None,
) -> Path:
    """Write ``out_dir/<name>.json`` from a finished run's ``metrics.json``; returns its path.

    ``run_dir`` is the run's folder, or the folders of a fit that was interrupted and resumed
    (``--ckpt_path`` of the previous part's ``last.ckpt``), in the order they ran: the record then
    holds the whole history (each epoch once) and the time summed over the parts, and its metrics
    and weights are those of the last part.

    ``unfinished=True`` also records a fit that was stopped before its end (no ``metrics.json``):
    its metrics are the last validation in ``metrics.csv`` and the record says how many of the
    planned epochs ran.

    The record holds the provenance, the final metrics, the per-epoch history (from the run's
    ``metrics.csv``), the timing of ``ThroughputMonitor`` and, with ``weights``, the last
    checkpoint's weights exported to ``out_dir/<name>/`` by ``save_pretrained`` (config.json +
    model.safetensors, with their sha256 in the record) for ``from_pretrained``, and the model's
    size (parameters, FLOPs per image); ``exporter`` replaces :func:`export_weights` for other models.

    Record right after the run, on the machine that ran it: the commit and hardware are read from
    the checkout and machine at hand (``hardware`` overrides the latter). The default command
    repeats the run exactly from the ``config.yaml`` that Lightning saved with it. Runs on
    synthetic data (quick mode) are refused: they are demonstrations, not results.
    """
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"name must be a plain file name without slashes; got {name!r}")
    payload = run_record(run_dir, name, command, hardware, unfinished, note)
    if "quick mode" in payload["dataset"]:
        raise ValueError(f"{_parts(run_dir)[-1]} trained on {payload['dataset']}: a quick-mode run is not a result. {HOW_TO_RUN}")
    if weights:
        # A model other than the ViT (the CNN baseline) brings its own exporter.
        payload["weights"], payload["size"] = (exporter or export_weights)(_parts(run_dir)[-1], Path(out_dir) / name)
    path = Path(out_dir) / f"{name}.json"
    write_json_atomic(path, payload)
    return path


def run_record(
    run_dir: str | Path | Sequence[str | Path],
    name: str,
    command: str | None = None,
    hardware: str | None = None,
    unfinished: bool = False,
    note: str | None = None,
) -> dict[str, Any]:
    """What :func:`record_run` writes, without the weights: provenance, metrics, config, timing
    and history of the run in ``run_dir`` (one folder, or the parts of a resumed fit)."""
    parts = _parts(run_dir)
    run_dir = parts[-1]
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file() and not unfinished:
        raise FileNotFoundError(
            f"{metrics_file} not found: pass the folder of a finished run (runs/vitlib/version_N), "
            "written by `python -m vitlib fit` or `test` (or record a stopped one with unfinished=True)"
        )
    if metrics_file.is_file():
        run = json.loads(metrics_file.read_text())
    else:
        run = _stopped_run(run_dir)
        metrics_file = run_dir / "metrics.csv"
    dataset = run.get("dataset", "unknown")
    finished = datetime.fromtimestamp(metrics_file.stat().st_mtime, tz=timezone.utc)
    config = run.get("config", {})
    history = _merged_history(parts)
    throughput = _merged_throughput(parts, run.get("throughput"), history)
    first_config = run_dir if len(parts) == 1 else parts[0]
    payload = {
        "name": name,
        "command": command or f"python -m vitlib {run.get('stage', 'fit')} --config {first_config / 'config.yaml'}",
        # The checkout recording it (run folders usually live outside one, e.g. under /tmp).
        "commit": git_commit(Path.cwd()),
        "hardware": hardware or this_machine(),
        "date": finished.isoformat(timespec="seconds"),
        "dataset": dataset,
        "images": run.get("images", "unknown"),
        "stage": run.get("stage"),
        "split": run.get("split"),
        "metrics": {key: run[key] for key in ("loss", "top1", "top5", "samples", "epoch", "global_step") if key in run},
        # After fit, Lightning's epoch counter stands at the number of epochs trained.
        "epochs": run.get("epoch") if run.get("stage") == "fit" else None,
        "model": config.get("model", {}),
        "trainer": {key: config.get("trainer", {}).get(key) for key in ("max_epochs", "precision", "devices")},
        "data": config.get("data", {}),
        "throughput": throughput,
        # A resumed run's timing covers only its own part (unless all its parts are recorded
        # together: then "resumes" counts them); a stopped one did not finish its schedule.
        "resumed_from": (run.get("throughput") or {}).get("resumed_from") if len(parts) == 1 else None,
        "resumes": len(parts) - 1,
        "stopped_early": run.get("stopped_early"),
        "note": note,
        "history": history,
    }
    return payload


# The book's repository (the same as _config.yml's repository.url, which the launch buttons use;
# a test keeps them equal), and where a checkout-less reader (Colab) finds its committed records
# and weights.
REPOSITORY_URL = "https://github.com/vitlib/vit-cifar100-book"
RECORDS_URL = f"{REPOSITORY_URL.replace('https://github.com/', 'https://raw.githubusercontent.com/')}/main/results/"
# A copy of the results folder served elsewhere (a mirror, a machine without internet access).
RECORDS_ENV = "VITLIB_RECORDS_URL"


def records_url() -> str | None:
    """Where a chapter without a checkout fetches the records: ``$VITLIB_RECORDS_URL``, else
    :data:`RECORDS_URL`; always ending in ``/``."""
    url = os.environ.get(RECORDS_ENV, "").strip() or RECORDS_URL
    return url if url is None or url.endswith("/") else f"{url}/"


@dataclass(frozen=True)
class RecordedRun:
    """A recorded run: its results file and where its weights are (a folder or a URL)."""

    record: dict[str, Any]
    weights_location: str

    @property
    def name(self) -> str:
        return self.record["name"]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.record["metrics"]

    @property
    def history(self) -> dict[str, list[tuple[int, float]]]:
        return {key: [(int(e), float(v)) for e, v in points] for key, points in self.record.get("history", {}).items()}

    def model(self) -> ViT:
        """The recorded weights as a :class:`~vitlib.ViT` in eval mode (sha256-checked)."""
        sha256 = self.record.get("weights", {}).get("sha256")
        return from_pretrained(self.weights_location, sha256=sha256).eval()

    def describe(self) -> str:
        """One line of provenance for a caption: run, epochs, hardware, data, commit, date."""
        r = self.record
        what = "your run (trained in this runtime)" if r.get("trained_here") else f"recorded run '{r['name']}'"
        return (
            f"{what}: {r.get('epochs') or '?'} epochs on {r['hardware']}, {r['dataset']}, "
            f"commit {str(r['commit'])[:10]}, {str(r['date'])[:10]}"
        )


def load_record(name: str, folder: str | Path | None = "results", url: str | None = RECORDS_URL) -> RecordedRun | None:
    """The recorded run ``name``: ``folder/<name>.json`` with its weights in ``folder/<name>/``,
    else the same files under ``url`` (e.g. on Colab, without a checkout); ``None`` when neither
    has it."""
    if folder is not None and (Path(folder) / f"{name}.json").is_file():
        record = json.loads((Path(folder) / f"{name}.json").read_text())
        return RecordedRun(record, str(Path(folder) / name))
    if url is None:
        return None
    try:
        with urllib.request.urlopen(f"{url}{name}.json", timeout=TIMEOUT_S) as response:
            record = json.loads(response.read())
    except (urllib.error.URLError, OSError, http.client.HTTPException, json.JSONDecodeError):
        return None
    return RecordedRun(record, f"{url}{name}/")


def recipe_row(record: dict[str, Any]) -> dict[str, Any]:
    """The recipe of a recorded run as one table row: model, optimizer, schedule, batch, epochs,
    augmentation, read from the config it ran with."""
    model, data = record.get("model", {}), record.get("data", {})
    if "depth" in model and "preset" not in model:  # the CNN baseline (vitlib.baseline.ResNetModule)
        arch = {"heads": "-", "mlp_ratio": "-", "drop_path": "-"}
        description = f"ResNet-{model['depth']} (CNN)"
    else:
        arch = {**dataclasses.asdict(PRESETS[model.get("preset", "vit")]), **(model.get("overrides") or {})}
        description = f"{arch['stem']} stem, {arch['attention']}, {arch['dim']} x {arch['depth']}, patch {arch['patch_size']}, {arch['pool']} pool"
    schedule, optimizer = model.get("schedule") or {}, model.get("optimizer") or {}
    augment, mix = data.get("augment"), data.get("mix")
    if schedule.get("name") == "cyclic":
        shape = f"triangular cyclic {schedule.get('base_lr')} to {schedule.get('max_lr')}, half cycle {schedule.get('half_cycle_epochs')} epochs"
    else:
        shape = f"{schedule.get('name')}: warm-up {schedule.get('warmup_epochs')} epochs to {schedule.get('max_lr')}, down to {schedule.get('min_lr')}"
    return {
        "run": record["name"],
        "model": description,
        "heads": arch["heads"],
        "MLP ratio": arch["mlp_ratio"],
        "optimizer": f"AdamW, weight decay {optimizer.get('weight_decay', 0.05)}",
        "label smoothing": model.get("label_smoothing"),
        "stochastic depth": arch["drop_path"],
        "batch": data.get("batch_size"),
        "epochs": record.get("epochs"),
        "schedule": shape,
        "augmentation": _augmentation(augment, mix),
    }


def _load_folder(folder: str | Path, required: Sequence[str]) -> list[dict[str, Any]]:
    files = sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else []
    records = []
    for file in files:
        try:
            record = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{file} is not valid JSON ({err}); fix or delete it") from err
        missing = [key for key in required if key not in record]
        if missing:
            raise ValueError(f"{file} lacks {', '.join(missing)}; rewrite it with the tool that made it")
        records.append({**record, "file": file.name})
    return sorted(records, key=lambda r: str(r["date"]))


def load_results(folder: str | Path = "results") -> list[dict[str, Any]]:
    """Every results file in ``folder``, oldest first (none when the folder does not exist)."""
    return _load_folder(folder, REQUIRED)


def load_benchmarks(folder: str | Path = "benchmarks/results") -> list[dict[str, Any]]:
    """Every benchmark file of ``python -m vitlib.bench`` in ``folder``, oldest first."""
    return _load_folder(folder, BENCH_REQUIRED)


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


def accuracy_table(folder: str | Path = "results") -> str:
    """Markdown: one row per recorded run, or a plain statement that none is recorded and how to
    make one."""
    results = load_results(folder)
    if not results:
        return f"**No full training run is recorded yet**, so this book reports no accuracy. {HOW_TO_RUN}"
    rows = [
        {
            "run": r["name"],
            "model": recipe_row(r)["model"] if r.get("model") else "?",
            "split": r.get("split", "?"),
            "top-1": _percent(r["metrics"].get("top1")),
            "top-5": _percent(r["metrics"].get("top5")),
            "loss": r["metrics"].get("loss"),
            "epochs": r.get("epochs") or "?",
            "dataset": r["dataset"],
            "hardware": r["hardware"],
            "date": str(r["date"])[:10],
            "commit": str(r["commit"])[:10],
        }
        for r in results
    ]
    commands = [f"- **{r['name']}**: `{r['command']}`" for r in results]
    return markdown_table(rows) + "\n\n" + details("The command that re-creates each run", commands)


def details(summary: str, lines: Sequence[str]) -> str:
    """Markdown inside a collapsed ``<details>`` block: long provenance (commands, notes) under a
    table instead of in its cells, where it would make every row tall."""
    return f"<details>\n<summary>{summary}</summary>\n\n" + "\n".join(lines) + "\n\n</details>"


# Published results the book compares with (CIFAR-100 from scratch), cited on the results page.
REFERENCE_RESULTS = (
    {"result": "reference Lightning notebook (reshalfahsi)", "top-1": "64.92 %", "setting": "ViT of 52.6 M parameters, 100 epochs, T4 GPU, about 3 hours, official CIFAR-100; the checkpoint reported was picked on the test set"},
    {"result": "Keras example: Train a ViT on small datasets (Gosthipaty)", "top-1": "56.1 %", "setting": "SPT + LSA, 50 epochs, images resized to 72x72, GPU, official CIFAR-100"},
)  # fmt: skip


def throughput_table(folder: str | Path = "results") -> str:
    """Markdown: wall time and images/s of every recorded run that measured them (the whole
    ``fit``, its training epochs, and the bare step of the same model in the same process)."""
    rows = []
    for r in load_results(folder):
        t = r.get("throughput") or {}
        if not t.get("fit_wall_s"):
            continue
        rows.append({
            "run": r["name"],
            "hardware": r["hardware"],
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
    notes = [f"- {r['name']}: {r['note']}" for r in load_results(folder) if r.get("note") and (r.get("throughput") or {}).get("fit_wall_s")]
    return markdown_table(rows) + ("\n\n" + details("Notes recorded with the runs", notes) if notes else "")


def bare_step_table(folder: str | Path = "results/speed") -> str:
    """Markdown: each bare-step comparison of ``python -m vitlib.throughput --out`` in ``folder``
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
    """The files of ``python -m vitlib.throughput --out`` in ``folder``: those of ``--fit`` or of ``--model``."""
    files = sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else []
    payloads = [(file, json.loads(file.read_text())) for file in files]
    return [(file, payload) for file, payload in payloads if (payload.get("kind") == "fit") == fit]


def _augmentation(augment: dict[str, Any] | None, mix: dict[str, Any] | None) -> str:
    steps = [] if not augment else [f"crop (pad {augment.get('crop_padding')})"] * bool(augment.get("crop_padding"))
    steps += ["flip"] * bool(augment and augment.get("flip"))
    if augment and augment.get("randaugment"):
        steps.append(f"RandAugment N={augment.get('randaugment_ops')} M={augment.get('randaugment_magnitude')}")
    if mix:
        steps.append(f"CutMix/MixUp p={mix.get('prob')}")
    return ", ".join(steps) or "none"


def fit_speed_table(folder: str | Path = "results/speed") -> str:
    """Markdown: each comparison of ``python -m vitlib.throughput --fit --out`` in ``folder`` as a
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
        arch = {**dataclasses.asdict(PRESETS[r["model"].get("preset", "vit")]), **(r["model"].get("overrides") or {})}
        history = {k: [(int(e), float(v)) for e, v in pts] for k, pts in r.get("history", {}).items()}
        rows.append({
            "run": r["name"],
            "model": f"{arch['stem']} stem, {arch['dim']} x {arch['depth']}, {arch['heads']} heads",
            "schedule": f"{(r['model'].get('schedule') or {}).get('name')}, {r['trainer'].get('max_epochs')} epochs, max LR {(r['model'].get('schedule') or {}).get('max_lr')}",
            "held-out top-1 by epoch": " → ".join(f"{100 * v:.1f} %" for _, v in history.get("val/top1", [])),
            "note": r.get("stopped_early") or "",
            "split": r.get("images", "?"),
        })  # fmt: skip
    return markdown_table(rows)


def benchmark_table(folder: str | Path = "benchmarks/results") -> str:
    """Markdown: one row per benchmarked configuration, or a statement that none is recorded."""
    benches = load_benchmarks(folder)
    if not benches:
        return (
            "**No GPU benchmark is recorded yet.** On a machine with a GPU run `python -m vitlib.bench`; "
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vitlib.results", description="Record a finished run as results/<name>.json."
    )
    parser.add_argument(
        "run_dir", nargs="+",
        help="the run's folder, e.g. runs/vitlib/version_3 (holds metrics.json); for a fit that was resumed, "
        "all its folders in the order they ran",
    )  # fmt: skip
    parser.add_argument("--name", required=True, help="the results file's name, e.g. vit-reference")
    parser.add_argument("--out", default="results", help="folder for the results file (default: results)")
    parser.add_argument("--command", help="the command that ran it (default: repeat it from its config.yaml)")
    parser.add_argument("--hardware", help="the machine that ran it (default: this machine's GPUs or CPU)")
    parser.add_argument("--no-weights", action="store_true", help="do not export the last checkpoint's weights")
    parser.add_argument("--unfinished", action="store_true", help="record a fit stopped before its end (no metrics.json)")
    parser.add_argument("--note", help="anything else a reader of the record should know (e.g. the command's own wall time)")
    args = parser.parse_args(argv)
    try:
        path = record_run(args.run_dir, args.name, args.out, args.command, args.hardware, weights=not args.no_weights, unfinished=args.unfinished, note=args.note)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"vitlib.results: error: {err}\n")
    print(f"recorded {path}")


if __name__ == "__main__":
    main()
