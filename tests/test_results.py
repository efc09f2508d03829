"""vitlib.lab.results.records and vitlib.lab.results.tables: recording a finished run and rendering the results and benchmark tables."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from vitlib import ViT, ViTConfig
from vitlib.lab.results import records, tables
from vitlib.support import run_folder
from vitlib.support.cifar import DatasetId
from vitlib.support.checkpoints import CONFIG_KEY

TINY = ViTConfig.from_preset("vit_tiny")

# What Lightning's CSVLogger writes: per-step learning rates without an epoch, per-epoch metrics.
METRICS_CSV = """epoch,lr-AdamW/pg1,lr-AdamW/pg2,step,train/loss,train/top1,val/loss,val/top1,val/top5
,0.001,0.001,0,,,,,
,0.002,0.002,4,,,,,
0,,,4,,,3.9,0.11,0.30
0,,,4,4.2,0.05,,,
,0.0015,0.0015,5,,,,,
,0.0005,0.0005,9,,,,,
1,,,9,,,3.5,0.17,0.41
1,,,9,3.8,0.12,,,
"""


def _run_dir(tmp_path: Path, dataset: str = "CIFAR-100 (JPEG q75 copy)", **metrics: float) -> Path:
    """A finished fit's folder as the CLI leaves it: metrics.json, metrics.csv, checkpoints/last.ckpt."""
    run = tmp_path / "runs" / "vitlib" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    values = {"loss": 1.5, "top1": 0.61, "top5": 0.86, **metrics}
    payload = {
        "stage": "fit", "split": "val", "dataset": dataset, "images": "test set (used as the validation set)",
        **values, "samples": 10000, "epoch": 100, "global_step": 19500,
        "config": {"model": {"preset": "conv_vit"}, "trainer": {"max_epochs": 100, "precision": "bf16-mixed"}},
        "throughput": {"fit_wall_s": 3600.0, "train_images_per_s": 300.0, "bare_step_images_per_s": 310.0},
    }  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(payload))
    (run / "metrics.csv").write_text(METRICS_CSV)
    model = ViT(TINY)
    state = {f"model.{name}": tensor for name, tensor in model.state_dict().items()}
    torch.save({"state_dict": state, CONFIG_KEY: TINY.to_dict()}, run / "checkpoints" / "last.ckpt")
    return run


def test_record_run_writes_everything_needed_to_trust_and_repeat_it(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, top1=0.6123)
    path = records.record_run(run, "conv-vit", tmp_path / "results", hardware="1 x Test GPU")
    written = json.loads(path.read_text())
    assert path == tmp_path / "results" / "conv-vit.json"
    assert set(records.REQUIRED) <= set(written) and written["schema"] == records.SCHEMA
    record = records.Record.from_json(written)
    assert record.metrics.top1 == 0.6123 and record.metrics.samples == 10000
    assert record.command == f"python -m vitlib fit --config {run / 'config.yaml'}"
    assert record.hardware == "1 x Test GPU"
    assert record.dataset is DatasetId.Q75
    assert record.epochs == 100 and record.throughput["fit_wall_s"] == 3600.0
    assert record.model["preset"] == "conv_vit" and record.planned_epochs == 100
    assert record.date[:4].isdigit() and "T" in record.date
    assert record.commit  # a commit hash, or a statement that there is no git checkout
    assert records.load_results(tmp_path / "results") == [record]
    # A copy of the tree without .git names the commit it knows from elsewhere (its bundle).
    copied = records.record_run(run, "copied", tmp_path / "results", weights=False, commit="0123abc")
    assert records.Record.from_json(json.loads(copied.read_text())).commit == "0123abc"


