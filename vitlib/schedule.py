"""Learning-rate schedules, stepped once per optimizer step, and the LR range test. Taught in chapter 5.

Every schedule is a stock ``torch.optim.lr_scheduler`` object, so Lightning checkpoints and resumes
it; ``build_scheduler`` only chooses and parameterises it. Return it from ``configure_optimizers``
with ``"interval": "step"``: the schedules are measured in optimizer steps, not epochs.
"""

from __future__ import annotations

import functools
import math
import tempfile
from dataclasses import dataclass, replace
from typing import Any
from unittest import mock

import torch
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    CyclicLR,
    LinearLR,
    LRScheduler,
    SequentialLR,
)

from .checks import positive_int, positive_number

SCHEDULES = ("cyclic", "cosine", "constant")

# LinearLR needs a start factor > 0; the warm-up starts at max_lr / 1000 ("from ~0").
_WARMUP_START_FACTOR = 1e-3


@dataclass
class ScheduleConfig:
    """Which learning-rate schedule to use and its shape.

    ``"cyclic"``: the triangular policy of Smith 2017 ("Cyclical Learning Rates for Training Neural
    Networks"), from ``base_lr`` up to ``max_lr`` in ``half_cycle_epochs`` and back, repeated.
    ``"cosine"``: linear warm-up from ~0 to ``max_lr`` over ``warmup_epochs``, then cosine decay to
    ``min_lr`` at the last step. ``"constant"``: ``max_lr`` throughout.
    """

    name: str = "cyclic"
    base_lr: float = 1e-4
    max_lr: float = 1e-3
    half_cycle_epochs: float = 10.0  # cyclic: epochs from base_lr to max_lr
    warmup_epochs: float = 5.0  # cosine
    min_lr: float = 1e-5  # cosine: the LR at the last step

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(
                f"ScheduleConfig.name must be one of {', '.join(map(repr, SCHEDULES))}; got {self.name!r}"
            )
        for name in ("base_lr", "max_lr", "half_cycle_epochs"):
            positive_number(f"ScheduleConfig.{name}", getattr(self, name))
        for name in ("warmup_epochs", "min_lr"):
            positive_number(f"ScheduleConfig.{name}", getattr(self, name), allow_zero=True)
        if self.base_lr > self.max_lr:
            raise ValueError(
                f"ScheduleConfig.base_lr ({self.base_lr}) must be <= ScheduleConfig.max_lr ({self.max_lr})"
            )
        if self.min_lr > self.max_lr:
            raise ValueError(
                f"ScheduleConfig.min_lr ({self.min_lr}) must be <= ScheduleConfig.max_lr ({self.max_lr})"
            )

    # What the schedule is and how it stretches over another number of epochs, asked by the tables,
    # the time budgets and the studies, so that a new schedule is added here and nowhere else.

    def describe(self) -> str:
        """The schedule in words, for a table: ``"triangular cyclic 0.0001 to 0.001, half cycle 12.5 epochs"``."""
        def epochs(n: float) -> str:
            return f"{n:g} epoch{'s' * (n != 1)}"

        if self.name == "cyclic":
            return f"triangular cyclic {self.base_lr:g} to {self.max_lr:g}, half cycle {epochs(self.half_cycle_epochs)}"
        if self.name == "cosine":
            return f"warm-up {epochs(self.warmup_epochs)} to {self.max_lr:g}, then cosine down to {self.min_lr:g}"
        return f"constant {self.max_lr:g}"

    @property
    def cycle_epochs(self) -> int | None:
        """Epochs of one whole cycle (up and down again); ``None`` for a schedule without cycles."""
        return math.ceil(2 * self.half_cycle_epochs) if self.name == "cyclic" else None

    def cycles(self, epochs: int) -> int:
        """How many whole cycles it runs over ``epochs`` (1 for a schedule without cycles)."""
        return max(1, round(epochs / self.cycle_epochs)) if self.cycle_epochs else 1

    def fitted(self, epochs: int, cycles: int) -> ScheduleConfig:
        """The same schedule over ``epochs`` in ``cycles`` whole cycles, ending at its lowest rate (a
        schedule without cycles spans any number of epochs as it is)."""
        return replace(self, half_cycle_epochs=epochs / (2 * cycles)) if self.name == "cyclic" else self

    def options(self) -> tuple[tuple[str, object], ...]:
        """The command-line options that give a run this schedule's shape (what :meth:`fitted` changes)."""
        if self.name != "cyclic":
            return ()
        half = self.half_cycle_epochs  # a whole number as one: 25, not 25.0
        return (("model.schedule.half_cycle_epochs", int(half) if float(half).is_integer() else half),)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    # Schedulers read "initial_lr" with setdefault, so a stale one (from an earlier scheduler on
    # the same optimizer) would silently win over "lr": overwrite both.
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = lr


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, max_epochs: int
) -> LRScheduler:
    """The scheduler for ``cfg``, to be stepped after every optimizer step.

    It also sets the optimizer's learning rate to the schedule's start, so the optimizer's own
    ``lr`` argument does not matter.
    """
    positive_int("steps_per_epoch", steps_per_epoch)
    positive_int("max_epochs", max_epochs)
    total_steps = steps_per_epoch * max_epochs
    if cfg.name == "cyclic":
        # At least one step, so that very short runs (fast_dev_run: one step an epoch) still work.
        step_size_up = max(1, round(cfg.half_cycle_epochs * steps_per_epoch))
        return CyclicLR(  # sets the optimizer's lr to base_lr itself
            optimizer,
            base_lr=cfg.base_lr,
            max_lr=cfg.max_lr,
            step_size_up=step_size_up,
            mode="triangular",
            cycle_momentum=False,  # AdamW has no "momentum" key to cycle
        )
    _set_lr(optimizer, cfg.max_lr)
    if cfg.name == "constant":
        return ConstantLR(optimizer, factor=1.0, total_iters=0)
    if cfg.warmup_epochs >= max_epochs:
        raise ValueError(
            f"ScheduleConfig.warmup_epochs ({cfg.warmup_epochs}) must be < max_epochs ({max_epochs}), "
            "to leave epochs for the cosine decay"
        )
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    # The cosine reaches min_lr at the last step, index total_steps - 1; at least one step long so
    # that very short runs (fast_dev_run) still work.
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    cosine = CosineAnnealingLR(optimizer, T_max=decay_steps, eta_min=cfg.min_lr)
    if warmup_steps == 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=_WARMUP_START_FACTOR, end_factor=1.0, total_iters=warmup_steps)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])


