"""Interrupted runs, reproducibility and bad inputs: nothing loses work, every failure says what to do."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from vitlib import ViT, ViTConfig
from vitlib.attention import Attention
from vitlib.augment import AugmentConfig, MixConfig, normalize
from vitlib.cli import ViTCLI, main
from vitlib.data import CIFAR100DataModule, ImageFileDataset
from vitlib.lab.results.records import record_run
from vitlib.module import OptimizerConfig, ViTModule
from vitlib.schedule import ScheduleConfig
from vitlib.support.checkpoints import AtomicCheckpointIO, CheckpointError, load_checkpoint, save_checkpoint
from vitlib.support.cifar import DatasetNotFoundError, load_cifar100
from vitlib.support.loss_check import NonFiniteLossError
from vitlib.support.seeding import EpochSampler

REPO = Path(__file__).resolve().parents[1]
QUICK = str(REPO / "configs" / "quick.yaml")
# Quick-mode data without VITLIB_QUICK, which would cap the run at 2 epochs.
SMALL = ["--data.quick", "true", "--data.quick_train_size", "128", "--data.quick_test_size", "64",
         "--data.batch_size", "32", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]  # fmt: skip


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


# --------------------------------------------------------------------------- runs


def test_sigkilled_fit_resumes_to_the_metrics_of_an_uninterrupted_run(tmp_path, monkeypatch):
    """A fit is SIGKILLed once its first checkpoint exists; resumed from last.ckpt it ends with the
    metrics of a run that was never interrupted: same data order, augmentation, mixing, LR schedule
    position and optimizer state."""
    fit = [sys.executable, "-m", "vitlib", "fit", "--config", QUICK, "--trainer.max_epochs", "4", *SMALL]
    env = {k: v for k, v in os.environ.items() if k != "VITLIB_QUICK"}
    env["PYTHONPATH"] = str(REPO)
    (tmp_path / "whole").mkdir()
    (tmp_path / "killed").mkdir()
    # Both runs at once: the two cores are shared, the import time is paid once in wall time.
    with (tmp_path / "whole.log").open("w") as log:
        whole = subprocess.Popen(fit, cwd=tmp_path / "whole", env=env, stdout=subprocess.DEVNULL, stderr=log)
        killed = subprocess.Popen(fit, cwd=tmp_path / "killed", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            last = tmp_path / "killed/runs/vitlib/version_0/checkpoints/last.ckpt"
            deadline = time.monotonic() + 240
            while not last.exists() and killed.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            killed.send_signal(signal.SIGKILL)
            assert killed.wait(timeout=30) == -signal.SIGKILL, "the run ended before it could be killed"
            interrupted_at = load_checkpoint(last)["global_step"]
            assert 0 < interrupted_at < 16  # 4 epochs of 4 steps: after the first checkpoint, before the end

            monkeypatch.chdir(tmp_path / "killed")
            monkeypatch.delenv("VITLIB_QUICK", raising=False)
            main(["fit", "--config", QUICK, "--trainer.max_epochs", "4", *SMALL, "--ckpt_path", str(last)])
            whole.wait(timeout=300)
        finally:
            for proc in (whole, killed):
                if proc.poll() is None:
                    proc.kill()
    assert whole.returncode == 0, (tmp_path / "whole.log").read_text()[-3000:]
    expected = metrics_of(tmp_path / "whole/runs/vitlib/version_0")
    resumed = metrics_of(tmp_path / "killed/runs/vitlib/version_1")
    assert resumed["global_step"] == expected["global_step"] == 16
    for key in ("loss", "top1", "top5"):
        assert abs(resumed[key] - expected[key]) <= 1e-4, (key, resumed[key], expected[key])


def test_a_fit_killed_mid_epoch_and_resumed_is_recorded_whole(tmp_path, cifar_root, monkeypatch):
    """SIGKILLed during its second epoch (after the first epoch's rows reached metrics.csv; the
    CSV logger alone would hold them in memory for 100 steps), resumed from last.ckpt, the two
    folders are recorded as one run: every epoch once, the time of both parts summed."""
    data = ["--data.data_dir", str(cifar_root), "--data.verify_md5", "false", "--data.download", "false",
            "--data.batch_size", "32", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]  # fmt: skip
    fit = ["fit", "--config", QUICK, "--trainer.max_epochs", "3", *data]
    env = {k: v for k, v in os.environ.items() if k != "VITLIB_QUICK"}
    env["PYTHONPATH"] = str(REPO)
    first = tmp_path / "runs/vitlib/version_0"
    proc = subprocess.Popen([sys.executable, "-m", "vitlib", *fit], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            csv_file = first / "metrics.csv"
            # The first epoch's training row itself on disk, not only the header that names it.
            if csv_file.is_file() and any(row.get("train/top1") for row in csv.DictReader(io.StringIO(csv_file.read_text()))):
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL, "the run ended before its first epoch's rows were on disk"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert load_checkpoint(first / "checkpoints/last.ckpt")["epoch"] == 0
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VITLIB_QUICK", raising=False)
    main([*fit, "--ckpt_path", str(first / "checkpoints/last.ckpt")])
    second = tmp_path / "runs/vitlib/version_1"

    record = json.loads(record_run([first, second], "resumed", tmp_path / "results", weights=False).read_text())
    for key in ("val/top1", "train/top1", "time/train_epoch_s"):
        assert [epoch for epoch, _ in record["history"][key]] == [0, 1, 2], key
    assert record["history"]["val/top1"][-1][1] == record["metrics"]["top1"]
    assert record["epochs"] == 3 and record["resumes"] == 1
    timing = record["throughput"]
    assert [part["folder"] for part in timing["parts"]] == [str(first), str(second)]
    assert timing["fit_wall_s"] == pytest.approx(sum(part["wall_s"] for part in timing["parts"]))
    assert timing["parts"][0]["wall_s"] > 0 and timing["fit_wall_s"] > json.loads((second / "metrics.json").read_text())["throughput"]["fit_wall_s"]
    assert timing["train_s"] == pytest.approx(sum(v for _, v in record["history"]["time/train_epoch_s"]))
    with pytest.raises(ValueError, match="was not resumed from a checkpoint of"):
        record_run([second, first], "wrong-order", tmp_path / "results", weights=False)
    with pytest.raises(ValueError, match=r"no row for epoch\(s\) \[0\]"):
        record_run(second, "second-part-alone", tmp_path / "results", weights=False)


def test_interrupted_fit_on_the_device_pipeline_resumes_exactly(tmp_path, monkeypatch):
    """The same with the device-resident pipeline (run here on the CPU), interrupted in-process by
    an error at the start of the second epoch, after the first epoch's checkpoint."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VITLIB_QUICK", raising=False)
    fit = ["fit", "--config", QUICK, "--trainer.max_epochs", "2", "--data.pipeline", "batched", *SMALL]
    main(fit)

    def crash(module) -> None:
        if module.current_epoch == 1:
            raise RuntimeError("interrupted")

    with monkeypatch.context() as patch, pytest.raises(RuntimeError, match="interrupted"):
        patch.setattr(ViTModule, "on_train_epoch_start", crash, raising=False)
        main(fit)
    last = tmp_path / "runs/vitlib/version_1/checkpoints/last.ckpt"
    assert load_checkpoint(last)["global_step"] == 4 and not (last.parent.parent / "metrics.json").exists()
    main([*fit, "--ckpt_path", str(last)])
    expected, resumed = (metrics_of(tmp_path / f"runs/vitlib/version_{i}") for i in (0, 2))
    assert resumed["global_step"] == expected["global_step"] == 8
    for key in ("loss", "top1", "top5"):
        assert abs(resumed[key] - expected[key]) <= 1e-4, (key, resumed[key], expected[key])


