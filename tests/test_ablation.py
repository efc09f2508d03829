"""vitlib.lab.results.ablation and vitlib.lab.results.comparison: the recipe study's plan, commands, table, gaps and
crossings, and the runner that resumes a run cut short and records all its parts."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

from vitlib.cli import main as cli_main
from vitlib.lab.results import ablation, comparison, launch
from vitlib.support import run_folder

REPO = Path(__file__).resolve().parents[1]


def _record(folder: Path, arm: str, seed: int, curve: list[float], **extra: object) -> None:
    """A results file as record_run writes it: held-out top-1 per epoch ``curve``, the last one final."""
    name = ablation.run_name(arm, seed)
    payload = {
        "name": name, "command": "python -m vitlib fit ...", "commit": "abc", "hardware": "CPU", "date": f"2026-12-03T1{seed}:00:00",
        "dataset": "CIFAR-100 (JPEG q75 copy)", "metrics": {"top1": curve[-1], "top5": curve[-1] + 0.25, "loss": 2.0},
        "epochs": len(curve), "throughput": {"fit_wall_s": 3000.0},
        "history": {"val/top1": [[e, v] for e, v in enumerate(curve)], "train/top1": [[e, v - 0.1] for e, v in enumerate(curve)]},
        **extra,
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(payload))


def test_the_plan_is_every_arm_once_and_the_headline_twice() -> None:
    runs = ablation.SHORT.runs
    assert runs[: len(ablation.ARMS)] == tuple((arm, 0) for arm in ablation.ARMS)
    assert runs[len(ablation.ARMS) :] == (("recipe", 1), ("no-randaugment", 1))
    assert set(ablation.COMPARISONS[ablation.HEADLINE]) == {"recipe", "no-randaugment"}


def test_the_long_study_trains_the_recipe_first_and_its_augmentation_arms_at_the_long_runs_length() -> None:
    long = ablation.STUDIES[100]
    assert long.runs == (("recipe", 0), ("no-mix", 0), ("no-randaugment", 0))
    assert long.folder != ablation.SHORT.folder and long.logs != ablation.SHORT.logs
    command = long.plan({}, long.epochs, "data-q75", long.logs)[0].spec.argv()
    recipe = yaml.safe_load((REPO / ablation.RECIPE).read_text())
    # The long run's own length and cycles: 100 epochs, two cycles of 2 x 25.
    assert recipe["trainer"]["max_epochs"] == long.epochs
    half_cycle = command[command.index("--model.schedule.half_cycle_epochs") + 1]
    assert float(half_cycle) == recipe["model"]["schedule"]["half_cycle_epochs"]


@pytest.mark.parametrize("arm", list(ablation.ARMS))
def test_each_arm_changes_exactly_one_thing(arm: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Every arm's command parses, validates on 5,000 held-out images, keeps two whole
    triangular cycles, and differs from the recipe's config in its one setting."""
    monkeypatch.chdir(REPO)

    def config(name: str, seed: int = 0) -> dict:
        with pytest.raises(SystemExit) as stop:
            cli_main([*ablation.run_spec(name, seed, 20, "data-q75", "runs/ablation").argv(), "--print_config"])
        assert stop.value.code == 0
        return yaml.safe_load(capsys.readouterr().out)

    recipe, changed = config("recipe"), config(arm)
    assert recipe["data"]["val_split"] == 5000 and recipe["trainer"]["max_epochs"] == 20
    assert recipe["model"]["schedule"]["half_cycle_epochs"] == 5  # 20 epochs = two cycles
    assert recipe["data"]["augment"]["randaugment"] and recipe["data"]["mix"]["prob"] == 1.0
    differences = {
        f"{section}.{key}"
        for section in ("model", "data")
        for key in set(recipe[section]) | set(changed[section])
        if recipe[section].get(key) != changed[section].get(key)
    }
    expected = {"recipe": set(), "no-randaugment": {"data.augment"}, "no-mix": {"data.mix"}, "cosine": {"model.schedule"}}
    assert differences == expected[arm]
    if arm == "cosine":
        assert changed["model"]["schedule"]["max_lr"] == recipe["model"]["schedule"]["max_lr"]
    assert config(arm, 1)["seed_everything"] == 1
    with pytest.raises(ValueError, match="unknown arm"):
        ablation.run_spec("no-dropout", 0, 20, "data-q75", "runs")


