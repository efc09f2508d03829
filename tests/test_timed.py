"""Training to a time budget: the warm-up's projection, the plan, the stop."""

import time

import lightning as L
import pytest
import torch

from vitlib.data import CIFAR100DataModule
from vitlib.module import ViTModule
from vitlib.support.callbacks import ThroughputMonitor
from vitlib.schedule import ScheduleConfig
from vitlib.support.timed import MARGIN, PAD_S, Deadline, WarmUp, plan_epochs, read_warm_up, recipe_schedule, stop_reason


def test_stop_reason_projects_the_next_epoch_and_keeps_whole_cycles():
    # The first epoch compiles: it counts only while it is the only one.
    assert stop_reason(now=0, stop_at=50, epochs_done=1, durations=[60.0], cycle_epochs=20) is not None
    assert stop_reason(now=0, stop_at=50, epochs_done=2, durations=[60.0, 2.0], cycle_epochs=20) is None
    assert "next epoch" in stop_reason(0, 2.5, 5, [60.0, 2.0, 2.0, 3.0], 20)
    # At a cycle's end: stop when a whole further cycle would not fit, go on when it would.
    assert "cycle" in stop_reason(0, 30, 20, [60.0] + [2.0] * 19, 20)
    assert stop_reason(0, 50, 20, [60.0] + [2.0] * 19, 20) is None
    assert stop_reason(0, 30, 21, [60.0] + [2.0] * 20, 20) is None  # mid-cycle: only the next epoch counts
    assert stop_reason(0, 30, 0, [], 20) is None


def _plan(seconds: float, epoch_s: float | None, max_epochs: int, cycles: int) -> tuple[int, float]:
    epochs, schedule = plan_epochs(seconds, epoch_s, max_epochs, CYCLIC, cycles)
    return epochs, schedule.half_cycle_epochs


CYCLIC = ScheduleConfig("cyclic", half_cycle_epochs=25)


