"""CIFAR100DataModule's ``pipeline`` option: the device-resident path ("batched", here on CPU tensors;
"gpu" is its older name)
against the torchvision path, "auto" resolution, resume reproducibility, and a CLI fit."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from scipy.stats import ttest_ind

from vitlib.augment import CIFAR100_MEAN, CIFAR100_STD
from vitlib.cli import main
from vitlib.data import CIFAR100DataModule
from vitlib.module import ViTModule
from vitlib.support.batched_augment import BatchLoader

REPO = Path(__file__).resolve().parents[1]
TINY = {"dim": 32, "depth": 1, "heads": 2}


def datamodule(root: Path, pipeline: str, **kwargs) -> CIFAR100DataModule:
    return CIFAR100DataModule(str(root), download=False, verify_md5=False, num_workers=0, pipeline=pipeline, **kwargs)


def concat(loader) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*loader)
    return torch.cat(images), torch.cat(labels)


def test_unaugmented_batches_equal_the_torchvision_ones(cifar_root):
    batched = datamodule(cifar_root, "batched", batch_size=32, augment=None, mix=None)
    plain = datamodule(cifar_root, "torchvision", batch_size=32, augment=None, mix=None)
    for dm in (batched, plain):
        dm.setup("fit")
    assert isinstance(batched.train_dataloader(), BatchLoader)
    # Evaluation: the same images in the same order, normalised the same way.
    for (a, labels_a), (b, labels_b) in zip(batched.val_dataloader(), plain.val_dataloader(), strict=True):
        assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        assert torch.equal(labels_a, labels_b)
    # Training: both paths seed an epoch's order with derive_seed(seed, epoch), so on the CPU they
    # draw the same permutation: the same images in the same order (512 = 16 x 32, all of them).
    (a, labels_a), (b, labels_b) = concat(batched.train_dataloader()), concat(plain.train_dataloader())
    assert a.shape == b.shape == (512, 3, 32, 32) and torch.equal(labels_a, labels_b)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def pixel_levels(images: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation: uint8 levels, as floats."""
    mean = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)
    return (images * std + mean) * 255


@pytest.mark.parametrize("augment_plain", [True, False])
def test_augmented_epochs_have_the_torchvision_statistics(cifar_root, augment_plain):
    """Per-image mean brightness over two epochs: the device pipeline and torchvision agree (Welch
    t-test); the negative control (torchvision without augmentation) must be told apart, so the
    test has the power to see what augmentation does to this statistic."""
    batched = datamodule(cifar_root, "batched", batch_size=64, mix=None)
    plain = datamodule(cifar_root, "torchvision", batch_size=64, mix=None, **({} if augment_plain else {"augment": None}))
    torch.manual_seed(0)  # torchvision's transforms draw from the global generator
    means = {}
    for name, dm in (("batched", batched), ("plain", plain)):
        dm.setup("fit")
        loader = dm.train_dataloader()
        images = torch.cat([concat(loader)[0] for _ in range(2)])
        levels = pixel_levels(images)
        # Augmentation happens in uint8, before normalising: the levels are whole numbers.
        assert (levels - levels.round()).abs().max() < 1e-3
        means[name] = levels.mean(dim=(1, 2, 3))
    p_value = ttest_ind(means["batched"], means["plain"], equal_var=False).pvalue
    if augment_plain:
        assert p_value > 1e-3
    else:
        assert p_value < 1e-3


def test_auto_picks_the_device_pipeline_on_one_gpu_only():
    def trainer(device: str, world_size: int) -> SimpleNamespace:
        return SimpleNamespace(world_size=world_size, strategy=SimpleNamespace(root_device=torch.device(device)))

    dm = CIFAR100DataModule(pipeline="auto")
    assert dm.active_pipeline == "torchvision"  # no trainer attached
    for device, world_size, expected in (("cuda", 1, "batched"), ("cpu", 1, "torchvision"), ("cuda", 2, "torchvision")):
        dm.trainer = trainer(device, world_size)
        assert dm.active_pipeline == expected
    explicit = CIFAR100DataModule(pipeline="batched")
    explicit.trainer = trainer("cuda", 2)
    with pytest.raises(ValueError, match="pipeline='torchvision'"):
        explicit.active_pipeline
    with pytest.raises(ValueError, match=r"pipeline must be one of 'auto', 'torchvision', 'batched' \(or 'gpu' for 'batched'\); got 'cuda'"):
        CIFAR100DataModule(pipeline="cuda")


@pytest.mark.parametrize("name", ["batched", "gpu"])
def test_gpu_is_the_older_name_of_the_batched_pipeline(cifar_root, name):
    """Configs and recorded runs written before the rename say "gpu": it is read as "batched", on
    a CPU as on a GPU, and the data module reports "batched" as the pipeline in use."""
    dm = datamodule(cifar_root, name, batch_size=32, augment=None, mix=None)
    assert dm.hparams.pipeline == dm.active_pipeline == "batched"
    dm.setup("fit")
    assert isinstance(dm.train_dataloader(), BatchLoader) and isinstance(dm.val_dataloader(), BatchLoader)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (32, 3, 32, 32) and labels.shape == (32,)
    dm.trainer = SimpleNamespace(world_size=2, strategy=SimpleNamespace(root_device=torch.device("cuda")))
    with pytest.raises(ValueError, match="pipeline='batched' keeps the whole dataset on one device"):
        dm.active_pipeline


