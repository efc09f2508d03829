"""Chapter 6's own run: the book's recipe for the budget, trained where the notebook runs, and
found again by chapter 7.

On a GPU with the real data, chapter 6 trains for ``TRAIN_MINUTES``: :func:`plan` times a warm-up
(:class:`vitlib.support.timed.WarmUp`: two epochs of a few batches of ``configs/cpu_long.yaml``, the
recipe of the recorded long run, whose mixing makes it the slower of the two), counts the epochs
that fit (with a margin: :func:`vitlib.support.timed.epochs_that_fit`), and takes the recipe the recipe
study advises for that many epochs (:func:`vitlib.lab.results.ablation.recipe_for`: ``short_budget`` without
CutMix / MixUp for a short run, ``cpu_long`` for a long one), its two learning-rate cycles scaled
over them so that the schedule ends, at its lowest rate, when the budget does; :func:`train` runs exactly what ``python -m
vitlib fit --config <recipe>`` runs with those two settings, on the fast path
:func:`vitlib.support.hardware.choose` picks, with Lightning's progress bar. The run lands in
``runs/book/recipe/vitlib/version_N/`` of a checkout (a temporary folder elsewhere):
``checkpoints/last.ckpt``, ``metrics.csv``, ``metrics.json``, the ``config.yaml`` it ran with.
:func:`latest` reads the newest finished one back as a :class:`~vitlib.lab.results.records.RecordedRun`.

``VITLIB_TRAIN_SECONDS=N`` trains for ``N`` seconds wherever the notebook runs (a CPU, quick
mode's synthetic data), so that the cells a GPU runs are executed by ``pytest --nbmake`` too.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ...schedule import ScheduleConfig
from ...support import hardware, timed
from ...support.cifar import DatasetId
from ...support.provenance import gpu_name
from ...support.run_folder import final_metrics, run_folders
from ..results import ablation, records
from ..results.launch import Data, RunSpec, callback
from ..results.records import RecordedRun
from .chapter import DataSource, quiet_lightning, recipe_config, runs_root

WARM_UP_CONFIG = ablation.RECIPE_NAME  # the recipe of the recorded long run (results/cpu-long.json)
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
    schedule: ScheduleConfig  # the recipe's, fitted over the epochs
    epoch_s: float
    startup_s: float
    fast_path: hardware.FastPath

    def describe(self) -> str:
        cycles = self.schedule.cycles(self.epochs)
        cycle = (f"{cycles} learning-rate cycles of {self.schedule.cycle_epochs} epochs" if cycles > 1
                 else f"one learning-rate cycle of {self.epochs} epochs" if self.schedule.cycle_epochs
                 else self.schedule.describe())  # fmt: skip
        short = self.config == ablation.BUDGET_RECIPES["short"]
        why = (f"up to {ablation.SHORT_BUDGET_EPOCHS} epochs the recipe study measured the recipe ahead without CutMix / MixUp"
               if short else f"beyond {ablation.SHORT_BUDGET_EPOCHS} epochs, the long budget's recipe: chapter 4 says how far the study backs it")  # fmt: skip
        return (
            f"{self.epochs} epochs of about {self.epoch_s:.1f} s each (timed in a warm-up) for a budget of "
            f"{self.seconds / 60:.1f} min: configs/{self.config}.yaml ({why}), {cycle}, ending at the lowest "
            f"learning rate; {self.fast_path.describe()}"
        )


def run_spec(config: str, source: DataSource, path: hardware.FastPath, root: Path) -> RunSpec:
    """The fit of ``config`` on ``source`` with the machine's fast path, writing under ``root``.
    The data name quick mode's switch (on or off), so its epoch cap does not apply: the plan sets
    the epochs."""
    data = Data(source.root, verify_md5=source.dataset is DatasetId.OFFICIAL, quick=source.quick)
    trainer = tuple((f"trainer.{key}", value) for key, value in path.trainer_kwargs().items())
    return RunSpec(config, (("data.pipeline", path.pipeline), ("model.compile", path.compile), *trainer), data, root)


def plan(source: DataSource, seconds: float) -> Plan:
    """Time a warm-up on ``source``, choose the recipe for the epochs that fit in ``seconds``
    (counted from now: the warm-up is part of the budget) and plan its epochs and cycles."""
    start = time.time()
    path = hardware.choose()
    with tempfile.TemporaryDirectory() as tmp, quiet_lightning():
        out = Path(tmp) / "warm_up.json"
        train, val = WARM_UP_BATCHES
        warm_up = run_spec(WARM_UP_CONFIG, source, path, Path(tmp)).with_options(
            ("trainer.max_epochs", 2), ("trainer.limit_train_batches", train), ("trainer.limit_val_batches", val),
            ("trainer.enable_model_summary", False),  # with the progress bar, as training shows it
        )  # fmt: skip
        warm_up.with_extra(callback("vitlib.support.timed.WarmUp", path=str(out))).run_here()
        warm = timed.read_warm_up(out)
    stop_at = start + seconds
    left = stop_at - time.time() - warm["startup_s"]
    # At most the long run's epochs; the recipe is the one for the epochs that fit, its cycles
    # scaled over them (the recipe study trained each arm so, at 30 epochs and at 100).
    # Rounding to whole cycles may bring the epochs under the short recipe's limit: then the plan
    # is made again with that recipe (the epochs trained choose the recipe).
    most = recipe_config(WARM_UP_CONFIG)["trainer"]["max_epochs"]
    config = ablation.recipe_for(timed.epochs_that_fit(left, warm["epoch_s"], most))
    for _ in range(2):
        epochs, schedule = timed.plan_epochs(left, warm["epoch_s"], most, *timed.recipe_schedule(recipe_config(config)))
        if ablation.recipe_for(epochs) == config:
            break
        config = ablation.recipe_for(epochs)
    return Plan(config, seconds, stop_at, epochs, schedule, warm["epoch_s"], warm["startup_s"], path)


def train(source: DataSource, planned: Plan) -> RecordedRun:
    """Train ``planned``'s recipe on ``source`` as planned, with a progress bar; returns the run
    (:func:`latest`). Should an epoch take longer than the warm-up said, training stops at an epoch
    end before the budget runs out (:class:`vitlib.support.timed.Deadline`), and says so."""
    root = runs_root() / "recipe"
    with quiet_lightning():
        fit = run_spec(planned.config, source, planned.fast_path, root).with_options(
            ("trainer.max_epochs", planned.epochs), *planned.schedule.options(), ("trainer.enable_model_summary", False),
        )  # fmt: skip
        deadline = callback("vitlib.support.timed.Deadline", stop_at=planned.stop_at, cycle_epochs=planned.schedule.cycle_epochs or 0, verbose=False)
        fit.with_extra(deadline).run_here()
    run = latest(root, real=False)
    if run is None:
        raise RuntimeError(f"training ended without a finished run under {root}: see the output above")
    return run


def latest(root: str | Path | None = None, real: bool = True) -> RecordedRun | None:
    """The newest finished run under ``root`` (default ``runs/book/recipe``) as a
    :class:`~vitlib.lab.results.records.RecordedRun` (its weights exported next to it), else ``None``. With
    ``real``, runs on quick mode's synthetic data are passed over: they have nothing to show."""
    root = Path(root) if root is not None else runs_root() / "recipe"
    finished = [(folder, final_metrics(folder)) for folder in run_folders(root)]
    finished = [folder for folder, metrics in finished if metrics and not (real and metrics.get("dataset") == DatasetId.SYNTHETIC.label)]
    if not finished:
        return None
    run_dir = finished[-1]
    folder = run_dir / "pretrained"
    exported, size = records.export_weights(run_dir, folder)
    return RecordedRun(replace(records.run_record(run_dir, NAME), weights=exported, size=size, trained_here=True), str(folder))