def test_same_seed_twice_gives_identical_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VITLIB_QUICK", raising=False)
    args = ["fit", "--config", QUICK, "--trainer.max_epochs", "1", *SMALL]
    main(args)
    main(args)
    main([*args, "--seed_everything", "1"])
    runs = [tmp_path / f"runs/vitlib/version_{i}" for i in range(3)]
    same, again, other = (metrics_of(run) for run in runs)
    assert [same[k] for k in ("loss", "top1", "top5")] == [again[k] for k in ("loss", "top1", "top5")]
    weights = [load_checkpoint(run / "checkpoints/last.ckpt")["state_dict"] for run in runs]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert not all(torch.equal(weights[0][name], weights[2][name]) for name in weights[0])  # the seed matters


def batches(loader, epoch: int | None = None) -> list[torch.Tensor]:
    """The first three batches of an epoch."""
    if epoch is not None:
        loader.sampler.set_epoch(epoch)
    return [images for images, _ in itertools.islice(loader, 3)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_epoch_batches_are_a_function_of_seed_and_epoch(cifar_root, num_workers):
    """Order and augmentation of epoch e are the same whether the loader is fresh at epoch e (a
    resumed run) or has run epochs 0..e-1 (persistent workers included), and for any num_workers;
    loading in the main process leaves the global generator where it was."""

    def datamodule(workers: int) -> CIFAR100DataModule:
        dm = CIFAR100DataModule(str(cifar_root), batch_size=64, num_workers=workers, verify_md5=False,
                                download=False, quick=False, mix=None, seed=3)  # fmt: skip
        dm.setup("fit")
        return dm

    reference = datamodule(0).train_dataloader()
    state = torch.get_rng_state()
    epoch0, epoch1 = batches(reference, 0), batches(reference, 1)
    assert torch.equal(torch.get_rng_state(), state)
    loader = datamodule(num_workers).train_dataloader()
    assert all(torch.equal(a, b) for a, b in zip(batches(loader, 0), epoch0))
    assert all(torch.equal(a, b) for a, b in zip(batches(loader, 1), epoch1))
    assert not torch.equal(epoch0[0], epoch1[0])
    # A run resumed at epoch 1: Lightning's count of processed epochs is 1 when the loader is made.
    resumed = datamodule(num_workers)
    progress = SimpleNamespace(current=SimpleNamespace(processed=1))
    resumed.trainer = SimpleNamespace(fit_loop=SimpleNamespace(epoch_progress=progress), world_size=1,
                                      strategy=SimpleNamespace(root_device=torch.device("cpu")))  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(batches(resumed.train_dataloader()), epoch1))


