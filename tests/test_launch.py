"""vitlib.lab.results.launch: a run described once, its command line, and every planned run parsed by the
CLI before anything trains."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import gpu_run
from vitlib.lab.book import chapter, own_run
from vitlib.lab.results import ablation, grid, launch, options
from vitlib.schedule import ScheduleConfig
from vitlib.support import cifar, hardware

REPO = Path(__file__).resolve().parents[1]


def test_the_command_line_keeps_the_options_order_and_writes_values_as_the_cli_reads_them() -> None:
    spec = launch.RunSpec("configs/cpu.yaml", (("trainer.max_epochs", 3), ("data.mix", None), ("model.compile", False)),
                          launch.Data("data-q75"), "runs/x", extra=("--trainer.callbacks+={}",))  # fmt: skip
    assert spec.argv() == [
        "fit", "--config", "configs/cpu.yaml", "--trainer.max_epochs", "3", "--data.mix", "null", "--model.compile", "false",
        "--data.data_dir", "data-q75", "--data.verify_md5", "false", "--data.download", "false",
        "--trainer.callbacks+={}", "--trainer.default_root_dir", "runs/x",
    ]  # fmt: skip
    assert spec.command()[:3] == ["python", "-m", "vitlib"]
    assert spec.with_options(("ckpt_path", "a.ckpt")).argv()[9:11] == ["--ckpt_path", "a.ckpt"]
    # A float stays one: limit_train_batches 1.0 is every batch, 1 would be one batch.
    assert launch.RunSpec("c.yaml", (("trainer.limit_train_batches", 1.0),)).argv()[-1] == "1.0"
    assert launch.callback("a.B", x=1) == '--trainer.callbacks+={"class_path": "a.B", "init_args": {"x": 1}}'
    assert launch.Data(None).argv() == ["--data.quick", "true"]
    assert launch.Data("d", verify_md5=True, quick=False).argv()[:2] == ["--data.quick", "false"]
    with pytest.raises(ValueError, match="quick mode's synthetic data"):
        launch.Data(None, quick=False)


def test_check_refuses_a_key_the_cli_does_not_know(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    launch.check(launch.RunSpec("configs/cpu.yaml", (("trainer.max_epochs", 1),)))
    with pytest.raises(ValueError, match="does not parse: error: (?s:.*)Option 'half_cycle' is not accepted"):
        launch.check(launch.RunSpec("configs/cpu.yaml", (("model.schedule.half_cycle", 5),)))


def _planned() -> dict[str, launch.RunSpec]:
    """Every run the grid, the recipe study, the options study, chapter 6 and the GPU run would launch."""
    specs = {f"grid {run.name}": run.spec for run in grid.plan({}, grid.EPOCHS, "data-q75", "runs/grid")}
    for study in ablation.STUDIES.values():
        specs.update({f"study {study.epochs} {run.name}": run.spec for run in study.plan({}, study.epochs, "data-q75", study.logs)})
    specs.update({f"options {run.name}": run.spec for run in options.plan({}, options.EPOCHS, "data-q75", options.LOGS)})
    real = chapter.DataSource(cifar.DatasetId.Q75, Path("data-q75"), "q75")
    quick = chapter.DataSource(cifar.DatasetId.SYNTHETIC, None, "stripes")
    machines = {"cpu": hardware.Capabilities(cpu_threads=2), "h100": hardware.Capabilities("NVIDIA H100 80GB HBM3", (9, 0), 16)}
    for config in ablation.BUDGET_RECIPES.values():
        for source in (real, quick):
            for machine, caps in machines.items():
                spec = own_run.run_spec(config, source, hardware.choose(caps), Path("runs/book/recipe"))
                specs[f"chapter 6 {config} {source.dataset.name} {machine}"] = spec.with_options(("trainer.max_epochs", 30))
    for tiny in (False, True):
        fit, test = gpu_run.recipe_runs(Path("data"), True, Path("runs/gpu"), tiny, 40, ScheduleConfig(half_cycle_epochs=5.0), 1e9)
        specs.update({f"gpu run fit tiny={tiny}": fit, f"gpu run test tiny={tiny}": test})
    return specs


PLANNED = _planned()


@pytest.mark.parametrize("name", list(PLANNED))
def test_every_planned_run_parses_through_the_cli(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    launch.check(PLANNED[name])