def test_quick_mode_runs_are_not_results(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, dataset="synthetic data in the CIFAR-100 layout (quick mode)")
    with pytest.raises(ValueError, match="not a result"):
        records.record_run(run, "quick", tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_record_run_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        records.record_run(tmp_path, "x", tmp_path / "results")
    run = _run_dir(tmp_path)
    with pytest.raises(ValueError, match="plain file name"):
        records.record_run(run, "../escape", tmp_path / "results")


def test_cli_records_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run_dir(tmp_path)
    records.main([str(run), "--name", "ref", "--out", str(tmp_path / "out"), "--command", "python -m vitlib fit --config configs/reference.yaml"])
    assert "recorded" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "ref.json").read_text())["command"].endswith("reference.yaml")
    with pytest.raises(SystemExit) as exit_info:
        records.main([str(tmp_path / "nowhere"), "--name", "x"])
    assert exit_info.value.code == 2


def test_tables_say_plainly_when_nothing_is_recorded(tmp_path: Path) -> None:
    assert "No full training run is recorded" in tables.accuracy_table(tmp_path / "none")
    assert "python -m vitlib fit --config configs/" in tables.accuracy_table(tmp_path / "none")
    assert "No GPU benchmark is recorded" in tables.benchmark_table(tmp_path / "none")


def test_accuracy_table_shows_recorded_runs(tmp_path: Path) -> None:
    records.record_run(_run_dir(tmp_path, top1=0.6123, top5=0.8765), "conv-vit", tmp_path / "results", hardware="GPU X")
    table = tables.accuracy_table(tmp_path / "results")
    assert "conv-vit" in table and "61.23 %" in table and "87.65 %" in table and "GPU X" in table
    assert "| 100 |" in table  # epochs trained (Lightning's epoch counter after fit)
    # The long command goes under the table, collapsed, not into its row.
    rows, _, collapsed = table.partition("<details>")
    assert "python -m vitlib fit" not in rows and "**conv-vit**: `python -m vitlib fit --config" in collapsed


@pytest.mark.parametrize(
    ("split", "images", "said"),
    [
        ("val", "test set (used as the validation set)", "test (used as validation)"),
        ("val", "5000 training images held out (seed 0)", "held-out training images"),
        ("test", "test set", "test"),
        (None, "", "?"),
    ],
)
def test_the_split_says_which_images_were_measured(split: str | None, images: str, said: str, make_record) -> None:
    assert tables.split_name(make_record(split=split, images=images)) == said


def test_history_has_every_epoch_and_the_lr_at_its_end(tmp_path: Path) -> None:
    history = run_folder.read_history(_run_dir(tmp_path) / "metrics.csv")
    assert history["val/top1"] == [(0, 0.11), (1, 0.17)] and history["train/loss"] == [(0, 4.2), (1, 3.8)]
    # An epoch's rows carry the index of its last step (4, then 9): the LR logged at that step.
    assert history["lr"] == [(0, 0.002), (1, 0.0005)]