def test_sampler_draws_differ_between_seeds_and_epochs():
    draws = {(seed, epoch): list(EpochSampler(50, seed, epoch)) for seed in (0, 1) for epoch in (0, 1)}
    assert sorted(i for i, _ in draws[0, 0]) == list(range(50))
    assert len({tuple(d) for d in draws.values()}) == 4
    assert list(EpochSampler(50, 1, 0)) == draws[1, 0]
    with pytest.raises(ValueError, match="non-negative"):
        EpochSampler(50, seed=-1)


def test_cli_checkpoints_are_written_atomically_and_read_weights_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = ViTCLI(args=["--config", QUICK, *SMALL], run=False)
    assert type(cli.trainer.strategy.checkpoint_io) is AtomicCheckpointIO


KILL_DURING_SAVE = """
import os, signal, sys, torch
import vitlib.support.checkpoints as checkpoints
from vitlib.support.checkpoints import AtomicCheckpointIO
io, path = AtomicCheckpointIO(), sys.argv[1]
io.save_checkpoint({"step": 1, "w": torch.arange(1000.0)}, path)

def killed_halfway(obj, f):
    f.write(b"PK half a checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

checkpoints.torch.save = killed_halfway
io.save_checkpoint({"step": 2, "w": torch.zeros(1000)}, path)
"""


def test_kill_during_a_checkpoint_save_keeps_the_previous_checkpoint(tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(last)], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    kept = load_checkpoint(last)
    assert kept["step"] == 1 and torch.equal(kept["w"], torch.arange(1000.0))
    (stray,) = [p for p in last.parent.iterdir() if p != last]  # the killed write's temporary file
    assert stray.name.startswith(".last.ckpt.") and stray.read_bytes() == b"PK half a checkpoint"


class DivergingModule(ViTModule):
    """The loss turns NaN at optimizer step ``bad_step``; records the learning rate of that step."""

    def __init__(self, bad_step: int) -> None:
        super().__init__(preset="vit_tiny", overrides={"depth": 1, "num_classes": 10},
                         schedule=ScheduleConfig(name="cosine", max_lr=1e-3, warmup_epochs=1))  # fmt: skip
        self.bad_step, self.lr_at_bad_step = bad_step, None

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if self.global_step == self.bad_step:
            self.lr_at_bad_step = self.trainer.optimizers[0].param_groups[0]["lr"]
        return loss * float("nan") if self.global_step >= self.bad_step else loss


def test_nan_loss_stops_training_naming_step_and_learning_rate(tmp_path):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,)))
    module = DivergingModule(bad_step=5)
    saver = L.pytorch.callbacks.ModelCheckpoint(tmp_path, save_last=True, every_n_train_steps=1, save_top_k=0)
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, log_every_n_steps=4, callbacks=[saver])  # fmt: skip
    with pytest.raises(NonFiniteLossError) as err:
        trainer.fit(module, DataLoader(data, batch_size=8))
    message = str(err.value)
    assert "nan at optimizer step 5" in message and f"learning rate {module.lr_at_bad_step:.3g}" in message
    # Checked every 4 steps and before every save: the NaN of step 5 was found before any checkpoint
    # holding its update, so the last checkpoint is the one after step 4 and is finite.
    last = load_checkpoint(tmp_path / "last.ckpt")
    assert last["global_step"] == 5
    assert all(torch.isfinite(w).all() for w in last["state_dict"].values())