def test_table_gaps_and_crossings(tmp_path: Path) -> None:
    assert "No run of the recipe study" in ablation.table(ablation.load(tmp_path))
    assert ablation.compare([], "RandAugment") is None and ablation.crossing([], "RandAugment") is None
    _record(tmp_path, "recipe", 0, [0.10, 0.20, 0.35, 0.50])
    _record(tmp_path, "no-randaugment", 0, [0.15, 0.30, 0.36, 0.45])  # ahead early, behind at the end
    _record(tmp_path, "no-mix", 0, [0.05, 0.10, 0.20, 0.30])  # behind at every epoch
    records = ablation.load(tmp_path)
    assert ablation.crossing(records, "RandAugment") == "without RandAugment leads at epochs 0–2, the recipe at epoch 3 (seed 0)"
    assert ablation.crossing(records, "CutMix / MixUp") == "the recipe leads without CutMix / MixUp at every epoch, 0–3 (seed 0)"
    assert "one seed each" in ablation.compare(records, "RandAugment")
    assert ablation.compare(records, "triangular cyclical LR") is None
    assert ablation.verdict(records, "triangular cyclical LR") is None
    # One seed each: no verdict without a noise to set the gap against; with one, a clear gap decides.
    assert ablation.verdict(records, "CutMix / MixUp") == (
        "after 4 epochs the study does not settle the long run's choice of CutMix / MixUp: with it 50.0 %, without "
        "CutMix / MixUp 30.0 % held-out top-1 (one seed each, so the seed-to-seed spread is not known)"
    )
    assert ablation.verdict(records, "CutMix / MixUp", noise=1.0) == (
        "after 4 epochs the study supports the long run's choice of CutMix / MixUp: with it 50.0 %, without CutMix / MixUp "
        "30.0 % held-out top-1"
    )
    assert ablation.compare(records, "CutMix / MixUp", noise=1.0).endswith(
        "+20.0 points, more than twice the seed-to-seed standard deviation of the 30-epoch study, 1.0 points"
    )
    assert ablation.verdict(records, "RandAugment", noise=4.0).endswith("(within twice the seed-to-seed standard deviation of the 30-epoch study, 4.0 points)")
    _record(tmp_path / "worse", "recipe", 0, [0.10, 0.30])
    _record(tmp_path / "worse", "cosine", 0, [0.10, 0.40])
    assert ablation.verdict(ablation.load(tmp_path / "worse"), "triangular cyclical LR", noise=1.0) == (
        "after 2 epochs the study contradicts the long run's choice of triangular cyclical LR: with it 30.0 %, warm-up + "
        "cosine instead of triangular 40.0 % held-out top-1"
    )

    _record(tmp_path, "recipe", 1, [0.1, 0.2, 0.3, 0.52])
    _record(tmp_path, "no-randaugment", 1, [0.1, 0.2, 0.3, 0.47])
    records = ablation.load(tmp_path)
    assert ablation.compare(records, "RandAugment").startswith(
        "the recipe: 51.0 ± 1.4 % (2 seeds) against without RandAugment: 46.0 ± 1.4 % (2 seeds), +5.0 points, more than twice"
    )
    # Their own spread wins over a borrowed noise.
    assert ablation.verdict(records, "RandAugment", noise=9.0).startswith("after 4 epochs the study supports the long run's choice of RandAugment")
    table = ablation.table(records)
    assert "| the recipe | 51.0 ± 1.4 % (2 seeds) | 50.0, 52.0 |" in table
    assert "| without CutMix / MixUp | 30.0 % (1 seed) |" in table and "20.0 %" in table  # its last train top-1
    curves = ablation.curves(records, "RandAugment")
    assert list(curves) == ["the recipe", "without RandAugment"] and len(curves["the recipe"]) == 2
    assert curves["the recipe"][1]["val/top1"][-1] == (3, 0.52)
    assert ablation.describe(records).startswith("5 recorded recipe-study runs (python -m vitlib.lab.results.ablation), 4 epochs each on CPU")


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # no crossing
        ([1, 2, 3], [0, 1, 2], "A leads B at every epoch, 0–2"),
        ([0, 1, 2], [1, 2, 3], "B leads A at every epoch, 0–2"),
        # one crossing
        ([0, 1, 3, 4], [1, 2, 2, 3], "B leads at epochs 0–1, A at epochs 2–3"),
        # several crossings, and ties
        ([5, 1, 5, 5, 1, 5, 2, 2], [1, 5, 1, 1, 5, 1, 2, 1], "A leads at epochs 0, 2–3, 5 and 7, B at epochs 1 and 4; tied at epoch 6"),
        ([1, 1], [1, 1], "tied at epochs 0–1"),
    ],
)
def test_leads_names_every_crossing(a: list[float], b: list[float], expected: str) -> None:
    assert comparison.leads("A", dict(enumerate(a)), "B", dict(enumerate(b))) == expected


