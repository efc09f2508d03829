"""Training to a time budget: the epochs planned from a measured warm-up, so that the learning-rate
schedule ends where it should, and a stop at an epoch end should the plan prove too hopeful.

:class:`WarmUp` times a short fit (a few batches per epoch, two epochs: the first one pays for
start-up and compiling) and writes the seconds of one whole epoch; :func:`plan_epochs` turns the
seconds left, with a margin, into epochs with the recipe's learning-rate cycles scaled over them;
:class:`Deadline` ends training at an epoch end before the stop time, and shortens a last
learning-rate cycle that would not end in time instead of dropping it. Chapter 6 trains the book's
recipe to a budget with them, and the GPU run command to its deadline.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
from torch.optim.lr_scheduler import CyclicLR

from ..schedule import ScheduleConfig
from .callbacks import ThroughputMonitor
from .files import write_json_atomic


def stop_reason(now: float, stop_at: float, epochs_done: int, durations: list[float], cycle_epochs: int) -> str | None:
    """Why training should stop after ``epochs_done`` epochs, or None to go on.

    The next epoch is projected as the slowest of the last three (the first one only while it is
    alone: it includes compiling). A run that stops early should still end where a learning-rate
    cycle ends, at its low rate: so at a cycle's end it also stops when a whole further cycle would
    not fit.
    """
    recent = durations[1:][-3:] or durations[-1:]
    if not recent:
        return None
    epoch, left = max(recent), stop_at - now
    if left < epoch:
        return f"the next epoch (about {epoch:.1f} s) would end after the stop ({left:.0f} s left)"
    if cycle_epochs and epochs_done % cycle_epochs == 0 and left < epoch * cycle_epochs:
        return f"a further {cycle_epochs}-epoch LR cycle (about {epoch * cycle_epochs:.0f} s) would not end in time"
    return None


class Deadline(L.Callback):
    """Ends training at an epoch end before ``stop_at`` (``time.time()`` seconds), by :func:`stop_reason`.

    At the end of a learning-rate cycle after which a whole further cycle would not end in time, it
    shortens that last cycle to the epochs that fit instead of dropping it (a triangular schedule:
    one shorter rise and fall, so the run still ends at its lowest rate). Past ``stop_at`` in the
    middle of an epoch (an estimate gone wrong) it stops after the current step. Either way the fit
    ends the normal way: checkpoints and ``metrics.json`` are written.
    """

    def __init__(self, stop_at: float, cycle_epochs: int = 0, verbose: bool = True) -> None:
        self.stop_at, self.cycle_epochs, self.verbose = stop_at, cycle_epochs, verbose
        self.durations: list[float] = []
        self.last = time.time()

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.last = time.time()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if time.time() > self.stop_at and not trainer.should_stop:
            print("deadline: the stop time has passed mid-epoch; stopping after this step", flush=True)
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # Lightning validates before this hook, so a duration covers training, validation and checkpoints.
        now = time.time()
        self.durations.append(now - self.last)
        self.last = now
        done = trainer.current_epoch + 1
        top1 = trainer.callback_metrics.get("val/top1")
        val = "" if top1 is None else f", val top-1 {float(top1):.2%}"
        if self.verbose:  # a stop is printed either way
            print(f"deadline: epoch {done}/{trainer.max_epochs} took {self.durations[-1]:.1f} s{val}; "
                  f"{self.stop_at - now:.0f} s to the stop", flush=True)  # fmt: skip
        reason = stop_reason(now, self.stop_at, done, self.durations, self.cycle_epochs)
        if not reason or done >= (trainer.max_epochs or 0):
            return
        fits = int((self.stop_at - now) // max(self.durations[1:][-3:] or self.durations[-1:]))
        if "LR cycle" in reason and self._shorten_last_cycle(trainer, done, fits):
            print(f"deadline: after epoch {done}, {reason}: the last cycle is shortened to {fits} epochs, "
                  "ending at the lowest rate", flush=True)  # fmt: skip
            return
        print(f"deadline: stopping after epoch {done}: {reason}", flush=True)
        trainer.should_stop = True

    def _shorten_last_cycle(self, trainer: L.Trainer, done: int, fits: int) -> bool:
        """Replace the triangular schedule, at a cycle's end (its lowest rate), by one cycle over the
        ``fits`` epochs left, and end the fit with it; ``False`` when the schedule is not
        triangular or fewer than two epochs fit."""
        configs = trainer.lr_scheduler_configs
        old = configs[0].scheduler if configs else None
        if not isinstance(old, CyclicLR) or fits < 2:
            return False
        configs[0].scheduler = CyclicLR(
            old.optimizer, base_lr=old.base_lrs, max_lr=old.max_lrs, mode=old.mode,
            step_size_up=max(1, round(fits * trainer.num_training_batches / 2)), cycle_momentum=False,
        )  # fmt: skip
        trainer.fit_loop.max_epochs = done + fits
        self.cycle_epochs = fits
        return True


# Epochs of a real run take longer than the warm-up projected (a progress bar, checkpoint writes
# at every epoch end, a busier machine): the plan leaves this margin, so that a run 5 % slower than
# its warm-up still ends on schedule, and one at the warm-up's speed uses 90 % of its budget.
MARGIN = 1.06
PAD_S = 0.2


def epochs_that_fit(seconds: float, epoch_s: float | None, max_epochs: int) -> int:
    """Epochs of ``epoch_s`` each (timed by a warm-up; planned with :data:`MARGIN` and
    :data:`PAD_S` on top) that fit in ``seconds``, at least one and at most ``max_epochs``; without
    an estimate, ``max_epochs`` (and :class:`Deadline` decides)."""
    fits = max_epochs if epoch_s is None else min(max_epochs, int(seconds // (epoch_s * MARGIN + PAD_S)))
    return max(1, fits)


def plan_epochs(seconds: float, epoch_s: float | None, max_epochs: int, schedule: ScheduleConfig, cycles: int) -> tuple[int, ScheduleConfig]:
    """(epochs, ``schedule`` fitted over them) for the :func:`epochs_that_fit` in ``seconds``.

    The recipe's ``cycles`` whole cycles are scaled over the epochs that fit (fewer when fewer
    epochs fit), and the epochs rounded down to a whole number of them, so that the run uses its
    budget and ends at the schedule's lowest rate whatever the budget.
    """
    fits = epochs_that_fit(seconds, epoch_s, max_epochs)
    cycles = max(1, min(cycles, fits))
    epochs = fits - fits % cycles
    return epochs, schedule.fitted(epochs, cycles)


def recipe_schedule(config: dict[str, Any]) -> tuple[ScheduleConfig, int]:
    """A training config's schedule and how many whole cycles it runs over the config's epochs."""
    schedule = ScheduleConfig(**(config["model"].get("schedule") or {}))
    return schedule, schedule.cycles(config["trainer"]["max_epochs"])


class WarmUp(L.Callback):
    """Times a short fit and writes ``path`` (JSON): the seconds of one whole epoch, projected from
    the last timed epoch's batches to the full training and validation loaders, and the start-up
    (from the fit's start to its first batch: building the model, the data on the device).

    The epochs are timed by the fit's :class:`~vitlib.support.callbacks.ThroughputMonitor` (which the CLI
    always adds); run it on a fit with ``limit_train_batches`` / ``limit_val_batches`` of a few
    batches and ``max_epochs=2``: the first epoch includes compiling and warming the kernels up,
    the second is the one measured.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.created = time.perf_counter()
        self.startup_s: float | None = None
        self.epoch_started = self.created
        self.monitor: ThroughputMonitor | None = None

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.monitor = next((c for c in trainer.callbacks if isinstance(c, ThroughputMonitor)), None)
        if self.monitor is None:
            raise ValueError("WarmUp reads the epoch times of a ThroughputMonitor: add one to the Trainer's callbacks")
        # A warm-up times epochs; the bare-step measurement at the end of a fit would cost more
        # than the warm-up itself on a CPU.
        self.monitor.bare_steps = 0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.epoch_started = time.perf_counter()
        if self.startup_s is None:
            self.startup_s = self.epoch_started - self.created

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # Read at the fit's end, whatever the order of the callbacks: the monitor's last epoch is
        # the last one trained, and the trainer's batch counts are the limited ones it ran.
        train_s, val_s = self.monitor.last_epoch
        timed_val = sum(trainer.num_val_batches) if trainer.num_val_batches else 0
        timed = {
            "train_batch_s": train_s / max(1, trainer.num_training_batches),
            "val_batch_s": val_s / timed_val if timed_val else 0.0,
        }
        # The loaders' own lengths are those of whole epochs (the limits apply in the loops).
        train_batches = len(trainer.train_dataloader)
        val_loaders = trainer.val_dataloaders
        val_loaders = val_loaders if isinstance(val_loaders, (list, tuple)) else [val_loaders] if val_loaders else []
        val_batches = sum(len(loader) for loader in val_loaders)
        # What an epoch costs beyond its batches, as training pays it: the checkpoint writes and the
        # progress bar's updates (when the warm-up shows one, as training does), once an epoch.
        overhead_s = max(0.0, time.perf_counter() - self.epoch_started - train_s - val_s)
        epoch_s = train_batches * timed["train_batch_s"] + val_batches * timed["val_batch_s"] + overhead_s
        write_json_atomic(self.path, {
            "epoch_s": epoch_s, "startup_s": self.startup_s or 0.0, "overhead_s": overhead_s,
            "train_batches": train_batches, "val_batches": val_batches, **timed,
        })  # fmt: skip


def read_warm_up(path: str | Path) -> dict[str, Any]:
    """What :class:`WarmUp` wrote to ``path``."""
    return json.loads(Path(path).read_text())