def test_infinite_loss_in_the_cli_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("vitlib.module.soft_target_cross_entropy", lambda logits, *a: logits.sum() * 0 + float("inf"))
    with pytest.raises(SystemExit):
        main(["fit", "--config", QUICK, "--trainer.max_epochs", "1", *SMALL])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "the training loss became inf at optimizer step 0 (learning rate" in err
    assert not list(tmp_path.glob("runs/vitlib/version_0/checkpoints/*.ckpt"))


def test_finite_training_passes_the_check(tmp_path):
    data = TensorDataset(torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,)))
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(DivergingModule(bad_step=10**6), DataLoader(data, batch_size=8))
    assert trainer.global_step == 8


# --------------------------------------------------------------------------- dataset inputs


@pytest.fixture
def no_download(monkeypatch):
    def offline(root, verify_md5):
        raise OSError("network is unreachable")

    monkeypatch.setattr("vitlib.support.cifar._download", offline)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "another_object", "missing_key"])
def test_damaged_pickle_is_one_clear_error(tmp_path, cifar_root, damage):
    root = tmp_path / "data"
    shutil.copytree(cifar_root, root)
    train = root / "cifar-100-python" / "train"
    payload = {
        "garbage": b"\x80\x02 not a pickle",
        "truncated": train.read_bytes()[:5000],
        "empty": b"",
        "another_object": pickle.dumps([1, 2, 3]),
        "missing_key": pickle.dumps({"labels": []}),
    }[damage]
    train.write_bytes(payload)
    with pytest.raises(DatasetNotFoundError) as err:
        load_cifar100(root, True, download=False, verify_md5=False)
    assert str(root / "cifar-100-python") in str(err.value) and "not readable CIFAR pickles" in str(err.value)


def test_wrong_layouts_say_where_the_files_should_be(tmp_path, cifar_root, no_download):
    folder = cifar_root / "cifar-100-python"
    with pytest.raises(DatasetNotFoundError, match="pass the folder that contains it") as err:
        load_cifar100(folder, True, verify_md5=False)
    assert str(cifar_root) in str(err.value)
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("train", "test", "meta"):
        (flat / name).write_bytes((folder / name).read_bytes())
    with pytest.raises(DatasetNotFoundError, match="move them into"):
        load_cifar100(flat, True, verify_md5=False)
    incomplete = tmp_path / "incomplete"
    (incomplete / "cifar-100-python").mkdir(parents=True)
    (incomplete / "cifar-100-python" / "train").write_bytes((folder / "train").read_bytes())
    with pytest.raises(DatasetNotFoundError, match="download failed") as err:
        load_cifar100(incomplete, True, verify_md5=False)
    assert str(incomplete) in str(err.value) and "VITLIB_DATA" in str(err.value)


def test_interrupted_download_leaves_no_archive(tmp_path, monkeypatch):
    root = tmp_path / "data"

    def cut_off(url, root, filename, md5=None):
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / filename).write_bytes(b"the first bytes of an archive")
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: type("R", (), {"close": lambda self: None})())
    monkeypatch.setattr("vitlib.support.cifar.download_url", cut_off)
    with pytest.raises(DatasetNotFoundError, match="connection reset"):
        load_cifar100(root, True, verify_md5=False)
    assert list(root.iterdir()) == []  # neither a partial archive nor a half-extracted folder


def test_missing_root_offline_via_the_cli_is_one_line(tmp_path, monkeypatch, capsys, no_download):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VITLIB_QUICK", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "--config", QUICK, "--data.data_dir", str(tmp_path / "absent")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(tmp_path / "absent") in err and "network is unreachable" in err
    assert not (tmp_path / "absent").exists()


# --------------------------------------------------------------------------- config inputs

# Each example is a valid configuration with up to three fields replaced by values of every bad
# kind (zero, negative, fractional, wrong type, out of range, unknown name) or by other valid ones:
# about a third of the examples build and run, the rest must be refused by a ValueError naming a
# field, never by an error deep inside a layer.
BAD = [0, -1, 1.5, True, None, "2", float("nan")]