def test_leads_reads_only_the_epochs_both_curves_have() -> None:
    assert comparison.leads("A", {0: 1, 1: 1, 2: 9}, "B", {1: 0, 2: 0}) == "A leads B at every epoch, 1–2"
    with pytest.raises(ValueError, match="no epoch in common"):
        comparison.leads("A", {0: 1}, "B", {1: 1})


def test_runs_recorded_before_their_end_are_told_as_not_finished(tmp_path: Path) -> None:
    """A long study in progress: the table and the sentences say how far each run got, compare
    them at the last epoch both reached, and draw no verdict."""
    stopped = {"stopped_early": "stopped after 3 of 100 epochs", "trainer": {"max_epochs": 100}}
    _record(tmp_path, "recipe", 0, [0.10, 0.20, 0.30], **stopped)
    _record(tmp_path, "no-mix", 0, [0.15, 0.25], **{**stopped, "stopped_early": "stopped after 2 of 100 epochs"})
    records = ablation.load(tmp_path)
    assert ablation.compare(records, "CutMix / MixUp") is None and ablation.verdict(records, "CutMix / MixUp") is None
    assert ablation.so_far(records, "CutMix / MixUp") == (
        "not finished: the recipe after 3 of 100 epochs, without CutMix / MixUp after 2 of 100; "
        "at epoch 1 (counted from 0), the last both reached, the recipe 20.0 % against 25.0 % held-out top-1 (-5.0 points, seed 0)"
    )
    assert ablation.crossing(records, "CutMix / MixUp") == "without CutMix / MixUp leads the recipe at every epoch, 0–1 (seed 0)"
    assert "| 3 of 100 (not finished) |" in ablation.table(records)
    assert ", 2 to 3 epochs on CPU" in ablation.describe(records)
    # Finished runs have no "so far".
    _record(tmp_path / "done", "recipe", 0, [0.1, 0.2])
    _record(tmp_path / "done", "no-mix", 0, [0.1, 0.3])
    done = ablation.load(tmp_path / "done")
    assert ablation.so_far(done, "CutMix / MixUp") is None and ablation.verdict(done, "CutMix / MixUp") is not None


