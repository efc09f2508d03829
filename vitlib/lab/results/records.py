"""Results files: a finished run recorded as JSON with its weights, and read back.

The book never prints a number that no run produced. A full training run (``python -m vitlib fit``
or ``test``) leaves ``runs/vitlib/version_N/metrics.json``; this module turns it into
``results/<name>.json`` with what is needed to trust and repeat it (command, commit, hardware,
date, dataset, metrics, history, weights)::

    python -m vitlib.lab.results.records runs/vitlib/version_3 --name vit-reference

Every record is read and written through :class:`Record`, the one definition of the file's
format; :mod:`vitlib.lab.results.tables` renders the records as the book's tables.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ...config import ViTConfig
from ...measure import model_flops
from ...model import ViT, count_parameters
from ...support.checkpoints import CONFIG_KEY, load_checkpoint, network_state
from ...support.cifar import DatasetId
from ...support.files import write_json_atomic
from ...support.pretrained import TIMEOUT_S, WEIGHTS_NAME, from_pretrained, save_pretrained, sha256_of
from ...support.provenance import git_commit, this_machine
from ...support.run_folder import (
    CONFIG,
    METRICS_CSV,
    METRICS_JSON,
    History,
    check_parts,
    final_metrics,
    last_checkpoint,
    merged_history,
    merged_timing,
    stopped_summary,
)

REQUIRED = ("name", "command", "commit", "hardware", "date", "dataset", "metrics")


# The results file's format: 1, a file without a ``schema`` field (``resumes`` and ``ran`` may be
# missing); 2, ``schema`` and every field present.
SCHEMA = 2


@dataclass(frozen=True)
class Metrics:
    """A run's final numbers: top-1 and top-5 as fractions and the mean loss over ``samples``
    images; ``epoch`` and ``global_step`` where the run ended."""

    top1: float | None = None
    top5: float | None = None
    loss: float | None = None
    samples: int | None = None
    epoch: int | None = None
    global_step: int | None = None


@dataclass(frozen=True)
class Record:
    """A results file (``results/<name>.json``), typed: what ran, on what, with which result.

    :meth:`from_json` reads every format written so far (:data:`SCHEMA`) and refuses a file with
    a field it does not know, so that a new field is added here first; :meth:`to_json` writes the
    current format. ``model``, ``data`` and ``trainer`` are the run's configuration as it ran,
    ``throughput`` its timing (``ThroughputMonitor``), ``history`` its per-epoch curves."""

    name: str
    command: str
    commit: str
    hardware: str
    date: str
    dataset: DatasetId
    metrics: Metrics
    images: str = "unknown"
    stage: str | None = None
    split: str | None = None
    epochs: int | None = None  # of a fit: the epochs it trained
    model: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    ran: dict[str, Any] | None = None  # precision, compile, float32 matmul precision that really ran
    data: dict[str, Any] = field(default_factory=dict)
    throughput: dict[str, Any] | None = None
    resumed_from: str | None = None
    resumes: int = 0
    stopped_early: str | None = None  # "stopped after 23 of 100 epochs"
    note: str | None = None
    history: History = field(default_factory=dict)
    weights: dict[str, Any] | None = None  # the exported folder's name, sha256 and bytes
    size: dict[str, Any] | None = None  # parameters, FLOPs per image
    trained_here: bool = False  # the reader's own run, not a committed record
    schema: int = field(default=SCHEMA, compare=False)  # the format it was read from
    file: str | None = field(default=None, compare=False)  # the file it was read from

    @classmethod
    def from_json(cls, payload: dict[str, Any], file: str | None = None) -> Record:
        where = file or payload.get("name", "a record")
        missing = [key for key in REQUIRED if key not in payload]
        unknown = sorted(set(payload) - {f.name for f in fields(cls)} - {"file"})
        if missing or unknown:
            said = [f"lacks {', '.join(missing)}"] * bool(missing) + [f"has unknown field(s) {', '.join(unknown)}"] * bool(unknown)
            raise ValueError(f"{where} {' and '.join(said)}; rewrite it with the tool that made it, or add the field to Record")
        schema = payload.get("schema", 1)
        if schema > SCHEMA:
            raise ValueError(f"{where} is a results file of format {schema}; this vitlib reads up to {SCHEMA}: update vitlib")
        history = {key: [(int(e), float(v)) for e, v in points] for key, points in (payload.get("history") or {}).items()}
        values = {**payload, "schema": schema, "file": file, "history": history}
        values["dataset"] = DatasetId.of(payload["dataset"])
        unknown = sorted(set(payload["metrics"]) - {f.name for f in fields(Metrics)})
        if unknown:
            raise ValueError(f"{where}'s metrics have unknown field(s) {', '.join(unknown)}; add them to Metrics")
        values["metrics"] = Metrics(**payload["metrics"])
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        payload = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "file"}
        metrics = {key: value for key, value in asdict(self.metrics).items() if value is not None}
        payload.update(schema=SCHEMA, dataset=self.dataset.label, metrics=metrics)
        return payload

    @property
    def planned_epochs(self) -> int | None:
        return self.trainer.get("max_epochs")


BENCH_REQUIRED = ("gpu", "torch", "commit", "date", "rows")


HOW_TO_RUN = (
    "On a machine with a GPU and CIFAR-100, train with `python -m vitlib fit --config configs/<recipe>.yaml` "
    "(for example `configs/reference.yaml`), optionally `python -m vitlib test --config configs/<recipe>.yaml "
    "--ckpt_path runs/vitlib/version_N/checkpoints/last.ckpt`, then record the run with "
    "`python -m vitlib.lab.results.records runs/vitlib/version_N --name <name>` and commit `results/<name>.json`."
)


def export_weights(run_dir: Path, folder: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The run's ``last.ckpt`` as a ``save_pretrained`` folder: ``(its folder name, sha256 and
    bytes; the model's parameters and FLOPs per image)``."""
    ckpt = last_checkpoint(run_dir)
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt} not found: the run left no last checkpoint to export")
    checkpoint = load_checkpoint(ckpt)
    model = ViT(ViTConfig.from_dict(checkpoint[CONFIG_KEY]))
    model.load_state_dict(network_state(checkpoint))
    save_pretrained(model, folder)
    # Forward FLOPs: a benchmark's row counts forward + backward, as training_flops_per_image.
    return weights_entry(folder), {"parameters": count_parameters(model), "flops_per_image": model_flops(model)}