@st.composite
def perturbed(draw, valid: dict, other: dict) -> dict:
    values = {name: draw(st.sampled_from(choices)) for name, choices in valid.items()}
    for name in draw(st.lists(st.sampled_from(sorted(other)), max_size=3, unique=True)):
        values[name] = draw(st.sampled_from(other[name]))
    return values


VIT_VALID = {
    "image_size": [8, 16], "patch_size": [2, 4, 8], "in_channels": [1, 3], "num_classes": [1, 10],
    "dim": [16, 24], "depth": [1, 2], "heads": [1, 2, 4, 8], "mlp_ratio": [0.5, 2.0], "stem": ["patch", "conv", "spt"],
    "attention": ["mhsa", "lsa"], "pool": ["cls", "mean"], "dropout": [0.0, 0.5], "drop_path": [0.0, 0.2],
}  # fmt: skip
VIT_OTHER = {
    **{name: BAD for name in ("image_size", "patch_size", "in_channels", "num_classes", "dim", "depth", "heads")},
    "patch_size": [*BAD, 3, 5, 16], "heads": [*BAD, 3, 5], "dim": [*BAD, 7, 12], "image_size": [*BAD, 12, 15],
    "mlp_ratio": [0, -1.0, True, "2", float("inf")], "stem": ["conv2d", "", None], "attention": ["msa", None],
    "pool": ["max", 0], "dropout": [1.0, -0.1, 2, float("nan"), "0.1"], "drop_path": [1.0, -0.5, None],
}  # fmt: skip


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=perturbed(VIT_VALID, VIT_OTHER))
def test_any_vit_config_either_runs_or_names_the_bad_field(fields):
    try:
        cfg = ViTConfig(**fields)
    except ValueError as err:
        assert any(f"ViTConfig.{name}" in str(err) for name in fields), str(err)
        event("rejected")
        return
    event("runs")
    model = ViT(cfg).train()
    images = torch.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size)
    logits = model(images)
    assert logits.shape == (2, cfg.num_classes) and torch.isfinite(logits).all()
    logits.sum().backward()
    explicit, _ = model.eval()(images, return_attention=True)
    torch.testing.assert_close(explicit, model(images), atol=1e-4, rtol=1e-4)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(["vit", "slvit", "vit_tiny", "vit_huge"]), field=st.sampled_from(["dim", "depthh", "heads"]))
def test_presets_and_overrides_name_the_problem(name, field):
    try:
        ViTConfig.from_preset(name, **{field: 5})
    except ValueError as err:
        assert name in str(err) or field in str(err), str(err)


TRAIN_VALID = {
    "name": ["cyclic", "cosine", "constant"], "base_lr": [1e-4], "max_lr": [1e-3], "half_cycle_epochs": [0.5, 2.0],
    "warmup_epochs": [0.0, 0.5], "min_lr": [0.0, 1e-5], "weight_decay": [0.0, 0.05], "betas": [(0.9, 0.999)],
    "label_smoothing": [0.0, 0.1],
}  # fmt: skip
TRAIN_OTHER = {
    "name": ["linear", None], "base_lr": [0.0, -1e-3, 1e-2, True, "1e-4"], "max_lr": [0.0, -1.0, 1e-5, None],
    "half_cycle_epochs": [0.0, -1.0], "warmup_epochs": [1.0, 2.0, 5.0, -1.0], "min_lr": [1e-2, -1e-5],
    "weight_decay": [-0.1, float("nan"), "0.1"], "betas": [(1.0, 0.9), (-0.1, 0.9), (0.9,), "0.9"],
    "label_smoothing": [1.0, -0.1],
}  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(fields=perturbed(TRAIN_VALID, TRAIN_OTHER))
def test_any_optimizer_config_either_trains_or_names_the_bad_field(fields):
    data = DataLoader(TensorDataset(torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))), batch_size=4)
    schedule_fields = ("name", "base_lr", "max_lr", "half_cycle_epochs", "warmup_epochs", "min_lr")
    try:
        schedule = ScheduleConfig(**{k: fields[k] for k in schedule_fields})
        optimizer = OptimizerConfig(weight_decay=fields["weight_decay"], betas=fields["betas"])
        module = ViTModule("vit_tiny", {"image_size": 8, "depth": 1, "num_classes": 3}, optimizer, schedule, fields["label_smoothing"])
        trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=False)  # fmt: skip
        trainer.fit(module, data)
    except ValueError as err:
        names = ("ScheduleConfig.", "OptimizerConfig.", "label_smoothing")
        assert any(n in str(err) for n in names), str(err)
        event("rejected")
        return
    event("trains")
    assert trainer.global_step == 4


