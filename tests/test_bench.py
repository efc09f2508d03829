"""``python -m benchmarks.bench`` on a CPU with tiny sizes: every importable implementation runs, the
results file has the documented fields, a missing baseline package is skipped cleanly, and the
FLOP count matches a count by hand."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from datetime import datetime

import pytest
import torch

from benchmarks.bench import ROWS, StepTimer, main, matmul_peak_flops, peak_dtype, training_flops_per_image
from vitlib.config import ViTConfig
from vitlib.model import ViT
from vitlib.support.hardware import Capabilities

ROW_FIELDS = {"name", "impl", "model", "default", "images_per_s", "epoch_s", "mfu", "peak_mem_gb", "batch_size", "precision"}
TOP_FIELDS = {"gpu", "torch", "commit", "date", "hardware", "command", "rows"}
PACKAGES = {"vitlib": "vitlib", "timm": "timm", "vit-pytorch": "vit_pytorch"}


def read_results(folder) -> dict:
    (path,) = folder.glob("*.json")
    assert re.fullmatch(r"cpu-\d{4}-\d{2}-\d{2}\.json", path.name)
    return json.loads(path.read_text())


def test_tiny_benchmark_runs_every_importable_implementation(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["--tiny", "--out", str(tmp_path / "results")])
    results = read_results(tmp_path / "results")
    assert TOP_FIELDS <= set(results)
    assert results["gpu"] == "cpu" and results["torch"] == torch.__version__
    assert results["commit"] is None or re.fullmatch("[0-9a-f]{40}", results["commit"])
    assert datetime.fromisoformat(results["date"]).tzinfo is not None
    assert results["command"] == f"python -m benchmarks.bench --tiny --out {tmp_path / 'results'}"
    assert results["peak_tflops"] is None and results["peak_dtype"] is None and "synthetic" in results["data"]

    importable = [r.name for r in ROWS if importlib.util.find_spec(PACKAGES[r.impl]) is not None]
    rows = {row["name"]: row for row in results["rows"]}
    assert list(rows) == importable
    for row in rows.values():
        assert ROW_FIELDS <= set(row)
        assert row["images_per_s"] > 0
        assert row["epoch_s"] == pytest.approx(50_000 / row["images_per_s"], rel=1e-3)
        assert row["mfu"] is None and row["peak_mem_gb"] is None  # no GPU
        assert row["precision"] == "32-true" and row["batch_size"] == 16 and row["compile"] == "eager"
    assert [name for name, row in rows.items() if row["default"]] == ["vitlib-vit-fast"]
    assert rows["vitlib-vit-fast"]["pipeline"] == "batched"
    assert rows["vitlib-vit-fast-cpu-workers"]["pipeline"] == "torchvision, 1 CPU worker"
    if "timm-vit" in rows:  # the same model: the same parameters and FLOPs
        for key in ("params", "training_flops_per_image"):
            assert rows["timm-vit"][key] == rows["vitlib-vit-fast"][key]
        speedup = {(c["row"], c["baseline"]): c["speedup"] for c in results["comparisons"]}
        ratio = rows["vitlib-vit-fast"]["images_per_s"] / rows["timm-vit"]["images_per_s"]
        assert speedup["vitlib-vit-fast", "timm-vit"] == pytest.approx(ratio, abs=0.01)
    out = capsys.readouterr().out
    assert "images/s" in out and "vitlib-slvit-fast" in out and "results written to" in out


def test_a_missing_baseline_package_is_skipped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for module in ("timm", "timm.models", "timm.models.vision_transformer"):
        monkeypatch.setitem(sys.modules, module, None)  # makes `import timm...` raise ImportError
    main(["--tiny", "--rows", "timm-vit,vitlib-vit-fast", "--workers", "0", "--out", str(tmp_path),
          "--override=--data.batch_size", "--override=8", "--commit", "0123abc"])  # fmt: skip
    results = read_results(tmp_path)
    assert results["commit"] == "0123abc" and results["dirty"] is None  # given, not read from git
    assert [row["name"] for row in results["rows"]] == ["vitlib-vit-fast"]
    assert results["rows"][0]["batch_size"] == 8 and results["vitlib_overrides"] == ["--data.batch_size", "8"]
    assert [skip["name"] for skip in results["skipped"]] == ["timm-vit"]
    assert results["comparisons"] == [] and results["failed"] == []


def test_a_failing_row_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:  # vitlib rows only: a batch larger than the training set
        main(["--tiny", "--rows", "vitlib-vit-fast,vit-pytorch-slvit", "--workers", "0", "--out", str(tmp_path),
              "--override=--data.batch_size", "--override=4096"])  # fmt: skip
    assert exit_info.value.code == 1
    results = read_results(tmp_path)
    ran = ["vit-pytorch-slvit"] if importlib.util.find_spec("vit_pytorch") else []
    assert [row["name"] for row in results["rows"]] == ran
    (failure,) = results["failed"]
    assert failure["name"] == "vitlib-vit-fast" and "batch_size (4096) is larger than the training set" in failure["error"]


def test_unknown_rows_and_quick_mode_are_clear_errors(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        main(["--tiny", "--rows", "timm-vit,fastest", "--out", str(tmp_path)])
    assert "unknown rows ['fastest']" in capsys.readouterr().err
    monkeypatch.setenv("VITLIB_QUICK", "1")
    with pytest.raises(SystemExit):
        main(["--tiny", "--out", str(tmp_path)])
    assert "VITLIB_QUICK is set" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.json"))


def test_flops_per_image_match_a_count_by_hand():
    """Patch-stem ViT: matmul FLOPs of the forward pass, times 3 for forward + backward, less
    the patch embedding's input gradient (images need none). Attention's two batched matmuls are
    included: the count runs SDPA on its math path."""
    cfg = ViTConfig.from_preset("vit", dim=48, depth=2, heads=4, mlp_ratio=2.0)
    n, d, hidden, patches = cfg.num_tokens, cfg.dim, int(cfg.dim * cfg.mlp_ratio), cfg.num_patches
    embed = 2 * (3 * cfg.patch_size**2) * d * patches
    block = 2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * hidden
    forward = embed + cfg.depth * block + 2 * d * cfg.num_classes
    assert training_flops_per_image(ViT(cfg)) == 3 * forward - embed


def test_timer_and_peak_measurement_on_a_cpu():
    with pytest.raises(ValueError, match="warm-up and timed steps must be >= 1"):
        StepTimer(0, 5)
    timer = StepTimer(warmup=2, steps=3)
    finished = [timer.step_done(torch.device("cpu")) for _ in range(5)]
    assert finished == [False, False, False, False, True] and timer.seconds > 0 and timer.peak_bytes is None
    assert matmul_peak_flops(torch.device("cpu"), torch.float32, size=64, repeats=2) > 0


@pytest.mark.parametrize("capability, dtype", [((7, 5), torch.float16), ((7, 0), torch.float16), ((8, 0), torch.bfloat16),
                                               ((9, 0), torch.bfloat16)])  # fmt: skip
def test_mfu_is_measured_against_the_gpus_fast_half_precision(capability, dtype):
    """A T4 or V100 has no bf16 tensor cores: its peak is float16's."""
    assert peak_dtype(Capabilities("GPU", capability)) == dtype