def weights_entry(folder: Path) -> dict[str, Any]:
    """The record's ``weights``: the exported folder's name and its weights file's sha256 and size."""
    weights = folder / WEIGHTS_NAME
    return {"folder": folder.name, "sha256": sha256_of(weights), "bytes": weights.stat().st_size}


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
    commit: str | None = None,
) -> Path:
    """Write ``out_dir/<name>.json`` from a finished run's ``metrics.json``; returns its path.

    ``run_dir`` is the run's folder, or the folders of a fit that was interrupted and resumed
    (``--ckpt_path`` of the previous part's ``last.ckpt``), in the order they ran: the record then
    holds the whole history (each epoch once) and the time summed over the parts, and its metrics
    and weights are those of the last part.

    ``unfinished=True`` also records a fit that ended without writing ``metrics.json`` (stopped
    before its end, or killed after its last epoch): its metrics are the last validation in
    ``metrics.csv``, its timing the epochs' logged times, and the record says how many of the
    planned epochs ran when that is fewer than all.

    The record holds the provenance, the final metrics, the per-epoch history (from the run's
    ``metrics.csv``), the timing of ``ThroughputMonitor`` and, with ``weights``, the last
    checkpoint's weights exported to ``out_dir/<name>/`` by ``save_pretrained`` (config.json +
    model.safetensors, with their sha256 in the record) for ``from_pretrained``, and the model's
    size (parameters, FLOPs per image); ``exporter`` replaces :func:`export_weights` for other models.

    Record right after the run, on the machine that ran it: the commit and hardware are read from
    the checkout and machine at hand (``commit`` and ``hardware`` override them, e.g. for a copy of
    the tree without .git that knows its commit from elsewhere). The default command
    repeats the run exactly from the ``config.yaml`` that Lightning saved with it. Runs on
    synthetic data (quick mode) are refused: they are demonstrations, not results.
    """
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"name must be a plain file name without slashes; got {name!r}")
    record = run_record(run_dir, name, command, hardware, unfinished, note, commit)
    last = check_parts(run_dir)[-1]
    if not record.dataset.real:
        raise ValueError(f"{last} trained on {record.dataset.label}: a quick-mode run is not a result. {HOW_TO_RUN}")
    if weights:
        _check_weights_are_the_last_epochs(last, record)
        # A model other than the ViT (the CNN baseline) brings its own exporter.
        exported, size = (exporter or export_weights)(last, Path(out_dir) / name)
        record = replace(record, weights=exported, size=size)
    path = Path(out_dir) / f"{name}.json"
    write_json_atomic(path, record.to_json())
    return path