DATA_VALID = {
    "crop_padding": [0, 4], "randaugment_ops": [0, 2], "randaugment_magnitude": [0, 9, 30], "prob": [0.0, 0.5, 1.0],
    "mixup_alpha": [0.8], "batch_size": [1, 16], "eval_batch_size": [None, 8], "num_workers": [0], "val_split": [0, 16],
    "seed": [0, 7],
}  # fmt: skip
DATA_OTHER = {
    "crop_padding": [-1], "randaugment_ops": [-1], "randaugment_magnitude": [31, -1], "prob": [1.5, -0.5],
    "mixup_alpha": [0.0, -1.0], "batch_size": [*BAD, 10**6], "eval_batch_size": [0, -8, 2.5],
    "num_workers": [-1, 1.5, "2"], "val_split": [-1, 10**6], "seed": [-1, 0.5],
}  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=perturbed(DATA_VALID, DATA_OTHER))
def test_any_data_config_either_loads_or_names_the_bad_field(cifar_root, fields):
    try:
        augment = AugmentConfig(**{k: fields[k] for k in ("crop_padding", "randaugment_ops", "randaugment_magnitude")})
        mix = MixConfig(prob=fields["prob"], mixup_alpha=fields["mixup_alpha"])
        loader_fields = {k: fields[k] for k in ("batch_size", "eval_batch_size", "num_workers", "val_split", "seed")}
        dm = CIFAR100DataModule(str(cifar_root), **loader_fields, download=False, verify_md5=False, augment=augment,
                                mix=mix, quick=False)  # fmt: skip
        dm.setup("fit")
    except ValueError as err:
        names = ("AugmentConfig.", "MixConfig.", "CIFAR100DataModule.", "val_split", "batch_size")
        assert any(n in str(err) for n in names), str(err)
        event("rejected")
        return
    event("loads")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (fields["batch_size"], 3, 32, 32) and torch.isfinite(images).all()
    eval_batch = fields["eval_batch_size"] or fields["batch_size"]
    assert next(iter(dm.val_dataloader()))[0].shape[0] == min(eval_batch, len(dm.val_set))


# --------------------------------------------------------------------------- checkpoint inputs


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of a fitted one-step vit_tiny (depth 1), as Lightning writes it."""
    path = tmp_path_factory.mktemp("ckpt") / "vit.ckpt"
    module = ViTModule("vit_tiny", {"depth": 1, "num_classes": 10})
    data = DataLoader(TensorDataset(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))), batch_size=4)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, plugins=[AtomicCheckpointIO()])  # fmt: skip
    trainer.fit(module, data)
    trainer.save_checkpoint(path)
    return path


def test_checkpoint_of_another_config_names_the_fields(vit_checkpoint):
    with pytest.raises(CheckpointError) as err:
        ViTModule.load_from_checkpoint(vit_checkpoint, preset="slvit", overrides={"depth": 1, "num_classes": 10})
    message = str(err.value)
    assert "stem: checkpoint 'patch' vs requested 'spt'" in message
    assert "attention: checkpoint 'mhsa' vs requested 'lsa'" in message
    assert "dim: checkpoint 64 vs requested 192" in message and "depth" not in message
    # Fields that change no weight do not block loading.
    module = ViTModule.load_from_checkpoint(vit_checkpoint, overrides={"depth": 1, "num_classes": 10, "dropout": 0.2})
    assert module.config.dropout == 0.2


def test_checkpoint_without_config_reports_parameter_shapes(vit_checkpoint, tmp_path):
    checkpoint = load_checkpoint(vit_checkpoint)
    del checkpoint["hyper_parameters"], checkpoint["vit_config"]  # e.g. a checkpoint of another library
    checkpoint["state_dict"]["model.head.weight"] = torch.zeros(7, 64)
    checkpoint["state_dict"]["model.extra"] = torch.zeros(1)
    del checkpoint["state_dict"]["model.norm.bias"]
    save_checkpoint(checkpoint, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError) as err:
        ViTModule.load_from_checkpoint(tmp_path / "foreign.ckpt", preset="vit_tiny", overrides={"depth": 1, "num_classes": 10})
    message = str(err.value)
    assert "model.head.weight: checkpoint [7, 64] vs requested [10, 64]" in message
    assert "missing from the checkpoint: model.norm.bias" in message and "not in the model: model.extra" in message


def test_cli_with_a_checkpoint_for_other_classes_is_one_clear_error(vit_checkpoint, tmp_path, monkeypatch, capsys):
    # The CLI rebuilds the model from the checkpoint's hyperparameters: a 10-class model meets 100-class data.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["validate", "--config", QUICK, *SMALL, "--ckpt_path", str(vit_checkpoint)])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "the model predicts 10 classes but the data have 100 classes" in err


class Payload:
    """Unpickling this runs code: the reason checkpoints are read with weights_only=True."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


