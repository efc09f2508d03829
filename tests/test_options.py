"""vitlib.lab.results.options: each option is the 100-epoch study's run of the long recipe, cut at
its first cycle, with one change; the reference is that run's own epoch, read from its record."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import yaml

from vitlib import cli
from vitlib.lab.results import ablation, options
from vitlib.lab.results.records import Record
from vitlib.schedule import ScheduleConfig, lr_trace

REPO = Path(__file__).resolve().parents[1]


def _long_run() -> ablation.RunSpec:
    return ablation.run_spec(options.base_arm(), options.SEED, ablation.LONG.epochs, "data-q75", "runs/x")


@pytest.mark.parametrize("option", list(options.OPTIONS))
def test_each_option_is_the_long_studys_run_stopped_at_a_cycles_end_with_one_change(option: str) -> None:
    spec = options.run_spec(option, options.SEED, options.EPOCHS, "data-q75", "runs/x")
    long = _long_run()
    expected = tuple((k, options.EPOCHS if k == "trainer.max_epochs" else v) for k, v in long.options) + options.OPTIONS[option][1]
    assert (spec.config, spec.data, spec.options) == (long.config, long.data, expected)
    assert spec.root == Path("runs/x") / f"{option}-seed0" != long.root
    # EPOCHS is a whole number of the long recipe's cycles: the run ends at the lowest rate.
    half_cycle = dict(spec.options)["model.schedule.half_cycle_epochs"]
    assert options.EPOCHS % (2 * half_cycle) == 0


def test_the_triangular_rate_of_the_first_epochs_does_not_depend_on_the_runs_length() -> None:
    """What makes the 100-epoch run the reference: its first 50 epochs had the rate a 50-epoch run has."""
    half = dict(_long_run().options)["model.schedule.half_cycle_epochs"]
    schedule = ScheduleConfig(**{**yaml.safe_load((REPO / ablation.RECIPE).read_text())["model"]["schedule"], "half_cycle_epochs": half})
    short, long = (lr_trace(schedule, 3, epochs) for epochs in (options.EPOCHS, ablation.LONG.epochs))
    assert short == long[: len(short)]
    assert short[0] == pytest.approx(schedule.base_lr) and max(short) == pytest.approx(schedule.max_lr, rel=0.02)


@pytest.mark.parametrize("option", list(options.OPTIONS))
def test_each_option_parses_and_changes_only_its_model_option(option: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)

    def parsed(spec: ablation.RunSpec) -> dict:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            cli.main([*spec.argv(), "--print_config"])
        return yaml.safe_load(out.getvalue())["model"]

    ours, long = parsed(options.run_spec(option, 0, options.EPOCHS, "data-q75", "runs/x")), parsed(_long_run())
    changed = {key.removeprefix("model.overrides."): value for key, value in options.OPTIONS[option][1]}
    for field, value in changed.items():
        assert ours["overrides"][field] == value != long["overrides"][field]
    unchanged = dict.fromkeys(changed)
    assert {**ours["overrides"], **unchanged} == {**long["overrides"], **unchanged}  # the rest merged, not replaced
    assert {**ours, "overrides": None} == {**long, "overrides": None}


def test_run_spec_refuses_an_unknown_option_and_a_length_past_the_reference() -> None:
    with pytest.raises(ValueError, match="unknown option 'wider'"):
        options.run_spec("wider", 0, 50, "d", "r")
    with pytest.raises(ValueError, match="between 1 and 100"):
        options.run_spec("seq-pool", 0, 101, "d", "r")


def _record(name: str, curve: list[float], planned: int, **extra: object) -> Record:
    return Record.from_json({
        "name": name, "command": "python -m vitlib fit ...", "commit": "abc", "hardware": "CPU", "date": "2026-12-08T10:00:00",
        "dataset": "CIFAR-100 (JPEG q75 copy)", "metrics": {"top1": curve[-1], "top5": curve[-1] + 0.2, "loss": 2.0},
        "epochs": len(curve), "trainer": {"max_epochs": planned}, "throughput": {"fit_wall_s": 600.0},
        "size": {"parameters": 517108, "flops_per_image": 73231104},
        "history": {"val/top1": [[e, v] for e, v in enumerate(curve)], "val/top5": [[e, v + 0.2] for e, v in enumerate(curve)]},
        **extra,
    })  # fmt: skip


def test_options_are_compared_with_the_long_run_at_their_own_last_epoch() -> None:
    # The long run is at 0.50 after 4 epochs and lower later (its second cycle's high rate): the
    # reference is epoch 3, not its last.
    long_study = [_record(ablation.run_name(options.base_arm(), 0), [0.2, 0.3, 0.4, 0.5, 0.45, 0.4], 100, stopped_early="stopped after 6 of 100 epochs")]
    records = [
        _record("seq-pool-seed0", [0.2, 0.3, 0.45, 0.56], 4),
        _record("cct-stem-seed0", [0.2, 0.3, 0.45, 0.51], 4),
        _record("drop-path-seed0", [0.2, 0.3], 4, stopped_early="stopped after 2 of 4 epochs"),
    ]
    base = options.reference(long_study, 4)
    assert base is not None and base.top1 == [50.0] and base.epoch == 3
    assert options.reference(long_study, 8) is None  # not got that far
    said = options.compare(records, long_study, noise=1.1)
    assert len(said) == 2  # the stopped option and the unrecorded one are not compared
    assert said[0].startswith("sequence pooling: 56.0 % (1 seed) against the recipe at epoch 3 of its 100-epoch run: 50.0 % (1 seed), +6.0 points, more than twice")
    assert "+1.0 points, within twice the seed-to-seed standard deviation of the 30-epoch study, 1.1 points" in said[1]
    table = options.table(records, long_study)
    assert "| the recipe at epoch 3 of its 100-epoch run | 50.0 % (1 seed) | 70.0 % | 0.517 | 73.2 |" in table
    assert "| stochastic depth 0.1, 2 of 4 (not finished) | 30.0 % (1 seed) |" in table
    assert options.table([], long_study).startswith("**No run of the options study is recorded.**")


def test_the_options_follow_the_long_budgets_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    assert options.base_arm() == ablation.arm_of(ablation.recipe_for(ablation.LONG.epochs))
    monkeypatch.setitem(ablation.BUDGET_RECIPES, "long", "short_budget")  # as if the study advised no mixing
    assert options.base_arm() == "no-mix"
    assert ("data.mix", None) in options.run_spec("seq-pool", 0, 50, "d", "r").options
    monkeypatch.setitem(ablation.BUDGET_RECIPES, "long", "cpu")
    with pytest.raises(ValueError, match="configs/cpu.yaml is no arm of the recipe study"):
        options.base_arm()