def _check_weights_are_the_last_epochs(run_dir: Path, record: Record) -> None:
    """A fit's record pairs the metrics of its last epoch with the weights of ``last.ckpt``: refuse
    to write one whose checkpoint holds another epoch (written before ``last.ckpt`` was saved at
    every epoch's end, it may lag behind ``metrics.csv``)."""
    ckpt = last_checkpoint(run_dir)
    if record.stage != "fit" or not record.epochs or not ckpt.is_file():
        return
    saved = load_checkpoint(ckpt).get("epoch")
    if saved is not None and saved + 1 != record.epochs:
        raise ValueError(
            f"{ckpt} holds the weights after epoch {saved + 1} of the fit, its metrics go to epoch {record.epochs}: "
            "they would not be the weights of the recorded metrics. Resume the fit from that checkpoint, so that it "
            "trains the epochs again and writes last.ckpt at each epoch's end, then record it"
        )


def run_record(
    run_dir: str | Path | Sequence[str | Path],
    name: str,
    command: str | None = None,
    hardware: str | None = None,
    unfinished: bool = False,
    note: str | None = None,
    commit: str | None = None,
) -> Record:
    """What :func:`record_run` writes, without the weights: provenance, metrics, config, timing
    and history of the run in ``run_dir`` (one folder, or the parts of a resumed fit)."""
    parts = check_parts(run_dir)
    run_dir = parts[-1]
    metrics_file = run_dir / METRICS_JSON
    run = final_metrics(run_dir)
    if run is None and not unfinished:
        raise FileNotFoundError(
            f"{metrics_file} not found: pass the folder of a finished run (runs/vitlib/version_N), "
            "written by `python -m vitlib fit` or `test` (or record a stopped one with unfinished=True)"
        )
    if run is None:
        run = stopped_summary(run_dir)
        metrics_file = run_dir / METRICS_CSV
    finished = datetime.fromtimestamp(metrics_file.stat().st_mtime, tz=timezone.utc)
    config = run.get("config", {})
    history = merged_history(parts)
    throughput = merged_timing(parts, run.get("throughput"), history)
    first_config = run_dir if len(parts) == 1 else parts[0]
    payload = {
        "name": name,
        "command": command or f"python -m vitlib {run.get('stage', 'fit')} --config {first_config / CONFIG}",
        # The checkout recording it (run folders usually live outside one, e.g. under /tmp).
        "commit": commit or git_commit(Path.cwd()),
        "hardware": hardware or this_machine(),
        "date": finished.isoformat(timespec="seconds"),
        "dataset": run.get("dataset", DatasetId.UNVERIFIED.label),
        "images": run.get("images", "unknown"),
        "stage": run.get("stage"),
        "split": run.get("split"),
        "metrics": {key: run[key] for key in ("loss", "top1", "top5", "samples", "epoch", "global_step") if key in run},
        # After fit, Lightning's epoch counter stands at the number of epochs trained.
        "epochs": run.get("epoch") if run.get("stage") == "fit" else None,
        "model": config.get("model", {}),
        "trainer": {key: config.get("trainer", {}).get(key) for key in ("max_epochs", "precision", "devices")},
        # The precision, compile (or eager) and float32 matmul precision that really ran; None for
        # runs recorded before metrics.json held them.
        "ran": run.get("ran"),
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
    return Record.from_json(payload)


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

    record: Record
    weights_location: str

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def metrics(self) -> Metrics:
        return self.record.metrics

    @property
    def history(self) -> History:
        return self.record.history

    def model(self) -> ViT:
        """The recorded weights as a :class:`~vitlib.ViT` in eval mode (sha256-checked)."""
        sha256 = (self.record.weights or {}).get("sha256")
        return from_pretrained(self.weights_location, sha256=sha256).eval()

    def describe(self) -> str:
        """One line of provenance for a caption: run, epochs, hardware, data, commit, date."""
        r = self.record
        what = "your run (trained in this runtime)" if r.trained_here else f"recorded run '{r.name}'"
        return f"{what}: {r.epochs or '?'} epochs on {r.hardware}, {r.dataset.label}, commit {r.commit[:10]}, {r.date[:10]}"


def load_record(name: str, folder: str | Path | None = "results", url: str | None = RECORDS_URL) -> RecordedRun | None:
    """The recorded run ``name``: ``folder/<name>.json`` with its weights in ``folder/<name>/``,
    else the same files under ``url`` (e.g. on Colab, without a checkout); ``None`` when neither
    has it."""
    file = Path(folder) / f"{name}.json" if folder is not None else None
    if file is not None and file.is_file():
        return RecordedRun(Record.from_json(json.loads(file.read_text()), file.name), str(Path(folder) / name))
    if url is None:
        return None
    try:
        with urllib.request.urlopen(f"{url}{name}.json", timeout=TIMEOUT_S) as response:
            payload = json.loads(response.read())
    except (urllib.error.URLError, OSError, http.client.HTTPException, json.JSONDecodeError):
        return None
    return RecordedRun(Record.from_json(payload, f"{name}.json"), f"{url}{name}/")


def _load_folder(folder: str | Path, required: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """``(file name, contents)`` of every JSON file in ``folder``, checked for ``required`` keys."""
    files = sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else []
    loaded = []
    for file in files:
        try:
            payload = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{file} is not valid JSON ({err}); fix or delete it") from err
        missing = [key for key in required if key not in payload]
        if missing:
            raise ValueError(f"{file} lacks {', '.join(missing)}; rewrite it with the tool that made it")
        loaded.append((file.name, payload))
    return loaded


def load_results(folder: str | Path = "results") -> list[Record]:
    """Every results file in ``folder``, oldest first (none when the folder does not exist)."""
    records = [Record.from_json(payload, name) for name, payload in _load_folder(folder, REQUIRED)]
    return sorted(records, key=lambda r: r.date)


def load_benchmarks(folder: str | Path = "benchmarks/results") -> list[dict[str, Any]]:
    """Every benchmark file of ``python -m benchmarks.bench`` in ``folder``, oldest first."""
    benches = [{**payload, "file": name} for name, payload in _load_folder(folder, BENCH_REQUIRED)]
    return sorted(benches, key=lambda b: str(b["date"]))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vitlib.lab.results.records", description="Record a finished run as results/<name>.json."
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
        parser.exit(2, f"vitlib.lab.results.records: error: {err}\n")
    print(f"recorded {path}")


if __name__ == "__main__":
    main()