# What each kind of unusable file is called; none of the messages may pass on torch's advice to
# load with weights_only=False, which would run the code of an untrusted file.
UNUSABLE = {
    "unsafe": "holds Python objects other than tensors",
    "truncated": "not a readable PyTorch checkpoint: it is a zip archive, but a truncated",
    "foreign_zip": "not a readable PyTorch checkpoint: it is a zip archive",
    "plain_pickle": "not a readable PyTorch checkpoint: it is a pickle",
    "random": "not a readable PyTorch checkpoint: it is neither a zip archive nor a pickle",
    "text": "not a readable PyTorch checkpoint: it is a text file",
    "empty": "not a readable PyTorch checkpoint: the file is empty",
    "tensor": "holds a Tensor, not a checkpoint",
    "missing": "no such file",
    "directory": "is a directory",
}


def write_unusable(path: Path, kind: str, checkpoint: Path | None = None) -> None:
    if kind == "unsafe":
        torch.save({"state_dict": {}, "payload": Payload()}, path)
    elif kind == "truncated":
        path.write_bytes(checkpoint.read_bytes()[:1000])
    elif kind == "foreign_zip":
        shutil.make_archive(str(path.with_suffix("")), "zip", root_dir=REPO / "configs")
        path.with_suffix(".zip").rename(path)
    elif kind == "plain_pickle":
        path.write_bytes(pickle.dumps({"state_dict": {}}, protocol=4))
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "text":
        path.write_text("not a checkpoint")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "directory":
        path.mkdir()


@pytest.mark.parametrize("kind", list(UNUSABLE))
def test_unusable_checkpoint_files_are_refused_clearly(vit_checkpoint, tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "x.ckpt"
    write_unusable(path, kind, vit_checkpoint)
    with pytest.raises(CheckpointError, match=re.escape(UNUSABLE[kind])) as err:
        AtomicCheckpointIO().load_checkpoint(path)
    assert "weights_only" not in str(err.value) and path.name in str(err.value)
    assert not (tmp_path / "PWNED").exists()


def test_cli_with_a_random_file_as_checkpoint_says_what_it_is(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_unusable(tmp_path / "random.ckpt", "random")
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "--config", QUICK, *SMALL, "--ckpt_path", "random.ckpt"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "random.ckpt is not a readable PyTorch checkpoint: it is neither a zip archive nor a pickle" in err
    assert "weights_only" not in err and "Traceback" not in err


def test_cli_refuses_an_unsafe_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": {}, "payload": Payload()}, tmp_path / "evil.ckpt")
    with pytest.raises(SystemExit):
        main(["validate", "--config", QUICK, *SMALL, "--ckpt_path", str(tmp_path / "evil.ckpt")])
    err = capsys.readouterr().err
    assert "holds Python objects" in err and "posix.system" in err and "Traceback" not in err
    assert "weights_only" not in err
    assert not (tmp_path / "PWNED").exists()


# --------------------------------------------------------------------------- predict inputs


def test_predict_reads_any_image_and_reports_bad_files_one_by_one(tmp_path):
    rng = np.random.default_rng(0)
    good = {
        "rgba.png": Image.fromarray(rng.integers(0, 256, (300, 200, 4), dtype=np.uint8)),
        "gray.jpg": Image.fromarray(rng.integers(0, 256, (7, 5), dtype=np.uint8)),
        "palette.gif": Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).convert("P"),
        "cmyk.jpg": Image.fromarray(rng.integers(0, 256, (33, 90, 3), dtype=np.uint8)).convert("CMYK"),
        "bw.bmp": Image.fromarray(rng.integers(0, 2, (64, 64), dtype=np.uint8) * 255).convert("1"),
        "float.tif": Image.fromarray(rng.random((20, 20), dtype=np.float32)),
        "wide16.png": Image.fromarray(rng.integers(0, 65535, (1, 500), dtype=np.uint16)),
    }
    for name, image in good.items():
        image.save(tmp_path / name)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "half.png").write_bytes((tmp_path / "rgba.png").read_bytes()[:200])
    (tmp_path / "folder.jpg").mkdir()
    paths = [tmp_path / n for n in good] + [tmp_path / n for n in ("empty.png", "notes.png", "half.png", "folder.jpg", "missing.png")]
    items = [ImageFileDataset(paths)[i] for i in range(len(paths))]
    for item in items[: len(good)]:
        assert item["error"] == "" and item["image"].shape == (3, 32, 32) and torch.isfinite(item["image"]).all()
        assert item["image"].abs().max() < 3  # normalised with the training statistics
    errors = {Path(item["path"]).name: item["error"] for item in items[len(good):]}
    assert "empty file" in errors["empty.png"] and "is a directory" in errors["folder.jpg"]
    assert "no such file" in errors["missing.png"]
    assert "not a readable image" in errors["notes.png"] and "not a readable image" in errors["half.png"]
    assert all(str(tmp_path) in e and "\n" not in e for e in errors.values())


