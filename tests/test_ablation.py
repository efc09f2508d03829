"""vitlib.lab.ablation and vitlib.lab.comparison: the recipe study's plan, commands, table, gaps and
crossings, and the runner that resumes a run cut short and records all its parts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from vitlib.cli import main as cli_main
from vitlib.lab import ablation, comparison

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
    runs = ablation.planned_runs()
    assert runs[: len(ablation.ARMS)] == [(arm, 0) for arm in ablation.ARMS]
    assert runs[len(ablation.ARMS) :] == [("recipe", 1), ("no-randaugment", 1)]
    assert set(ablation.COMPARISONS[ablation.HEADLINE]) == {"recipe", "no-randaugment"}


@pytest.mark.parametrize("arm", list(ablation.ARMS))
def test_each_arm_changes_exactly_one_thing(arm: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Every arm's command parses, validates on 5,000 held-out images, keeps two whole
    triangular cycles, and differs from the recipe's config in its one setting."""
    monkeypatch.chdir(REPO)

    def config(name: str, seed: int = 0) -> dict:
        with pytest.raises(SystemExit) as stop:
            cli_main([*ablation.fit_command(name, seed, 20, "data-q75", "runs/ablation")[3:], "--print_config"])
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
        ablation.fit_command("no-dropout", 0, 20, "data-q75", "runs")


def test_table_gaps_and_crossings(tmp_path: Path) -> None:
    assert "No run of the recipe study" in ablation.table(ablation.load(tmp_path))
    assert ablation.compare([], "RandAugment") is None and ablation.crossing([], "RandAugment") is None
    _record(tmp_path, "recipe", 0, [0.10, 0.20, 0.35, 0.50])
    _record(tmp_path, "no-randaugment", 0, [0.15, 0.30, 0.36, 0.45])  # ahead early, behind at the end
    _record(tmp_path, "no-mix", 0, [0.05, 0.10, 0.20, 0.30])  # behind at every epoch
    records = ablation.load(tmp_path)
    assert ablation.crossing(records, "RandAugment") == (
        "without RandAugment leads or ties up to epoch 2; the recipe is ahead from epoch 3 to the last, epoch 3 (seed 0)"
    )
    assert ablation.crossing(records, "CutMix / MixUp") == "the recipe is ahead of without CutMix / MixUp after every epoch (seed 0)"
    assert "one seed each" in ablation.compare(records, "RandAugment")
    assert ablation.compare(records, "triangular cyclical LR") is None
    assert ablation.verdict(records, "triangular cyclical LR") is None
    assert ablation.verdict(records, "CutMix / MixUp").startswith("after 4 epochs the study supports the long run's choice of CutMix / MixUp")
    _record(tmp_path / "worse", "recipe", 0, [0.10, 0.30])
    _record(tmp_path / "worse", "cosine", 0, [0.10, 0.40])
    assert ablation.verdict(ablation.load(tmp_path / "worse"), "triangular cyclical LR") == (
        "after 2 epochs the study contradicts the long run's choice of triangular cyclical LR: warm-up + cosine instead of "
        "triangular reaches 40.0 % held-out top-1, the recipe 30.0 % (one seed each, so the gap is not yet set against the seed-to-seed noise)"
    )

    _record(tmp_path, "recipe", 1, [0.1, 0.2, 0.3, 0.52])
    _record(tmp_path, "no-randaugment", 1, [0.1, 0.2, 0.3, 0.47])
    records = ablation.load(tmp_path)
    assert ablation.compare(records, "RandAugment").startswith(
        "the recipe: 51.0 ± 1.4 % (2 seeds) against without RandAugment: 46.0 ± 1.4 % (2 seeds), +5.0 points, 4 times"
    )
    assert ablation.verdict(records, "RandAugment").endswith("(more than twice the seed-to-seed standard deviation (1.4))")
    table = ablation.table(records)
    assert "| the recipe | 51.0 ± 1.4 % (2 seeds) | 50.0, 52.0 |" in table
    assert "| without CutMix / MixUp | 30.0 % (1 seed) |" in table and "20.0 %" in table  # its last train top-1
    curves = ablation.curves(records, "RandAugment")
    assert list(curves) == ["the recipe", "without RandAugment"] and len(curves["the recipe"]) == 2
    assert curves["the recipe"][1]["val/top1"][-1] == (3, 0.52)
    assert ablation.describe(records).startswith("5 recorded recipe-study runs (python -m vitlib.lab.ablation), 4 epochs each on CPU")