def test_the_command_line_lists_what_is_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(REPO)
    out = tmp_path / "records"
    _record(out, "recipe", 0, [0.3])
    ablation.main(["--data-dir", "configs", "--out", str(out), "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and not any("recipe-seed0" in line for line in lines)
    assert all(line.startswith("python -m vitlib fit --config configs/cpu_long.yaml --trainer.max_epochs 30") for line in lines)
    # --epochs picks the long study: its own runs, written under its own folder.
    ablation.main(["--data-dir", "configs", "--out", str(out), "--epochs", "100", "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("--trainer.default_root_dir ")[1] for line in lines] == ["runs/ablation-100/no-mix-seed0", "runs/ablation-100/no-randaugment-seed0"]
    assert all("--trainer.max_epochs 100 " in line for line in lines)
    # --only one run; a run recorded before its end is still to train.
    _record(out, "no-mix", 0, [0.3], stopped_early="stopped after 1 of 100 epochs")
    ablation.main(["--data-dir", "configs", "--out", str(out), "--epochs", "100", "--only", "no-mix-seed0", "--dry-run"])
    assert [line.split()[-1] for line in capsys.readouterr().out.splitlines()] == ["runs/ablation-100/no-mix-seed0"]
    for wrong, message in ((["--epochs", "12"], "invalid choice: 12"), (["--only", "nope"], "no planned run is named 'nope'")):
        with pytest.raises(SystemExit) as stop:
            ablation.main(["--data-dir", "configs", "--out", str(out), *wrong, "--dry-run"])
        assert stop.value.code == 2 and message in capsys.readouterr().err


def _version(root: Path, n: int, ckpt_path: str | None = None, finished: bool = False, checkpoint: bool = True) -> Path:
    folder = root / "vitlib" / f"version_{n}"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"ckpt_path": ckpt_path}))
    if checkpoint:
        (folder / "checkpoints" / "last.ckpt").write_bytes(b"x")
    if finished:
        (folder / "metrics.json").write_text("{}")
    return folder


def test_the_runner_resumes_from_the_newest_checkpoint_and_follows_the_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """version_0 was cut short, version_1 resumed from it and died before its first checkpoint,
    version_2 resumed from version_0 again; version_10 sorts after version_2 (numbers, not text)."""
    root = tmp_path / "run"
    assert run_folder.resume_point(root) is None and run_folder.finished_parts(root) is None
    first = _version(root, 0)
    assert run_folder.resume_point(root) == first / "checkpoints" / "last.ckpt"
    _version(root, 1, ckpt_path=str(first / "checkpoints" / "last.ckpt"), checkpoint=False)
    assert run_folder.resume_point(root) == first / "checkpoints" / "last.ckpt"
    for n in range(2, 10):
        _version(root, n, ckpt_path=str(first / "checkpoints" / "last.ckpt"), checkpoint=False)
    last = _version(root, 10, ckpt_path=str(first / "checkpoints" / "last.ckpt"), finished=True)
    assert run_folder.run_folders(root)[-1] == last
    assert run_folder.finished_parts(root) == [first, last] and run_folder.resume_point(root) is None

    # train_and_record passes the checkpoint on and records the parts it finds.
    calls: dict[str, object] = {}
    monkeypatch.setattr(launch.subprocess, "run", lambda cmd, **_: calls.setdefault("command", cmd) and type("R", (), {"returncode": 0}))
    monkeypatch.setattr(
        comparison, "record_run",
        lambda parts, name, out, command, note, unfinished: calls.update(parts=parts, command_recorded=command, unfinished=unfinished),
    )  # fmt: skip
    fresh = tmp_path / "fresh"
    _version(fresh, 0)
    planned = comparison.PlannedRun("r", launch.RunSpec("c.yaml", root=fresh))
    with pytest.raises(RuntimeError, match="before its last epoch, without writing metrics.json"):
        comparison.train_and_record(planned, tmp_path / "out")
    ckpt = str(fresh / "vitlib/version_0/checkpoints/last.ckpt")
    assert calls["command"] == [sys.executable, "-m", "vitlib", "fit", "--config", "c.yaml", "--ckpt_path", ckpt, "--trainer.default_root_dir", str(fresh)]
    calls.clear()
    comparison.train_and_record(comparison.PlannedRun("r", launch.RunSpec("c.yaml", root=root)), tmp_path / "out")
    assert calls["parts"] == [first, last] and calls["command_recorded"] == f"python -m vitlib fit --config c.yaml --trainer.default_root_dir {root}"
    assert "command" not in calls and calls["unfinished"] is False  # finished, only its record was missing

    # Killed after validating its last epoch, before writing metrics.json: a resume would train
    # and validate nothing, so the runner records it from its metrics.csv instead.
    calls.clear()
    killed = tmp_path / "killed"
    folder = _version(killed, 0)
    (folder / "config.yaml").write_text(yaml.safe_dump({"ckpt_path": None, "trainer": {"max_epochs": 2}}))
    (folder / "metrics.csv").write_text("epoch,step,val/top1\n0,10,0.1\n")
    assert run_folder.finished_parts(killed) is None and run_folder.resume_point(killed) is not None  # one epoch left
    (folder / "metrics.csv").write_text("epoch,step,val/top1\n0,10,0.1\n1,20,0.2\n")
    assert run_folder.finished_parts(killed) == [folder] and run_folder.resume_point(killed) is None
    comparison.train_and_record(comparison.PlannedRun("k", launch.RunSpec("c.yaml", root=killed)), tmp_path / "out")
    assert "command" not in calls and calls["parts"] == [folder] and calls["unfinished"] is True


def test_a_stopped_run_resumes_from_its_newest_folder_and_records_as_far_as_it_got(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The newest checkpoint is the newest folder's, whatever the files' times say (a clone of the
    repository sets them all to the time of the clone)."""
    root = tmp_path / "run"
    first = _version(root, 0)
    second = _version(root, 1, ckpt_path=str(first / "checkpoints" / "last.ckpt"))
    later = time.time() + 100
    os.utime(first / "checkpoints" / "last.ckpt", (later, later))
    assert run_folder.resume_point(root) == second / "checkpoints" / "last.ckpt"
    assert run_folder.stopped_parts(root) is None  # no epoch validated yet: nothing to record
    (second / "metrics.csv").write_text("epoch,step,val/top1\n3,10,0.1\n")
    assert run_folder.stopped_parts(root) == [first, second]

    calls: dict[str, object] = {}
    monkeypatch.setattr(comparison, "record_run", lambda parts, name, out, command, note, unfinished: calls.update(parts=parts, unfinished=unfinished))
    comparison.record_stopped(comparison.PlannedRun("r", launch.RunSpec("c.yaml", root=root)), tmp_path / "out")
    assert calls == {"parts": [first, second], "unfinished": True}
    assert comparison.record_stopped(comparison.PlannedRun("r", launch.RunSpec("c.yaml", root=tmp_path / "none")), tmp_path / "out") is None


def test_the_budget_picks_the_recipe_at_the_boundary() -> None:
    edge = ablation.SHORT_BUDGET_EPOCHS
    assert ablation.recipe_for(1) == ablation.recipe_for(30) == ablation.recipe_for(edge) == "short_budget"
    assert ablation.recipe_for(edge + 1) == ablation.recipe_for(100) == "cpu_long"
    for wrong in (0, -3, 2.5, None):
        with pytest.raises(ValueError, match="epochs must be a whole number"):
            ablation.recipe_for(wrong)  # type: ignore[arg-type]


def test_the_short_budget_recipe_is_the_long_one_without_mixing_at_the_short_studys_length() -> None:
    """configs/short_budget.yaml is exactly the short study's best arm: the recipe without CutMix /
    MixUp, 30 epochs of two triangular cycles; nothing else may drift from configs/cpu_long.yaml."""
    short, long = (yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text()) for name in ablation.BUDGET_RECIPES.values())
    assert short["data"]["mix"] is None and long["data"]["mix"]["prob"] == 1.0
    assert short["trainer"]["max_epochs"] == ablation.SHORT.epochs
    assert short["model"]["schedule"]["half_cycle_epochs"] == ablation.SHORT.epochs / 4
    for config in (short, long):
        del config["data"]["mix"], config["trainer"]["max_epochs"], config["model"]["schedule"]["half_cycle_epochs"]
    assert short == long


def test_what_a_comparison_means_for_a_reader(tmp_path: Path) -> None:
    """helps / hurts / no clear difference against twice the noise; the long study's single seeds
    borrow the short study's spread; runs in progress give no advice."""
    _record(tmp_path, "recipe", 0, [0.40])
    _record(tmp_path, "recipe", 1, [0.42])  # spread 1.4 points
    _record(tmp_path, "no-randaugment", 0, [0.45])
    _record(tmp_path, "no-mix", 0, [0.425])
    records = ablation.load(tmp_path)
    assert ablation.seed_noise(records) == pytest.approx(1.414, abs=1e-3)
    assert ablation.effect(records, "RandAugment").startswith(
        "1 epochs, RandAugment hurts: the recipe 41.0 ± 1.4 % (2 seeds), without RandAugment 45.0 % (1 seed) held-out top-1, "
        "-4.0 points for RandAugment (more than twice the seed-to-seed standard deviation of the one trained with several seeds, 1.4 points)"
    )
    assert ablation.effect(records, "CutMix / MixUp").startswith("1 epochs, CutMix / MixUp makes no clear difference")
    assert ablation.effect(records, "triangular cyclical LR") is None

    long = tmp_path / "long"
    _record(long, "recipe", 0, [0.50])
    _record(long, "no-mix", 0, [0.47])
    assert ablation.seed_noise(ablation.load(long)) is None
    assert "CutMix / MixUp helps" in ablation.effect(ablation.load(long), "CutMix / MixUp", noise=1.4)
    assert "(more than twice the seed-to-seed standard deviation of the 30-epoch study, 1.4 points)" in ablation.effect(ablation.load(long), "CutMix / MixUp", noise=1.4)
    assert "CutMix / MixUp is not settled: " in ablation.effect(ablation.load(long), "CutMix / MixUp")
    assert ablation.effect(ablation.load(long), "CutMix / MixUp").endswith("(one seed each, so the seed-to-seed spread is not known)")
    _record(long, "no-mix", 0, [0.47], stopped_early="stopped after 1 of 100 epochs", trainer={"max_epochs": 100})
    assert ablation.effect(ablation.load(long), "CutMix / MixUp", noise=1.4).startswith("1 epochs, CutMix / MixUp: not measured yet, the runs are not finished")


def test_the_budget_recipes_are_described_from_the_configs_and_say_while_the_long_study_is_unfinished(tmp_path: Path) -> None:
    said = (
        f"up to {ablation.SHORT_BUDGET_EPOCHS} epochs, `configs/short_budget.yaml` (with RandAugment, without CutMix / MixUp); "
        "beyond, `configs/cpu_long.yaml` (with RandAugment and CutMix / MixUp) (`vitlib.lab.results.ablation.recipe_for`)"
    )
    assert ablation.budget_recipes() == f"{said}; the long budget's recipe is not the 100-epoch study's answer yet: 0 of its 3 runs are recorded to their end"
    full = {"trainer": {"max_epochs": 100}}
    _record(tmp_path, "recipe", 0, [0.5] * 100, **full)
    _record(tmp_path, "no-mix", 0, [0.51] * 100, **full)
    _record(tmp_path, "no-randaugment", 0, [0.4] * 7, stopped_early="stopped after 7 of 100 epochs", **full)
    assert ablation.budget_recipes(ablation.load(tmp_path), 1.1).endswith(": 2 of its 3 runs are recorded to their end")
    _record(tmp_path, "no-randaugment", 0, [0.4] * 100, **full)
    assert ablation.budget_recipes(ablation.load(tmp_path), 1.1) == said


def test_a_comparison_the_study_plans_but_has_not_recorded_says_so(tmp_path: Path) -> None:
    full = {"trainer": {"max_epochs": 100}}
    _record(tmp_path, "recipe", 0, [0.5] * 100, **full)
    _record(tmp_path, "no-mix", 0, [0.51] * 100, **full)
    records = ablation.load(tmp_path)
    assert ablation.effect(records, "RandAugment") == "100 epochs, RandAugment: not measured yet (without RandAugment: not recorded yet)"
    assert ablation.effect(records, "triangular cyclical LR") is None  # not planned at 100 epochs


def test_one_rule_judges_every_gap_against_twice_the_seed_noise(make_record) -> None:
    def arm(name: str, *top1: float) -> ablation.Arm:
        return ablation.Arm(name, tuple(make_record(name=f"{name}-seed{i}", metrics={"top1": t}) for i, t in enumerate(top1)))

    steady, shaky, single = arm("recipe", 0.50, 0.51), arm("no-mix", 0.40, 0.46), arm("no-mix", 0.47)
    clear = comparison.gap(steady, arm("no-mix", 0.45, 0.46))  # 5 points against a spread of 0.7
    assert clear.points == pytest.approx(5.0) and clear.clear and not clear.borrowed
    assert comparison.gap(steady, shaky).clear is False  # 7.5 points, but a spread of 4.2
    assert comparison.gap(steady, single).clear is True  # the one group with seeds gives the noise
    alone = comparison.gap(arm("recipe", 0.50), single)
    assert alone.clear is None and comparison.gap(arm("recipe", 0.50), single, noise=1.0).borrowed
    assert comparison.gap(arm("recipe", 0.50), single, noise=2.0).clear is False


def test_the_arms_a_reader_may_pick_are_the_best_and_those_within_the_noise_of_it(tmp_path: Path) -> None:
    study = ablation.Study(1, (("recipe", 0), ("recipe", 1), ("no-mix", 0), ("no-randaugment", 0)), str(tmp_path), "runs")
    _record(tmp_path, "recipe", 0, [0.40])
    _record(tmp_path, "recipe", 1, [0.42])  # 41.0 ± 1.4
    _record(tmp_path, "no-mix", 0, [0.45])
    assert ablation.best_arms(ablation.load(tmp_path), study) == []  # an arm is missing
    _record(tmp_path, "no-randaugment", 0, [0.43], stopped_early="stopped after 1 of 2 epochs", trainer={"max_epochs": 2})
    assert ablation.best_arms(ablation.load(tmp_path), study) == []  # an arm is unfinished
    _record(tmp_path, "no-randaugment", 0, [0.43])
    records = ablation.load(tmp_path)
    # no-mix leads; no-randaugment is 2 points behind with no spread of either's own: within twice
    # a borrowed 1.5, beyond twice 0.5, unknown without one; the recipe's own spread (1.4) puts it 4 points
    # behind, beyond twice, whatever is borrowed.
    assert ablation.best_arms(records, study, noise=1.5) == ["no-mix", "no-randaugment"]
    assert ablation.best_arms(records, study, noise=0.5) == ["no-mix"]
    assert ablation.best_arms(records, study) == ["no-mix"]


def test_arm_of_names_the_arm_a_config_trains_whatever_its_length() -> None:
    assert ablation.arm_of(ablation.RECIPE_NAME) == "recipe"
    assert ablation.arm_of("short_budget") == "no-mix"  # 30 epochs, two cycles of 2 x 7.5: the same arm
    assert ablation.arm_of("cpu") is None  # another model and schedule
    with pytest.raises(ValueError, match="no configs/nope.yaml"):
        ablation.arm_of("nope")


@pytest.mark.parametrize("budget", sorted(ablation.BUDGET_RECIPES))
def test_each_budgets_recipe_is_an_arm_the_study_at_its_length_lets_a_reader_pick(budget: str) -> None:
    """The advice follows the held-out records: the config a budget gets is the recipe with the
    changes of one of the study's best arms at that length (:func:`ablation.best_arms`, against the
    30-epoch study's seed spread), apart from the length and the schedule fitted to it."""
    study = {"short": ablation.SHORT, "long": ablation.LONG}[budget]
    records = ablation.load(REPO / study.folder)
    best = ablation.best_arms(records, study, ablation.seed_noise(ablation.load(REPO / ablation.SHORT.folder)))
    if not best:
        pytest.skip(f"the {study.epochs}-epoch study is not recorded to its end in {study.folder}")

    picked = ablation.arm_of(ablation.BUDGET_RECIPES[budget])
    assert picked in best, f"configs/{ablation.BUDGET_RECIPES[budget]}.yaml is the arm {picked}; the study's best at {study.epochs} epochs: {best}"