class RecordBatches(L.Callback):
    def __init__(self) -> None:
        self.epochs: dict[int, list[torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        images, labels = batch
        self.epochs.setdefault(trainer.current_epoch, []).append(torch.cat([images.flatten(1), labels[:, None]], 1))


def test_a_resumed_run_sees_the_same_epoch(cifar_root, tmp_path):
    def fit(name: str, max_epochs: int, ckpt_path: Path | None = None) -> dict[int, torch.Tensor]:
        record = RecordBatches()
        trainer = L.Trainer(
            max_epochs=max_epochs,
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            default_root_dir=tmp_path,
            callbacks=[record, ModelCheckpoint(dirpath=tmp_path / name, save_last=True)],
        )
        trainer.fit(ViTModule("vit_tiny", TINY), datamodule(cifar_root, "batched", batch_size=128, mix=None), ckpt_path=ckpt_path)
        return {epoch: torch.cat(batches) for epoch, batches in record.epochs.items()}

    full = fit("full", 2)
    assert not torch.equal(full[0], full[1])  # each epoch has its own order and augmentations
    fit("first", 1)
    resumed = fit("resumed", 2, tmp_path / "first" / "last.ckpt")
    assert list(resumed) == [1] and torch.equal(resumed[1], full[1])


def test_quick_fit_with_the_batched_pipeline_on_a_cpu(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VITLIB_QUICK", "1")
    small = ["--data.quick_train_size", "128", "--data.quick_test_size", "101", "--data.batch_size", "32"]
    main(["fit", "--config", str(REPO / "configs" / "quick.yaml"), "--trainer.max_epochs", "1",
          "--data.pipeline", "batched", *small])  # fmt: skip
    metrics = json.loads((tmp_path / "runs/vitlib/version_0/metrics.json").read_text())
    assert metrics["samples"] == 101  # every validation image once, from the device-held test set
    assert metrics["global_step"] == 4 and metrics["config"]["data"]["pipeline"] == "batched"


def test_the_long_recipe_trains_with_every_augmentation_firing(tmp_path, monkeypatch):
    """configs/cpu_long.yaml, a few steps on quick data: the batches its training step sees are
    mixed (soft targets) and were augmented before (no image left as stored), and RandAugment
    itself fires (the same epoch's first batch with crop + flip alone differs in most images)."""
    from vitlib.augment import AugmentConfig, BatchMixer

    seen: dict[str, torch.Tensor] = {}
    mix = BatchMixer.__call__
    step = ViTModule.training_step

    def mixing(self, images, labels):
        seen.setdefault("before_mix", images.clone())
        return mix(self, images, labels)

    def training_step(self, batch, batch_idx):
        seen.setdefault("images", batch[0].clone())
        seen.setdefault("targets", batch[1].clone())
        return step(self, batch, batch_idx)

    monkeypatch.setattr(BatchMixer, "__call__", mixing)
    monkeypatch.setattr(ViTModule, "training_step", training_step)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VITLIB_QUICK", raising=False)
    main(["fit", "--config", str(REPO / "configs/cpu_long.yaml"), "--data.quick", "true", "--trainer.max_epochs", "1",
          "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
          "--trainer.enable_model_summary", "false"])  # fmt: skip
    config = json.loads(next(tmp_path.glob("runs/vitlib/version_0/metrics.json")).read_text())["config"]
    assert config["data"]["augment"]["randaugment"] and config["data"]["mix"]["prob"] == 1.0
    assert config["model"]["schedule"]["name"] == "cyclic"

    targets = seen["targets"]
    assert targets.shape == (128, 100) and targets.dtype == torch.float32
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(128))
    # Every image is mixed with another; only a pair of the same class (1 in 100) keeps a one-hot row.
    assert (targets.max(dim=1).values < 1).float().mean() > 0.9

    # Before mixing: no training image reaches the model as stored (crop, flip, RandAugment).
    dm = CIFAR100DataModule(quick=True, batch_size=128, augment=None, mix=None, pipeline="batched", num_workers=0)
    dm.setup("fit")
    originals = dm._device_loader(dm.train_set, 512, train=False)  # the 512 stored images, in order
    plain = next(iter(originals))[0]
    before = seen["before_mix"]
    distance = (before[:, None] - plain[None]).abs().flatten(2).amax(dim=2).min(dim=1).values
    assert (distance > 1e-4).all()

    # RandAugment fires: the same first batch of epoch 0 with crop + flip alone.
    crop_flip = BatchLoader(originals.images, originals.labels, 128, AugmentConfig(randaugment=False),
                               CIFAR100_MEAN, CIFAR100_STD, shuffle=True, seed=0)  # fmt: skip
    without = next(iter(crop_flip))[0]
    changed = (before - without).abs().flatten(1).amax(dim=1) > 1e-4
    assert changed.float().mean() > 0.8, changed.float().mean()
