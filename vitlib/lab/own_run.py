"""Chapter 6's own run: the book's recipe for the budget, trained where the notebook runs, and
found again by chapter 7.

On a GPU with the real data, chapter 6 trains for ``TRAIN_MINUTES``: :func:`plan` times a warm-up
(:class:`vitlib.support.timed.WarmUp`: two epochs of a few batches of ``configs/cpu_long.yaml``, the
recipe of the recorded long run, whose mixing makes it the slower of the two), counts the epochs
that fit (with a margin: :func:`vitlib.support.timed.plan_epochs`), and takes the recipe the recipe
study advises for that many epochs (:func:`vitlib.lab.ablation.recipe_for`: ``short_budget`` without
CutMix / MixUp for a short run, ``cpu_long`` for a long one), its two learning-rate cycles scaled
over them so that the schedule ends, at its lowest rate, when the budget does; :func:`train` runs exactly what ``python -m
vitlib fit --config <recipe>`` runs with those two settings, on the fast path
:func:`vitlib.support.hardware.choose` picks, with Lightning's progress bar. The run lands in
``runs/book/recipe/vitlib/version_N/`` of a checkout (a temporary folder elsewhere):
``checkpoints/last.ckpt``, ``metrics.csv``, ``metrics.json``, the ``config.yaml`` it ran with.
:func:`latest` reads the newest finished one back as a :class:`~vitlib.lab.records.RecordedRun`.

``VITLIB_TRAIN_SECONDS=N`` trains for ``N`` seconds wherever the notebook runs (a CPU, quick
mode's synthetic data), so that the cells a GPU runs are executed by ``pytest --nbmake`` too.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import cli
from ..support import hardware, timed
from ..support.provenance import gpu_name
from ..support.run_folder import QUICK_DATASET, final_metrics, run_folders
from . import ablation, records
from .book import DataSource, quiet_lightning, recipe_config, runs_root
from .records import RecordedRun

WARM_UP_CONFIG = ablation.BUDGET_RECIPES["long"]  # the recipe of the recorded long run (results/cpu-long.json)
SECONDS_ENV = "VITLIB_TRAIN_SECONDS"
WARM_UP_BATCHES = (20, 4)  # training and validation batches per warm-up epoch
NAME = "your-run"


def budget_seconds(minutes: float, source: DataSource) -> float | None:
    """How long chapter 6 trains: ``$VITLIB_TRAIN_SECONDS`` when set, else ``minutes`` on a GPU
    with real data, else ``None`` (no training: the chapter shows the recorded run)."""
    forced = os.environ.get(SECONDS_ENV, "").strip()
    if forced:
        try:
            seconds = float(forced)
        except ValueError:
            seconds = -1.0
        if not seconds > 0:
            raise ValueError(f"{SECONDS_ENV} must be a number of seconds > 0; got {forced!r} (unset it to train on a GPU only)")
        return seconds
    if not minutes > 0:
        raise ValueError(f"the training budget must be a number of minutes > 0; got {minutes!r}")
    return minutes * 60.0 if torch.cuda.is_available() and source.real else None


def what_trains(seconds: float | None, source: DataSource) -> str:
    """One line for the reader: what chapter 6 trains here (``seconds`` from :func:`budget_seconds`),
    or why nothing trains and how to train."""
    where = f"on {name}" if (name := gpu_name()) else "on the CPU"
    if seconds is not None:
        forced = f" ({SECONDS_ENV} is set)" if os.environ.get(SECONDS_ENV, "").strip() else ""
        return f"This chapter trains the book's recipe for its budget for {seconds / 60:.1f} min{forced} {where}, on {source.caption}."
    why = "no GPU here" if not torch.cuda.is_available() else f"no CIFAR-100 here ({source.caption})"
    return (
        f"Nothing trains ({why}): the chapter shows the recorded run. To train the recipe yourself, open "
        "the chapter on a GPU (on Colab: Runtime > Change runtime type > GPU), or run "
        f"`python -m vitlib fit --config {WARM_UP_CONFIG} --data.data_dir DIR` (hours on a CPU)."
    )


@dataclass(frozen=True)
class Plan:
    """The recipe, the epochs and the LR cycle that fit a budget, from a measured warm-up."""

    config: str  # configs/<config>.yaml
    seconds: float
    stop_at: float  # time.time() at which training must have ended
    epochs: int
    half_cycle_epochs: float
    cycle_epochs: int
    epoch_s: float
    startup_s: float
    fast_path: hardware.FastPath

    def describe(self) -> str:
        cycles = self.epochs / self.cycle_epochs
        cycle = f"{cycles:.0f} learning-rate cycles of {self.cycle_epochs} epochs" if cycles > 1 else f"one learning-rate cycle of {self.epochs} epochs"
        short = self.config == ablation.BUDGET_RECIPES["short"]
        why = (f"up to {ablation.SHORT_BUDGET_EPOCHS} epochs the recipe study measured the recipe ahead without CutMix / MixUp"
               if short else f"beyond {ablation.SHORT_BUDGET_EPOCHS} epochs, the long run's whole recipe")  # fmt: skip
        return (
            f"{self.epochs} epochs of about {self.epoch_s:.1f} s each (timed in a warm-up) for a budget of "
            f"{self.seconds / 60:.1f} min: configs/{self.config}.yaml ({why}), {cycle}, ending at the lowest "
            f"learning rate; {self.fast_path.describe()}"
        )


def _fit_args(config: str, source: DataSource, path: hardware.FastPath, root: Path) -> list[str]:
    # The data are named explicitly (--data.quick true or false), so quick mode's epoch cap does not
    # apply: the plan sets the epochs.
    data = (
        ["--data.quick", "true"] if source.root is None
        else ["--data.quick", "false", "--data.data_dir", str(source.root), "--data.download", "false",
              "--data.verify_md5", str(source.kind == "cifar100").lower()]
    )  # fmt: skip
    trainer = [f"--trainer.{key}={value}" for key, value in path.trainer_kwargs().items()]
    return ["fit", "--config", config, *data, "--data.pipeline", path.pipeline, "--model.compile", str(path.compile).lower(),
            *trainer, "--trainer.default_root_dir", str(root)]  # fmt: skip


def _callback(class_name: str, **init_args: object) -> str:
    return "--trainer.callbacks+=" + json.dumps({"class_path": f"vitlib.support.timed.{class_name}", "init_args": init_args})


def plan(source: DataSource, seconds: float) -> Plan:
    """Time a warm-up on ``source``, choose the recipe for the epochs that fit in ``seconds``
    (counted from now: the warm-up is part of the budget) and plan its epochs and cycles."""
    start = time.time()
    path = hardware.choose()
    with tempfile.TemporaryDirectory() as tmp, quiet_lightning():
        out = Path(tmp) / "warm_up.json"
        train, val = WARM_UP_BATCHES
        cli.main([*_fit_args(WARM_UP_CONFIG, source, path, Path(tmp)), "--trainer.max_epochs", "2",
                  "--trainer.limit_train_batches", str(train), "--trainer.limit_val_batches", str(val),
                  "--trainer.enable_model_summary", "false",  # with the progress bar, as training shows it
                  _callback("WarmUp", path=str(out))])  # fmt: skip
        warm = timed.read_warm_up(out)
    stop_at = start + seconds
    left = stop_at - time.time() - warm["startup_s"]
    # At most the long run's epochs; the recipe is the one for the epochs that fit, its cycles
    # scaled over them (the recipe study trained each arm so, at 30 epochs and at 100).
    # Rounding to whole cycles may bring the epochs under the short recipe's limit: then the plan
    # is made again with that recipe (the epochs trained choose the recipe).
    most = recipe_config(WARM_UP_CONFIG)["trainer"]["max_epochs"]
    config = ablation.recipe_for(timed.plan_epochs(left, warm["epoch_s"], most, 1)[0])
    for _ in range(2):
        epochs, half_cycle = timed.plan_epochs(left, warm["epoch_s"], most, timed.recipe_cycles(recipe_config(config)))
        if ablation.recipe_for(epochs) == config:
            break
        config = ablation.recipe_for(epochs)
    return Plan(config, seconds, stop_at, epochs, half_cycle, timed.cycle_epochs(half_cycle), warm["epoch_s"], warm["startup_s"], path)


def train(source: DataSource, planned: Plan) -> RecordedRun:
    """Train ``planned``'s recipe on ``source`` as planned, with a progress bar; returns the run
    (:func:`latest`). Should an epoch take longer than the warm-up said, training stops at an epoch
    end before the budget runs out (:class:`vitlib.support.timed.Deadline`), and says so."""
    root = runs_root() / "recipe"
    with quiet_lightning():
        cli.main([*_fit_args(planned.config, source, planned.fast_path, root), "--trainer.max_epochs", str(planned.epochs),
                  "--model.schedule.half_cycle_epochs", str(planned.half_cycle_epochs), "--trainer.enable_model_summary", "false",
                  _callback("Deadline", stop_at=planned.stop_at, cycle_epochs=planned.cycle_epochs, verbose=False)])  # fmt: skip
    run = latest(root, real=False)
    if run is None:
        raise RuntimeError(f"training ended without a finished run under {root}: see the output above")
    return run


def latest(root: str | Path | None = None, real: bool = True) -> RecordedRun | None:
    """The newest finished run under ``root`` (default ``runs/book/recipe``) as a
    :class:`~vitlib.lab.records.RecordedRun` (its weights exported next to it), else ``None``. With
    ``real``, runs on quick mode's synthetic data are passed over: they have nothing to show."""
    root = Path(root) if root is not None else runs_root() / "recipe"
    finished = [(folder, final_metrics(folder)) for folder in run_folders(root)]
    finished = [folder for folder, metrics in finished if metrics and not (real and metrics.get("dataset") == QUICK_DATASET)]
    if not finished:
        return None
    run_dir = finished[-1]
    record = records.run_record(run_dir, NAME)
    folder = run_dir / "pretrained"
    record["weights"], record["size"] = records.export_weights(run_dir, folder)
    record["trained_here"] = True
    return RecordedRun(record, str(folder))
