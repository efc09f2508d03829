"""``python -m vitlib fit|test|predict`` end to end in quick mode (synthetic CIFAR-layout data)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitlib.cli import CONFIG_DIR, _files_as_predict_argument, _named_configs, main, packaged_configs

REPO = Path(__file__).resolve().parents[1]
QUICK = str(REPO / "configs" / "quick.yaml")
# Smaller than quick.yaml's defaults: these tests run several fits.
SMALL = ["--data.quick_train_size", "128", "--data.quick_test_size", "101", "--data.batch_size", "32"]


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VITLIB_QUICK", "1")
    return tmp_path


def read_metrics(version: int) -> dict:
    return json.loads((Path("runs/vitlib") / f"version_{version}" / "metrics.json").read_text())


def test_fit_then_resume_then_test_then_predict(run_dir, capsys):
    main(["fit", "--config", QUICK, "--trainer.max_epochs", "1", *SMALL])
    fit = read_metrics(0)
    assert fit["stage"] == "fit" and fit["epoch"] == 1 and fit["samples"] == 101
    assert 0 <= fit["top1"] <= fit["top5"] <= 1 and fit["loss"] > 0
    assert fit["config"]["model"]["preset"] == "vit_tiny"
    assert "quick mode" in fit["dataset"]
    last = run_dir / "runs/vitlib/version_0/checkpoints/last.ckpt"
    assert last.is_file()
    assert list(last.parent.glob("best-on-val-*.ckpt"))
    for name in ("metrics.csv", "config.yaml"):
        assert (last.parent.parent / name).is_file()
    assert list(last.parent.parent.glob("events.out.tfevents.*"))

    # Resuming continues the epoch count and the step count.
    main(["fit", "--config", QUICK, "--trainer.max_epochs", "2", "--ckpt_path", str(last), *SMALL])
    resumed = read_metrics(1)
    assert resumed["epoch"] == 2
    assert resumed["global_step"] == 2 * fit["global_step"]

    main(["test", "--config", QUICK, "--ckpt_path", str(run_dir / "runs/vitlib/version_1/checkpoints/last.ckpt"), *SMALL])
    test = read_metrics(2)
    assert test["stage"] == "test" and test["samples"] == 101
    out = capsys.readouterr().out
    assert f"metrics written to {(run_dir / 'runs/vitlib/version_2/metrics.json').resolve()}" in out

    rgba = run_dir / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 200, 4), dtype=np.uint8)).save(rgba)
    gray = run_dir / "small.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (20, 30), dtype=np.uint8)).save(gray)
    text = run_dir / "notes.txt"
    text.write_text("not an image")
    before = sorted(run_dir.rglob("*"))
    main(["predict", "--ckpt_path", str(last), str(rgba), str(gray), str(text), "missing.png"])
    assert sorted(run_dir.rglob("*")) == before  # a prediction writes no run folder, no config.yaml
    lines = [line for line in capsys.readouterr().out.splitlines() if ": " in line]
    by_file = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in lines}
    for good in (rgba, gray):
        ranked = by_file[str(good)].split(", ")
        assert len(ranked) == 5
        probs = [float(item.rsplit(" ", 1)[1]) for item in ranked]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert by_file[str(text)].startswith("error:")
    assert by_file["missing.png"].startswith("error:")


def test_positional_files_become_predict_files():
    argv = ["predict", "--ckpt_path", "m.ckpt", "a.png", "--trainer.accelerator=cpu", "b.jpg"]
    assert _files_as_predict_argument(argv) == [
        "predict", "--ckpt_path", "m.ckpt", "--trainer.accelerator=cpu", "--data.predict_files", '["a.png", "b.jpg"]'
    ]
    assert _files_as_predict_argument(["fit", "x"]) == ["fit", "x"]


def test_a_packaged_config_is_named_and_an_unknown_name_is_one_clear_error(run_dir, capsys):
    assert {"cpu", "cpu_long", "quick", "reference", "fast"} <= set(packaged_configs())
    assert _named_configs(["fit", "--config", "cpu"]) == ["fit", "--config", str(CONFIG_DIR / "cpu.yaml")]
    assert _named_configs(["fit", "--config=quick"]) == ["fit", f"--config={CONFIG_DIR / 'quick.yaml'}"]
    Path("local.yaml").write_text("seed_everything: 1\n")
    assert _named_configs(["fit", "--config", "local.yaml"]) == ["fit", "--config", "local.yaml"]  # a file stays a file
    main(["fit", "--config", "quick", *SMALL, "--trainer.max_epochs", "1"])  # the packaged quick.yaml trains
    assert read_metrics(0)["stage"] == "fit"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "cpu_longer"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "cpu_longer" in err and "cpu_long" in err and "Traceback" not in err


def test_bad_config_value_is_one_clear_error(run_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", QUICK, "--model.overrides", "{heads: 5}", *SMALL])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "ViTConfig.dim (64) must be divisible by ViTConfig.heads (5)" in err
    assert "Traceback" not in err


def test_missing_dataset_offline_says_where_to_put_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VITLIB_QUICK", raising=False)
    monkeypatch.setattr("vitlib.support.cifar._download", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(SystemExit):
        main(["test", "--config", QUICK, "--data.data_dir", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert "cifar-100-python.tar.gz" in err and "VITLIB_DATA" in err and str(tmp_path / "nowhere") in err


def test_default_root_dir_holds_the_whole_run(run_dir, capsys):
    main(["fit", "--config", QUICK, "--trainer.max_epochs", "1", "--trainer.default_root_dir", "elsewhere", *SMALL])
    run = run_dir / "elsewhere/vitlib/version_0"
    for name in ("metrics.json", "metrics.csv", "config.yaml", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*")) and list(run.glob("checkpoints/best-on-val-*.ckpt"))
    assert not (run_dir / "runs").exists()
    assert f"metrics written to {(run / 'metrics.json').resolve()}" in capsys.readouterr().out


def test_no_lightning_advertisement(tmp_path):
    # A subprocess: Lightning's log handler writes to the stderr it found at import, which capsys does not see.
    env = {**os.environ, "VITLIB_QUICK": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "vitlib", "validate", "--config", QUICK, *SMALL, "--trainer.limit_val_batches", "1"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "GPU available" in output  # Lightning's own info lines are shown: the check below can see its log
    assert "litlogger" not in output and "litmodels" not in output and "Tip:" not in output


@pytest.mark.parametrize(
    "command, expected",
    [
        # Download off: the missing dataset is a problem of its own.
        (["test", "--ckpt_path", "missing.ckpt", "--data.download", "false"],
         ["2 problems, nothing was run", "checkpoint missing.ckpt: no such file", "CIFAR-100 not found in"]),
        # Download on: said at once too, since the next try would start with that download.
        (["test", "--ckpt_path", "missing.ckpt"],
         ["2 problems, nothing was run", "checkpoint missing.ckpt: no such file", "the run would first download it"]),
        (["predict", "--ckpt_path", "missing.ckpt", "cat.png", "missing.png"],
         ["2 problems, nothing was run", "checkpoint missing.ckpt: no such file", "no such image file: missing.png"]),
        # Alone, a missing image is an error line of the prediction; with none left to predict, it stops.
        (["predict", "gone.png"], ["vitlib: error: no such image file: gone.png\n"]),
    ],
)
def test_every_bad_path_is_reported_at_once_before_any_work(tmp_path, monkeypatch, capsys, command, expected):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VITLIB_QUICK", raising=False)
    monkeypatch.delenv("VITLIB_DATA", raising=False)
    downloads = []
    monkeypatch.setattr("vitlib.support.cifar._download", lambda *a, **k: downloads.append(a))
    Image.new("RGB", (32, 32)).save(tmp_path / "cat.png")
    with pytest.raises(SystemExit) as exit_info:
        main([command[0], "--config", QUICK, *command[1:]])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    message = err[err.index("vitlib: error: "):]
    for text in expected:
        assert text in message
    assert "Traceback" not in err and "cat.png" not in message
    assert downloads == [] and not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()


def test_ddp_on_two_cpu_processes_covers_the_validation_set_once(tmp_path):
    # 101 validation images do not split evenly over 2 ranks: a padding sampler would count 102.
    env = {**os.environ, "VITLIB_QUICK": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "vitlib", "fit", "--config", QUICK, "--trainer.max_epochs", "1",
           "--trainer.devices", "2", "--trainer.strategy", "ddp", *SMALL]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs/vitlib/version_0/metrics.json").read_text())
    assert metrics["samples"] == 101
    assert metrics["config"]["trainer"]["strategy"] == "ddp"


def test_published_weights_work_with_test_and_predict_and_are_refused_by_fit(run_dir, capsys):
    """A save_pretrained folder (or its model.safetensors) is as good as a Lightning checkpoint
    for test and predict: the model is built from its config.json, its weights are the ones used
    (same probabilities as the model itself), and fit says why it cannot resume from them."""
    import torch

    from vitlib import ViT, ViTConfig
    from vitlib.data import ImageFileDataset
    from vitlib.support.cifar import FINE_LABELS
    from vitlib.support.pretrained import save_pretrained

    torch.manual_seed(0)
    model = ViT(ViTConfig.from_preset("vit_tiny", stem="conv", dim=32, heads=2)).eval()
    folder = save_pretrained(model, run_dir / "published")
    image = run_dir / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(image)
    with torch.no_grad():
        probs = model(ImageFileDataset([image])[0]["image"][None]).softmax(-1)[0]
    top = probs.topk(5)
    expected = ", ".join(f"{FINE_LABELS[i]} {p:.3f}" for p, i in zip(top.values.tolist(), top.indices.tolist()))
    for weights in (folder, folder / "model.safetensors"):
        main(["predict", "--ckpt_path", str(weights), str(image)])
        assert f"{image}: {expected}" in capsys.readouterr().out

    main(["test", "--config", QUICK, "--ckpt_path", str(folder), *SMALL])
    test = json.loads(max(Path("runs/vitlib").glob("version_*/metrics.json"), key=lambda p: p.stat().st_mtime).read_text())
    assert test["stage"] == "test" and test["samples"] == 101
    assert test["config"]["model"]["overrides"]["stem"] == "conv" and test["config"]["model"]["overrides"]["dim"] == 32

    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", QUICK, "--ckpt_path", str(folder), *SMALL])
    assert stop.value.code == 2 and "no optimizer or schedule state" in capsys.readouterr().err
    (folder / "config.json").unlink()
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--ckpt_path", str(folder / "model.safetensors"), str(image)])
    assert stop.value.code == 2 and "not a folder written by save_pretrained" in capsys.readouterr().err


def test_quick_mode_caps_the_epochs_only_of_a_run_that_does_not_name_its_data(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("VITLIB_QUICK", "1")
    for named, epochs in ((["--data.quick", "true"], 3), ([], 2)):
        root = tmp_path / str(len(named))
        main(["fit", "--config", "quick", "--data.quick_train_size", "32", "--data.quick_test_size", "32", "--data.batch_size", "32",
              "--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root), *named])  # fmt: skip
        assert json.loads(next(root.rglob("metrics.json")).read_text())["epoch"] == epochs


def test_last_ckpt_is_written_every_epoch_even_when_the_score_does_not_improve(tmp_path):
    """A fit whose validation score stays flat: Lightning's save_last alone would leave last.ckpt at
    the one epoch that improved, and a resume would go back epochs; EveryEpochCheckpoint keeps it
    at the last epoch."""
    import lightning as L
    import torch

    from lightning.pytorch.callbacks import ModelCheckpoint

    from vitlib.support.checkpoints import EveryEpochCheckpoint

    class Flat(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def validation_step(self, batch, batch_idx):
            self.log("val/top1", 0.5)  # never better than its first epoch

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)

    def fit(root, callbacks):
        trainer = L.Trainer(max_epochs=3, callbacks=callbacks, default_root_dir=root, logger=False,
                            enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
        trainer.fit(Flat(), data, data)
        return torch.load(Path(root) / "checkpoints" / "last.ckpt", weights_only=False)["epoch"]

    best = dict(monitor="val/top1", mode="max", filename="best")
    assert fit(tmp_path / "lightning", [ModelCheckpoint(**best, save_last=True)]) == 0  # the behaviour worked around
    assert fit(tmp_path / "ours", [ModelCheckpoint(**best, save_last=False), EveryEpochCheckpoint()]) == 2