def test_the_command_line_lists_what_is_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(REPO)
    _record(tmp_path / "records", "recipe", 0, [0.3])
    ablation.main(["--data-dir", "configs", "--out", str(tmp_path / "records"), "--epochs", "12", "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and not any("recipe-seed0" in line for line in lines)
    assert all(line.startswith("python -m vitlib fit --config configs/cpu_long.yaml --trainer.max_epochs 12") for line in lines)


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
    assert comparison.resume_point(root) is None and comparison.finished_parts(root) is None
    first = _version(root, 0)
    assert comparison.resume_point(root) == first / "checkpoints" / "last.ckpt"
    _version(root, 1, ckpt_path=str(first / "checkpoints" / "last.ckpt"), checkpoint=False)
    assert comparison.resume_point(root) == first / "checkpoints" / "last.ckpt"
    for n in range(2, 10):
        _version(root, n, ckpt_path=str(first / "checkpoints" / "last.ckpt"), checkpoint=False)
    last = _version(root, 10, ckpt_path=str(first / "checkpoints" / "last.ckpt"), finished=True)
    assert comparison.run_folders(root)[-1] == last
    assert comparison.finished_parts(root) == [first, last] and comparison.resume_point(root) is None

    # train_and_record passes the checkpoint on and records the parts it finds.
    calls: dict[str, object] = {}
    monkeypatch.setattr(comparison.subprocess, "run", lambda cmd: calls.setdefault("command", cmd) and type("R", (), {"returncode": 0}))
    monkeypatch.setattr(
        comparison, "record_run",
        lambda parts, name, out, command, note, unfinished: calls.update(parts=parts, command_recorded=command, unfinished=unfinished),
    )  # fmt: skip
    fresh = tmp_path / "fresh"
    _version(fresh, 0)
    planned = comparison.PlannedRun("r", ("python", "-m", "vitlib", "fit", "--config", "c.yaml"), fresh)
    with pytest.raises(RuntimeError, match="before its last epoch, without writing metrics.json"):
        comparison.train_and_record(planned, tmp_path / "out")
    assert calls["command"] == [sys.executable, "-m", "vitlib", "fit", "--config", "c.yaml", "--ckpt_path", str(fresh / "vitlib/version_0/checkpoints/last.ckpt")]
    calls.clear()
    comparison.train_and_record(comparison.PlannedRun("r", planned.command, root), tmp_path / "out")
    assert calls["parts"] == [first, last] and calls["command_recorded"] == "python -m vitlib fit --config c.yaml"
    assert "command" not in calls and calls["unfinished"] is False  # finished, only its record was missing

    # Killed after validating its last epoch, before writing metrics.json: a resume would train
    # and validate nothing, so the runner records it from its metrics.csv instead.
    calls.clear()
    killed = tmp_path / "killed"
    folder = _version(killed, 0)
    (folder / "config.yaml").write_text(yaml.safe_dump({"ckpt_path": None, "trainer": {"max_epochs": 2}}))
    (folder / "metrics.csv").write_text("epoch,step,val/top1\n0,10,0.1\n")
    assert comparison.finished_parts(killed) is None and comparison.resume_point(killed) is not None  # one epoch left
    (folder / "metrics.csv").write_text("epoch,step,val/top1\n0,10,0.1\n1,20,0.2\n")
    assert comparison.finished_parts(killed) == [folder] and comparison.resume_point(killed) is None
    comparison.train_and_record(comparison.PlannedRun("k", planned.command, killed), tmp_path / "out")
    assert "command" not in calls and calls["parts"] == [folder] and calls["unfinished"] is True