# --------------------------------------------------------------------------- numerics


EXTREMES = {"zeros": torch.zeros(2, 3, 32, 32), "all_255": torch.full((2, 3, 32, 32), 255.0)}


@pytest.mark.parametrize("preset", ["vit", "conv_vit", "slvit"])
@pytest.mark.parametrize("extreme", list(EXTREMES))
def test_bf16_autocast_stays_finite_on_extreme_images(preset, extreme):
    torch.manual_seed(0)
    model = ViT(ViTConfig.from_preset(preset, depth=2)).eval()
    images = normalize()(EXTREMES[extreme] / 255.0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits, maps = model(images, return_attention=True)
        fast = model(images)
    assert torch.isfinite(logits).all() and torch.isfinite(fast).all()
    assert all(torch.isfinite(m).all() for m in maps)


@pytest.mark.parametrize("preset", ["vit", "conv_vit", "slvit"])
def test_float16_model_stays_finite_on_extreme_images(preset):
    torch.manual_seed(0)
    model = ViT(ViTConfig.from_preset(preset, depth=2)).eval().half()
    for images in EXTREMES.values():
        with torch.no_grad():
            logits, maps = model(normalize()(images / 255.0).half(), return_attention=True)
        assert logits.dtype == torch.float16 and torch.isfinite(logits).all()
        assert all(torch.isfinite(m).all() for m in maps)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("tokens", ["zeros", "all_255", "random"])
def test_lsa_masking_stays_finite_in_half_precision(dtype, tokens):
    """The masked diagonal is -inf before the softmax (explicit path) or a boolean mask (SDPA);
    with constant tokens every other score ties."""
    torch.manual_seed(0)
    attention = Attention(dim=64, heads=4, locality=True).to(dtype).eval()
    x = {"zeros": torch.zeros(2, 17, 64), "all_255": torch.full((2, 17, 64), 255.0), "random": torch.randn(2, 17, 64)}
    x = x[tokens].to(dtype)
    with torch.no_grad():
        fast, _ = attention(x)
        explicit, weights = attention(x, return_attention=True)
    for out in (fast, explicit, weights):
        assert out.dtype == dtype and torch.isfinite(out).all()
    assert torch.all(weights.diagonal(dim1=-2, dim2=-1) == 0)  # the mask held
    torch.testing.assert_close(weights.float().sum(-1), torch.ones(2, 4, 17), atol=1e-2, rtol=0)
    torch.testing.assert_close(fast, explicit, atol=2e-2, rtol=2e-2)


def test_lsa_needs_a_second_token():
    with pytest.raises(ValueError, match="ViTConfig.attention='lsa'.*at least 2 tokens"):
        ViTConfig(image_size=8, patch_size=8, pool="mean", attention="lsa", dim=16, heads=2)
    assert ViTConfig(image_size=8, patch_size=8, pool="cls", attention="lsa", dim=16, heads=2).num_tokens == 2


@pytest.mark.parametrize("field", ["batch_size", "val_split", "seed"])
def test_none_is_refused_where_it_means_nothing(cifar_root, field):
    # Found by the property test above: batch_size=None passed the checks and failed later with a TypeError.
    with pytest.raises(ValueError, match=f"CIFAR100DataModule.{field} must be an integer"):
        CIFAR100DataModule(str(cifar_root), **{field: None}, download=False, verify_md5=False, quick=False)
