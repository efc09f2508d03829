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
import http.client
import json
import os
import platform
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .checkpoints import CONFIG_KEY, load_checkpoint
from .config import ViTConfig
from .files import write_json_atomic
from .model import ViT
from .pretrained import TIMEOUT_S, WEIGHTS_NAME, from_pretrained, save_pretrained, sha256_of

REQUIRED = ("name", "command", "commit", "hardware", "date", "dataset", "metrics")
BENCH_REQUIRED = ("gpu", "torch", "commit", "date", "rows")
HOW_TO_RUN = (
    "On a machine with a GPU and CIFAR-100, train with `python -m vitlib fit --config configs/<recipe>.yaml` "
    "(for example `configs/reference.yaml`), optionally `python -m vitlib test --config configs/<recipe>.yaml "
    "--ckpt_path runs/vitlib/version_N/checkpoints/last.ckpt`, then record the run with "
    "`python -m vitlib.results runs/vitlib/version_N --name <name>` and commit `results/<name>.json`."
)


def _git_commit(folder: Path) -> str:
    """The checked-out commit, with ``-dirty`` when tracked files have uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + ("-dirty" if dirty else "")


def this_machine() -> str:
    """The GPUs of this machine (count and name), else its CPU."""
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"{len(names)} x {names[0]}" if len(set(names)) == 1 else ", ".join(names)
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


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


def _export_weights(run_dir: Path, folder: Path) -> dict[str, Any]:
    """The run's ``last.ckpt`` as a ``save_pretrained`` folder; its file names and sha256."""
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt} not found: the run left no last checkpoint to export")
    checkpoint = load_checkpoint(ckpt)
    model = ViT(ViTConfig.from_dict(checkpoint[CONFIG_KEY]))
    prefix = "model."
    model.load_state_dict({k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)})
    save_pretrained(model, folder)
    weights = folder / WEIGHTS_NAME
    return {"folder": folder.name, "sha256": sha256_of(weights), "bytes": weights.stat().st_size}


def record_run(
    run_dir: str | Path,
    name: str,
    out_dir: str | Path = "results",
    command: str | None = None,
    hardware: str | None = None,
    weights: bool = True,
) -> Path:
    """Write ``out_dir/<name>.json`` from a finished run's ``metrics.json``; returns its path.

    The record holds the provenance, the final metrics, the per-epoch history (from the run's
    ``metrics.csv``), the timing of ``ThroughputMonitor`` and, with ``weights``, the last
    checkpoint's weights exported to ``out_dir/<name>/`` by ``save_pretrained`` (config.json +
    model.safetensors, with their sha256 in the record) for ``from_pretrained``.

    Record right after the run, on the machine that ran it: the commit and hardware are read from
    the checkout and machine at hand (``hardware`` overrides the latter). The default command
    repeats the run exactly from the ``config.yaml`` that Lightning saved with it. Runs on
    synthetic data (quick mode) are refused: they are demonstrations, not results.
    """
    run_dir = Path(run_dir)
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        raise FileNotFoundError(
            f"{metrics_file} not found: pass the folder of a finished run (runs/vitlib/version_N), "
            "written by `python -m vitlib fit` or `test`"
        )
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"name must be a plain file name without slashes; got {name!r}")
    run = json.loads(metrics_file.read_text())
    dataset = run.get("dataset", "unknown")
    if "quick mode" in dataset:
        raise ValueError(
            f"{run_dir} trained on {dataset}: a quick-mode run is not a result. {HOW_TO_RUN}"
        )
    finished = datetime.fromtimestamp(metrics_file.stat().st_mtime, tz=timezone.utc)
    config = run.get("config", {})
    payload = {
        "name": name,
        "command": command or f"python -m vitlib {run.get('stage', 'fit')} --config {run_dir / 'config.yaml'}",
        "commit": _git_commit(run_dir.resolve()),
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
        "throughput": run.get("throughput"),
        "history": read_history(run_dir / "metrics.csv") if (run_dir / "metrics.csv").is_file() else {},
    }
    if weights:
        payload["weights"] = _export_weights(run_dir, Path(out_dir) / name)
    path = Path(out_dir) / f"{name}.json"
    write_json_atomic(path, payload)
    return path


# Where a checkout-less reader (Colab) finds the committed records and weights.
RECORDS_URL = "https://raw.githubusercontent.com/vitlib/vit-cifar100-book/main/results/"


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
        return (
            f"recorded run '{r['name']}': {r.get('epochs') or '?'} epochs on {r['hardware']}, {r['dataset']}, "
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
            "model": r.get("model", {}).get("preset", "?"),
            "split": r.get("split", "?"),
            "top-1": _percent(r["metrics"].get("top1")),
            "top-5": _percent(r["metrics"].get("top5")),
            "loss": r["metrics"].get("loss"),
            "epochs": r.get("epochs") or "?",
            "dataset": r["dataset"],
            "hardware": r["hardware"],
            "date": str(r["date"])[:10],
            "commit": str(r["commit"])[:10],
            "command": f"`{r['command']}`",
        }
        for r in results
    ]
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
    parser.add_argument("run_dir", help="the run's folder, e.g. runs/vitlib/version_3 (holds metrics.json)")
    parser.add_argument("--name", required=True, help="the results file's name, e.g. vit-reference")
    parser.add_argument("--out", default="results", help="folder for the results file (default: results)")
    parser.add_argument("--command", help="the command that ran it (default: repeat it from its config.yaml)")
    parser.add_argument("--hardware", help="the machine that ran it (default: this machine's GPUs or CPU)")
    parser.add_argument("--no-weights", action="store_true", help="do not export the last checkpoint's weights")
    args = parser.parse_args(argv)
    try:
        path = record_run(args.run_dir, args.name, args.out, args.command, args.hardware, weights=not args.no_weights)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"vitlib.results: error: {err}\n")
    print(f"recorded {path}")


if __name__ == "__main__":
    main()
