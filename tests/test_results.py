"""vitlib.results: recording a finished run and rendering the results and benchmark tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vitlib import results


def _run_dir(tmp_path: Path, dataset: str = "CIFAR-100 at /data", **metrics: float) -> Path:
    run = tmp_path / "runs" / "vitlib" / "version_0"
    run.mkdir(parents=True)
    values = {"loss": 1.5, "top1": 0.61, "top5": 0.86, **metrics}
    payload = {
        "stage": "fit", "split": "val", "dataset": dataset, "images": "test set (used as the validation set)",
        **values, "samples": 10000, "epoch": 99, "global_step": 19500,
        "config": {"model": {"preset": "conv_vit"}, "trainer": {"max_epochs": 100, "precision": "bf16-mixed"}},
    }  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(payload))
    return run


def test_record_run_writes_everything_needed_to_trust_and_repeat_it(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, top1=0.6123)
    path = results.record_run(run, "conv-vit", tmp_path / "results", hardware="1 x Test GPU")
    record = json.loads(path.read_text())
    assert path == tmp_path / "results" / "conv-vit.json"
    assert set(results.REQUIRED) <= set(record)
    assert record["metrics"]["top1"] == 0.6123 and record["metrics"]["samples"] == 10000
    assert record["command"] == f"python -m vitlib fit --config {run / 'config.yaml'}"
    assert record["hardware"] == "1 x Test GPU"
    assert record["dataset"] == "CIFAR-100 at /data"
    assert record["model"]["preset"] == "conv_vit" and record["trainer"]["max_epochs"] == 100
    assert record["date"][:4].isdigit() and "T" in record["date"]
    assert record["commit"]  # a commit hash, or a statement that there is no git checkout
    assert [r["name"] for r in results.load_results(tmp_path / "results")] == ["conv-vit"]


def test_quick_mode_runs_are_not_results(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, dataset="synthetic data in the CIFAR-100 layout (quick mode)")
    with pytest.raises(ValueError, match="not a result"):
        results.record_run(run, "quick", tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_record_run_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        results.record_run(tmp_path, "x", tmp_path / "results")
    run = _run_dir(tmp_path)
    with pytest.raises(ValueError, match="plain file name"):
        results.record_run(run, "../escape", tmp_path / "results")


def test_cli_records_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run_dir(tmp_path)
    results.main([str(run), "--name", "ref", "--out", str(tmp_path / "out"), "--command", "python -m vitlib fit --config configs/reference.yaml"])
    assert "recorded" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "ref.json").read_text())["command"].endswith("reference.yaml")
    with pytest.raises(SystemExit) as exit_info:
        results.main([str(tmp_path / "nowhere"), "--name", "x"])
    assert exit_info.value.code == 2


def test_tables_say_plainly_when_nothing_is_recorded(tmp_path: Path) -> None:
    assert "No full training run is recorded" in results.accuracy_table(tmp_path / "none")
    assert "python -m vitlib fit --config configs/" in results.accuracy_table(tmp_path / "none")
    assert "No GPU benchmark is recorded" in results.benchmark_table(tmp_path / "none")


def test_accuracy_table_shows_recorded_runs(tmp_path: Path) -> None:
    results.record_run(_run_dir(tmp_path, top1=0.6123, top5=0.8765), "conv-vit", tmp_path / "results", hardware="GPU X")
    table = results.accuracy_table(tmp_path / "results")
    assert "conv-vit" in table and "61.23 %" in table and "87.65 %" in table and "GPU X" in table
    assert "| 100 |" in table  # epochs = last epoch index + 1


def test_benchmark_table_rows(tmp_path: Path) -> None:
    folder = tmp_path / "bench"
    folder.mkdir()
    row = {"name": "ours", "impl": "vitlib", "model": "vit", "default": True, "images_per_s": 12345.6,
           "epoch_s": 4.05, "mfu": 0.31, "peak_mem_gb": 3.2, "batch_size": 256, "precision": "bf16-mixed"}  # fmt: skip
    (folder / "h100-2026-01-01.json").write_text(
        json.dumps({"gpu": "NVIDIA H100", "torch": "2.14", "commit": "abc", "date": "2026-01-01", "rows": [row]})
    )
    table = results.benchmark_table(folder)
    assert "NVIDIA H100" in table and "12,346" in table and "bf16-mixed" in table
    (folder / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json"):
        results.load_benchmarks(folder)


def test_markdown_table_escapes_pipes() -> None:
    table = results.markdown_table([{"a": "x|y", "b": None}])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| x\\|y |  |"]
    with pytest.raises(ValueError):
        results.markdown_table([])