def lr_trace(cfg: ScheduleConfig, steps_per_epoch: int, max_epochs: int) -> list[float]:
    """The learning rate used at every optimizer step (``steps_per_epoch * max_epochs`` values)."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=cfg.max_lr)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch, max_epochs)
    trace = []
    for _ in range(steps_per_epoch * max_epochs):
        trace.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # keeps torch's "scheduler stepped before optimizer" check quiet
        scheduler.step()
    return trace


def lr_range_test(
    module: Any,
    datamodule: Any,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    num_steps: int = 100,
    early_stop_threshold: float | None = 4.0,
    **trainer_kwargs: Any,
) -> tuple[list[float], list[float], float | None]:
    """LR range test (Smith 2017; the "LR finder"): train for ``num_steps`` steps while the LR grows
    exponentially from ``min_lr`` to ``max_lr``, recording the loss.

    Runs Lightning's ``Tuner.lr_find``, which swaps the module's scheduler for its own and restores
    the weights and optimizer afterwards. ``module.configure_optimizers`` must return a single
    optimizer (a scheduler with it is fine) and ``training_step`` must return the loss. Returns
    ``(lrs, losses, suggestion)``: losses are Lightning's exponentially smoothed training losses,
    the lists stop early once the loss exceeds ``early_stop_threshold`` times its best (``None``
    runs all steps), and ``suggestion`` is the LR of steepest descent (``None`` with too few points).
    ``trainer_kwargs`` go to ``lightning.Trainer``.
    """
    import lightning.pytorch as pl
    from lightning.pytorch.tuner import Tuner, lr_finder

    if not 0 < min_lr < max_lr:
        raise ValueError(f"lr_range_test needs 0 < min_lr < max_lr; got min_lr={min_lr}, max_lr={max_lr}")
    positive_int("num_steps", num_steps)
    # max_epochs=-1: the step count alone ends the test, however small the data set.
    quiet = {
        "max_epochs": -1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    # lr_find saves a temporary checkpoint under default_root_dir; keep it out of the working folder.
    # Its own "Finding best initial lr" bar ignores enable_progress_bar and, outside a terminal, prints
    # one line per step (a page of them in a notebook): hand it a disabled tqdm.
    quiet_bar = functools.partial(lr_finder.tqdm, disable=True)
    with tempfile.TemporaryDirectory() as root, mock.patch.object(lr_finder, "tqdm", quiet_bar):
        trainer = pl.Trainer(**{**quiet, "default_root_dir": root, **trainer_kwargs})
        finder = Tuner(trainer).lr_find(
            module,
            datamodule=datamodule,
            min_lr=min_lr,
            max_lr=max_lr,
            num_training=num_steps,
            early_stop_threshold=early_stop_threshold,
            update_attr=False,
        )
    if finder is None:
        raise RuntimeError("Lightning skipped the LR range test (fast_dev_run is on); remove fast_dev_run")
    # Lightning's bias correction divides the running average by 1 - beta**(k+1) with k the step
    # count *after* the optimizer step, one too many, so its first values read about half the true
    # loss; rescaling each point by (1 - beta**(i+2)) / (1 - beta**(i+1)) makes it the standard
    # bias-corrected average (Lightning 2.6, LRFinder on_train_batch_end).
    beta = 0.98  # Lightning's _LRCallback default, which lr_find uses
    finder.results["loss"] = [
        loss * (1 - beta ** (i + 2)) / (1 - beta ** (i + 1)) for i, loss in enumerate(finder.results["loss"])
    ]
    return list(finder.results["lr"]), list(finder.results["loss"]), finder.suggestion()