def test_plan_epochs_scales_the_recipes_cycles_over_what_fits_with_a_margin():
    assert _plan(300, 1.5, 100, 2) == (100, 25.0)  # everything fits: the recipe's 100, two cycles of 50
    fits = int(100 // (1.5 * MARGIN + PAD_S))  # 55 with the margin (66 without)
    assert _plan(100, 1.5, 100, 2) == (fits - fits % 2, (fits - fits % 2) / 4)  # two cycles over what fits
    assert _plan(100, 1.5, 100, 5) == (55, 5.5)  # five cycles of 11
    assert _plan(1, 5.0, 100, 2) == (1, 0.5)  # never zero epochs: one cycle over one
    assert _plan(10, None, 100, 2) == (100, 25.0)  # no estimate: the Deadline callback decides
    assert _plan(60, 1.0, 2, 5) == (2, 0.5)  # the tiny mode's cap: as many cycles as epochs
    # A schedule without cycles spans whatever fits, as it is.
    cosine = ScheduleConfig("cosine", warmup_epochs=1)
    assert plan_epochs(100, 1.5, 100, cosine, 1) == (fits, cosine)


def test_recipe_schedule_counts_the_whole_cycles_of_a_config():
    def cycles(schedule: dict, epochs: int) -> int:
        return recipe_schedule({"model": {"schedule": schedule}, "trainer": {"max_epochs": epochs}})[1]

    assert cycles({"name": "cyclic", "half_cycle_epochs": 25}, 100) == 2
    assert cycles({"name": "cyclic", "half_cycle_epochs": 10}, 100) == 5
    assert cycles({"name": "cosine"}, 20) == 1
    assert recipe_schedule({"model": {"schedule": {"name": "cosine"}}, "trainer": {"max_epochs": 20}})[0].name == "cosine"


@pytest.mark.parametrize("slower", [1.0, 1.02, 1.05])
def test_a_run_slower_than_its_warm_up_still_uses_its_budget_and_ends_at_the_low_rate(slower: float) -> None:
    """Simulated: a 15-minute budget, epochs timed at 8 s by the warm-up that really take 2 % or 5 %
    longer. Every planned epoch runs (so the schedule ends at its lowest rate, on a cycle boundary)
    and at least 90 % of the budget is used."""
    budget, warm_epoch = 900.0, 8.0
    epochs, schedule = plan_epochs(budget, warm_epoch, 1000, CYCLIC, 2)
    cycle = schedule.cycle_epochs
    durations: list[float] = []
    now = 0.0
    for done in range(1, epochs + 1):
        now += warm_epoch * slower
        durations.append(warm_epoch * slower)
        if done < epochs and stop_reason(now, budget, done, durations, cycle) is not None:
            break
    assert done == epochs and epochs % cycle == 0
    assert 0.9 * budget <= now <= budget


def test_cycle_epochs_is_a_whole_rise_and_fall():
    assert ScheduleConfig(half_cycle_epochs=25).cycle_epochs == 50
    assert ScheduleConfig(half_cycle_epochs=7.5).cycle_epochs == 15


def _fit(tmp_path, callbacks, **limits):
    L.seed_everything(0, verbose=False)
    datamodule = CIFAR100DataModule(batch_size=32, quick=True, num_workers=0, augment=None, mix=None)
    trainer = L.Trainer(max_epochs=limits.pop("max_epochs", 1), logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=callbacks, **limits)  # fmt: skip
    trainer.fit(ViTModule("vit_tiny"), datamodule)
    return trainer


def test_the_warm_up_projects_a_whole_epoch_from_a_few_batches(tmp_path):
    path = tmp_path / "warm_up.json"
    # The warm-up before the monitor, as the CLI orders them (its defaults come after the config's).
    _fit(tmp_path, [WarmUp(path), ThroughputMonitor()], max_epochs=2, limit_train_batches=3, limit_val_batches=1)
    warm = read_warm_up(path)
    assert warm["train_batches"] == 512 // 32 and warm["val_batches"] == 256 // 32  # whole loaders, not the limits
    # The batches projected to whole loaders, and what an epoch costs beyond them (checkpoint writes).
    assert warm["overhead_s"] >= 0
    assert warm["epoch_s"] == pytest.approx(16 * warm["train_batch_s"] + 8 * warm["val_batch_s"] + warm["overhead_s"])
    assert warm["startup_s"] >= 0
    # The projection against a whole epoch timed the same way (generous: the machine may be busy).
    start = time.perf_counter()
    _fit(tmp_path, [])
    whole = time.perf_counter() - start
    assert 0.2 * whole < warm["epoch_s"] < 2.0 * whole, (warm, whole)


def test_the_deadline_stops_at_an_epoch_end_when_the_next_epoch_would_not_fit(tmp_path, capsys):
    deadline = Deadline(stop_at=time.time() + 3600, cycle_epochs=0, verbose=False)
    trainer = _fit(tmp_path, [deadline], max_epochs=3, limit_train_batches=2, limit_val_batches=1)
    assert trainer.current_epoch == 3 and capsys.readouterr().out == ""  # in time: quiet, every epoch
    deadline = Deadline(stop_at=time.time() + 0.01, cycle_epochs=0, verbose=False)
    trainer = _fit(tmp_path, [deadline], max_epochs=3, limit_train_batches=2, limit_val_batches=1)
    assert trainer.current_epoch == 1  # past the stop mid-epoch 1: stopped after its step, not later
    assert "stopping" in capsys.readouterr().out  # a stop is always said


def test_the_warm_up_needs_the_fit_s_throughput_monitor(tmp_path):
    with pytest.raises(ValueError, match="ThroughputMonitor"):
        _fit(tmp_path, [WarmUp(tmp_path / "w.json")], max_epochs=1, limit_train_batches=1, limit_val_batches=1)


def test_a_cycle_that_would_not_end_in_time_is_shortened_not_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    """At the end of the first of two 10-epoch cycles, with time left for 6 epochs: the Deadline
    does not stop (dropping half the budget) but runs one cycle over those 6, whose learning rate
    rises and falls back to its lowest value at the run's new last step."""
    from types import SimpleNamespace

    from torch.optim.lr_scheduler import CyclicLR

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    steps = 4  # per epoch
    scheduler = CyclicLR(optimizer, base_lr=0.1, max_lr=1.0, step_size_up=5 * steps, cycle_momentum=False)
    for _ in range(10 * steps):  # the first cycle, to its end at base_lr
        optimizer.step()
        scheduler.step()
    fit_loop = SimpleNamespace(max_epochs=20)
    trainer = SimpleNamespace(
        current_epoch=9, callback_metrics={}, num_training_batches=steps, should_stop=False, fit_loop=fit_loop,
        lr_scheduler_configs=[SimpleNamespace(scheduler=scheduler)],
    )  # fmt: skip
    trainer.max_epochs = 20
    deadline = Deadline(stop_at=time.time() + 6.5 * 10, cycle_epochs=10, verbose=False)
    deadline.durations = [10.0] * 9
    deadline.last = time.time() - 10.0
    deadline.on_train_epoch_end(trainer, None)
    assert not trainer.should_stop and fit_loop.max_epochs == 16 and deadline.cycle_epochs == 6
    assert "shortened to 6 epochs" in capsys.readouterr().out
    new = trainer.lr_scheduler_configs[0].scheduler
    assert new is not scheduler
    lrs = []
    for _ in range(6 * steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        new.step()
    assert lrs[0] == pytest.approx(0.1) and max(lrs) == pytest.approx(1.0) and optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    # With no triangular schedule, or too little time, it stops as before.
    trainer.lr_scheduler_configs = []
    trainer.should_stop = False
    deadline.cycle_epochs, deadline.last = 10, time.time() - 10.0
    trainer.current_epoch = 9
    deadline.on_train_epoch_end(trainer, None)
    assert trainer.should_stop and "stopping after epoch 10" in capsys.readouterr().out
