"""Chapter 6's own run: when it trains, for how long, what it says, and which run chapter 7 finds."""

import json
import os
from pathlib import Path

import pytest
import torch

from vitlib.lab.book import chapter, own_run
from vitlib.schedule import ScheduleConfig
from vitlib.support import cifar, hardware

REAL = chapter.DataSource(cifar.DatasetId.OFFICIAL, Path("data"), "CIFAR-100")
SYNTHETIC = chapter.DataSource(cifar.DatasetId.SYNTHETIC, None, "synthetic data (quick mode)")


def test_the_budget_is_the_minutes_on_a_gpu_with_real_data_only(monkeypatch):
    monkeypatch.delenv(own_run.SECONDS_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert own_run.budget_seconds(15, REAL) is None
    assert "Nothing trains (no GPU here)" in own_run.what_trains(None, REAL)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    assert own_run.budget_seconds(15, REAL) == 900
    assert own_run.budget_seconds(15, SYNTHETIC) is None
    assert "no CIFAR-100 here" in own_run.what_trains(None, SYNTHETIC)
    assert own_run.what_trains(900, REAL).startswith("This chapter trains the book's recipe for its budget for 15.0 min on Tesla T4")
    with pytest.raises(ValueError, match="minutes > 0"):
        own_run.budget_seconds(0, REAL)


def test_the_environment_variable_forces_training_anywhere_and_is_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(own_run.SECONDS_ENV, "45")
    assert own_run.budget_seconds(15, SYNTHETIC) == 45.0
    assert f"({own_run.SECONDS_ENV} is set)" in own_run.what_trains(45.0, SYNTHETIC)
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv(own_run.SECONDS_ENV, bad)
        with pytest.raises(ValueError, match=own_run.SECONDS_ENV):
            own_run.budget_seconds(15, SYNTHETIC)


def test_the_plan_says_its_recipe_epochs_cycles_and_fast_path():
    path = hardware.choose(hardware.Capabilities("NVIDIA A100-SXM4-40GB", (8, 0), 8))
    two = own_run.Plan("cpu_long", 900, 0, 100, ScheduleConfig(half_cycle_epochs=25), 8.0, 20.0, path)
    assert two.describe().startswith(
        "100 epochs of about 8.0 s each (timed in a warm-up) for a budget of 15.0 min: configs/cpu_long.yaml (beyond 50 epochs, "
        "the long budget's recipe: chapter 4 says how far the study backs it), 2 learning-rate cycles of 50 epochs"
    )
    assert "bf16" in two.describe()
    one = own_run.Plan("short_budget", 900, 0, 30, ScheduleConfig(half_cycle_epochs=15), 28.0, 20.0, path)
    assert "configs/short_budget.yaml (up to 50 epochs the recipe study measured the recipe ahead without CutMix / MixUp)" in one.describe()
    assert "one learning-rate cycle of 30 epochs" in one.describe()
    cosine = own_run.Plan("cpu", 900, 0, 30, ScheduleConfig("cosine", warmup_epochs=1), 28.0, 20.0, path)
    assert "warm-up 1 epoch to 0.001, then cosine down to 1e-05" in cosine.describe()


def _fit(epochs: int) -> float:
    """The warm-up's epoch time at which exactly ``epochs`` fit in 900 s with the plan's margin."""
    return (900 / (epochs + 0.5) - own_run.timed.PAD_S) / own_run.timed.MARGIN


@pytest.mark.parametrize(
    ("epoch_s", "config", "epochs", "cycle"),
    [
        (_fit(30), "short_budget", 30, 15),  # the short recipe's two cycles, as the study trained it
        (_fit(50), "short_budget", 50, 25),  # the boundary: still short, two cycles over 50
        (_fit(51), "short_budget", 50, 25),  # 51 fit, but two whole cycles train 50: the short recipe
        (_fit(52), "cpu_long", 52, 26),
        (_fit(99), "cpu_long", 98, 49),
        (_fit(120), "cpu_long", 100, 50),  # more than the long run's 100: capped, two cycles of 50
        (_fit(1), "short_budget", 1, 1),  # one epoch: one cycle over it
    ],
)
def test_the_plan_takes_the_recipe_for_the_epochs_that_fit(monkeypatch, epoch_s, config, epochs, cycle):
    """The warm-up is timed (here: its result is given), then the recipe follows the epochs that
    fit (vitlib.lab.results.ablation.recipe_for), its two cycles scaled over them."""
    monkeypatch.setattr(own_run.RunSpec, "run_here", lambda spec: None)
    monkeypatch.setattr(own_run.timed, "read_warm_up", lambda path: {"epoch_s": epoch_s, "startup_s": 0.0})
    monkeypatch.setattr(own_run.time, "time", lambda: 1_000.0)  # no time passes during the warm-up
    planned = own_run.plan(SYNTHETIC, 900)
    assert (planned.config, planned.epochs, planned.schedule.cycle_epochs) == (config, epochs, cycle)
    assert planned.schedule.half_cycle_epochs == cycle / 2


def _finished_run(root: Path, version: int, dataset: str, mtime: float) -> Path:
    folder = root / "vitlib" / f"version_{version}"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"dataset": dataset}))
    os.utime(folder / "metrics.json", (mtime, mtime))
    return folder


def test_chapter_7_finds_the_newest_real_run_and_passes_over_quick_mode(tmp_path, monkeypatch, make_record):
    assert own_run.latest(tmp_path) is None
    _finished_run(tmp_path, 0, "CIFAR-100 (JPEG q75 copy)", 1_000)
    _finished_run(tmp_path, 1, "synthetic data in the CIFAR-100 layout (quick mode)", 2_000)
    seen = []
    monkeypatch.setattr(own_run.records, "run_record", lambda run_dir, name: seen.append(run_dir.name) or make_record(name=name))
    monkeypatch.setattr(own_run.records, "export_weights", lambda run_dir, folder: ({"folder": folder.name}, {}))
    run = own_run.latest(tmp_path)
    assert seen == ["version_0"] and run.record.trained_here and run.name == own_run.NAME
    own_run.latest(tmp_path, real=False)
    assert seen[-1] == "version_1"  # chapter 6 itself takes the run it just trained, whatever the data


@pytest.mark.parametrize(
    ("caps", "precision"),
    [
        (hardware.Capabilities("Tesla T4", (7, 5), 2), "16-mixed"),
        (hardware.Capabilities("Tesla V100-SXM2-16GB", (7, 0), 8), "16-mixed"),
        (hardware.Capabilities("NVIDIA A100-SXM4-40GB", (8, 0), 12), "bf16-mixed"),
        (hardware.Capabilities("NVIDIA H100 80GB HBM3", (9, 0), 16), "bf16-mixed"),
        (hardware.Capabilities(cpu_threads=2), "32-true"),
    ],
)
def test_chapter_6_trains_in_the_precision_and_compile_the_machine_decides(caps, precision, tmp_path):
    """The warm-up and the training run of chapter 6 pass hardware.choose()'s decision on: float16
    with loss scaling on a T4 or V100 (bf16 there is emulated), bf16 from compute capability 8.0."""
    path = hardware.choose(caps)
    args = own_run.run_spec("short_budget", REAL, path, tmp_path).argv()
    assert args[args.index("--trainer.precision") + 1] == precision
    assert args[args.index("--model.compile") + 1] == str(path.compile).lower()