def test_recorded_weights_load_back_exactly(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    records.record_run(run, "tiny", tmp_path / "results", hardware="CPU")
    recorded = records.load_record("tiny", tmp_path / "results", url=None)
    assert recorded is not None and recorded.history["val/top1"][-1] == (1, 0.17)
    assert len(recorded.record.weights["sha256"]) == 64
    # The model's size, from the exported model: the tiny preset's parameters, FLOPs of a forward.
    assert recorded.record.size["parameters"] == sum(p.numel() for p in ViT(TINY).parameters())
    assert recorded.record.size["flops_per_image"] > 2 * recorded.record.size["parameters"]
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    loaded = recorded.model().state_dict()
    assert loaded.keys() == {k.removeprefix("model.") for k in saved}
    assert all(torch.equal(loaded[k.removeprefix("model.")], v) for k, v in saved.items())
    assert "100 epochs on CPU" in recorded.describe() and "JPEG q75" in recorded.describe()
    assert records.load_record("missing", tmp_path / "results", url=None) is None


def test_a_damaged_weights_file_is_refused(tmp_path: Path) -> None:
    records.record_run(_run_dir(tmp_path), "tiny", tmp_path / "results", hardware="CPU")
    weights = tmp_path / "results" / "tiny" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        records.load_record("tiny", tmp_path / "results", url=None).model()


def test_benchmark_table_rows(tmp_path: Path) -> None:
    folder = tmp_path / "bench"
    folder.mkdir()
    row = {"name": "ours", "impl": "vitlib", "model": "vit", "default": True, "images_per_s": 12345.6,
           "epoch_s": 4.05, "mfu": 0.31, "peak_mem_gb": 3.2, "batch_size": 256, "precision": "bf16-mixed"}  # fmt: skip
    (folder / "h100-2026-01-01.json").write_text(
        json.dumps({"gpu": "NVIDIA H100", "torch": "2.14", "commit": "abc", "date": "2026-01-01", "rows": [row]})
    )
    table = tables.benchmark_table(folder)
    assert "NVIDIA H100" in table and "12,346" in table and "bf16-mixed" in table
    (folder / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json"):
        records.load_benchmarks(folder)


def test_markdown_table_escapes_pipes() -> None:
    table = tables.markdown_table([{"a": "x|y", "b": None}])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| x\\|y |  |"]
    with pytest.raises(ValueError):
        tables.markdown_table([])


def test_each_bare_step_comparison_is_its_own_table(tmp_path: Path) -> None:
    assert "No bare-step comparison" in tables.bare_step_table(tmp_path)
    for name, rates in (("a", (100.0, 150.0)), ("b", (300.0, 240.0))):
        rows = [{"name": f"{name}{i}", "overrides": {"dim": 96}, "parameters": 1000, "images_per_s": r,
                 "relative_to_first": r / rates[0]} for i, r in enumerate(rates)]  # fmt: skip
        payload = {"hardware": "CPU X", "batch_size": 128, "threads": 2, "commit": "abc", "rows": rows}
        (tmp_path / f"{name}.json").write_text(json.dumps(payload))
    table = tables.bare_step_table(tmp_path)
    first, second = table.split("**b**")
    assert "**a**: CPU X, batch 128, 2 threads" in first and "| a1 | 1,000 | 150 | 1.50x |" in first
    assert "| b1 | 1,000 | 240 | 0.80x |" in second and "b0" not in first
    assert "dim=96" in second.split("<details>")[1] and "dim=96" not in second.split("<details>")[0]


def test_the_history_reads_the_learning_rate_of_any_optimizer(tmp_path: Path) -> None:
    """LearningRateMonitor names its column after the optimizer and parameter group: the first
    group's rate is the schedule's, whatever the optimizer is called."""
    csv = tmp_path / run_folder.METRICS_CSV
    csv.write_text(
        "epoch,step,lr-SGD/pg1,lr-SGD/pg2,val/top1\n"
        ",0,0.1,0.5,\n,1,0.2,0.6,\n0,1,,,0.3\n,2,0.3,0.7,\n1,2,,,0.4\n"
    )
    history = run_folder.read_history(csv)
    assert history["lr"] == [(0, 0.2), (1, 0.3)] and history["val/top1"] == [(0, 0.3), (1, 0.4)]


def test_the_path_table_says_what_changed_from_each_run_to_the_next(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, top1=0.5)
    first = records.Record.from_json(json.loads(records.record_run(run, "first", tmp_path / "results", weights=False).read_text()))
    longer = dataclasses.replace(first, name="longer", epochs=first.epochs + 50, data={**first.data, "mix": {"prob": 1.0}})
    same = dataclasses.replace(longer, name="again")
    lines = tables.path_table([(first, "tuned"), (longer, "longer, with mixing"), (same, "a second seed")]).splitlines()
    assert "| first |" in lines[2] and "(the first) | tuned |" in lines[2]
    assert f"epochs: {first.epochs} → {first.epochs + 50}; " in lines[3] and "CutMix/MixUp p=1" in lines[3]
    assert "model: " not in lines[3] and "| longer, with mixing |" in lines[3]
    assert "nothing in the recipe | a second seed |" in lines[4]
    with pytest.raises(ValueError, match="at least one step"):
        tables.path_table([])
