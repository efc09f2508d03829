"""vitlib.lab.results.grid: which runs the stem x attention grid needs, its commands, its table and finding."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from vitlib import config
from vitlib.cli import main as cli_main
from vitlib.lab.results import grid

REPO = Path(__file__).resolve().parents[1]


def _record(folder: Path, stem: str, attention: str, seed: int, top1: float, **extra: object) -> None:
    """A results file as record_run writes it (only the fields the grid reads, plus the required ones)."""
    name = grid.run_name(stem, attention, seed)
    payload = {
        "name": name, "command": "python -m vitlib fit ...", "commit": "abc", "hardware": "CPU", "date": f"2026-12-02T1{seed}:00:00",
        "dataset": "CIFAR-100 (JPEG q75 copy)", "metrics": {"top1": top1, "top5": top1 + 0.3, "loss": 2.0}, "epochs": 4,
        "size": {"parameters": 500_000, "flops_per_image": 40_000_000},
        "throughput": {"fit_wall_s": 600.0, "fit_images_per_s": 400.0, "bare_step_images_per_s": 420.0},
        **extra,
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(payload))


def _six(folder: Path, best: tuple[str, str]) -> None:
    for i, (stem, attention) in enumerate(grid.CELLS):
        _record(folder, stem, attention, 0, 0.40 if (stem, attention) == best else 0.30 + 0.01 * i)


def test_the_plan_adds_the_best_cells_repeats_once_all_six_are_in(tmp_path: Path) -> None:
    assert len(grid.CELLS) == 6 and grid.BASELINE in grid.CELLS
    first = grid.planned_runs({})
    assert first == [(*cell, 0) for cell in grid.CELLS] + [("patch", "mhsa", 1), ("patch", "mhsa", 2)]
    assert grid.best_cell({}) is None

    _six(tmp_path / "a", best=("spt", "lsa"))
    records = grid._records(tmp_path / "a")
    assert grid.best_cell(records) == ("spt", "lsa")
    assert grid.planned_runs(records)[-2:] == [("spt", "lsa", 1), ("spt", "lsa", 2)]

    _six(tmp_path / "b", best=grid.BASELINE)  # the baseline wins: its repeats are all there is
    assert len(grid.planned_runs(grid._records(tmp_path / "b"))) == 8


def test_a_stem_or_attention_added_to_the_library_leaves_the_grid_as_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    """grid.py run afresh (a separate module) while the config names one stem and one attention more."""
    monkeypatch.setattr(config, "STEMS", (*config.STEMS, "linear"))
    monkeypatch.setattr(config, "ATTENTIONS", (*config.ATTENTIONS, "linear"))
    spec = importlib.util.spec_from_file_location("vitlib.lab.results._grid_probe", grid.__file__)
    fresh = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, fresh)  # its dataclasses look their module up there
    spec.loader.exec_module(fresh)
    assert fresh.CELLS == grid.CELLS and fresh.planned_runs({}) == grid.planned_runs({})


def test_the_cells_are_the_recorded_ones() -> None:
    """Exactly the cells recorded in results/grid/ (test_recorded_runs checks each record against its name)."""
    recorded = {name.rsplit("-seed", 1)[0] for name in grid._records(REPO / grid.FOLDER)}
    assert recorded == {f"{stem}-{attention}" for stem, attention in grid.CELLS}


def test_a_grid_command_is_one_the_cli_accepts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    command = grid.run_spec("spt", "lsa", 2, 3, "data-q75", "runs/grid").command()
    assert command[:6] == ["python", "-m", "vitlib", "fit", "--config", grid.RECIPE]
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as stop:
        cli_main([*command[3:], "--print_config"])
    assert stop.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["overrides"]["stem"] == "spt" and config["model"]["overrides"]["attention"] == "lsa"
    assert config["model"]["overrides"]["dim"] == 96  # the rest of the CPU recipe's trunk stays
    assert config["seed_everything"] == 2 and config["trainer"]["max_epochs"] == 3
    assert config["trainer"]["default_root_dir"] == "runs/grid/spt-lsa-seed2"


def test_table_and_finding_report_mean_and_spread_over_seeds(tmp_path: Path) -> None:
    assert "No grid run is recorded" in grid.grid_table(grid.load(tmp_path))
    _six(tmp_path, best=("conv", "mhsa"))
    assert grid.finding(grid.load(tmp_path)) is None  # no repeats yet: no claim
    for seed, top1 in ((1, 0.32), (2, 0.31)):
        _record(tmp_path, "patch", "mhsa", seed, top1)
    for seed, top1 in ((1, 0.41), (2, 0.39)):
        _record(tmp_path, "conv", "mhsa", seed, top1)
    found = {(c.stem, c.attention): c for c in grid.cells(grid.load(tmp_path))}
    assert found["patch", "mhsa"].top1 == pytest.approx([30.0, 32.0, 31.0])
    assert found["patch", "mhsa"].describe() == "31.0 ± 1.0 % (3 seeds)"
    assert found["conv", "lsa"].describe().endswith("(1 seed)")
    table = grid.grid_table(grid.load(tmp_path))
    assert "conv stem + MHSA" in table and "40.0 ± 1.0 % (3 seeds)" in table and "0.500" in table and "40.0" in table
    matrix = grid.matrix_table(grid.load(tmp_path))
    assert "| SPT | " in matrix and "MHSA" in matrix.splitlines()[0] and "40.0 ± 1.0 % (3 seeds)" in matrix
    sentence = grid.finding(grid.load(tmp_path))
    assert "conv stem + MHSA: 40.0 ± 1.0 % (3 seeds) against patch + MHSA: 31.0 ± 1.0 % (3 seeds), +9.0 points, more than twice" in sentence
    assert "one seed each" in grid.compare(grid.load(tmp_path), ("spt", "lsa"), ("conv", "lsa"))
    assert grid.compare(grid.load(tmp_path / "none"), ("spt", "lsa"), grid.BASELINE) is None
    assert grid.describe(grid.load(tmp_path)).startswith("10 recorded grid runs (python -m vitlib.lab.results.grid), 4 epochs each on CPU")

    _record(tmp_path, "conv", "mhsa", 2, 0.30)  # now conv's seeds spread widely: no clear gap
    assert "within twice the larger seed-to-seed standard deviation of the two, 6.1 points" in grid.finding(grid.load(tmp_path))


def test_the_command_line_lists_what_is_left_and_checks_its_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(REPO)
    _record(tmp_path / "records", "patch", "mhsa", 0, 0.3)
    grid.main(["--data-dir", "configs", "--out", str(tmp_path / "records"), "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7 and not any("patch-mhsa-seed0" in line for line in lines)
    assert all(line.startswith("python -m vitlib fit --config configs/cpu.yaml") for line in lines)
    with pytest.raises(SystemExit) as stop:
        grid.main(["--data-dir", str(tmp_path / "missing")])
    assert stop.value.code == 2 and "--data-dir" in capsys.readouterr().err
