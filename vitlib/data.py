"""The CIFAR-100 DataModule: splits, the augmentation pipeline per batch, loaders. Taught in chapter 6.

:class:`CIFAR100DataModule` reads the dataset through :mod:`vitlib.support.cifar` (finding,
downloading, verifying, or writing synthetic stand-ins in quick mode), holds out part of the
training set when asked, and applies chapter 4's augmentations on the CPU or, batched, on the GPU.
:class:`ImageFileDataset` reads the reader's own image files for ``predict``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from einops import rearrange
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets import CIFAR100
from torchvision.transforms import v2

from .augment import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGE_SIZE,
    AugmentConfig,
    BatchMixer,
    MixConfig,
    eval_transform,
    train_transform,
)
from .support.cifar import (
    FINE_LABELS,
    FOLDER,
    NUM_CLASSES,
    SYNTHETIC_VERSION,
    DatasetId,
    default_data_dir,
    ensure_cifar100,
    identify_cifar100,
    is_complete,
    load_cifar100,
    make_synthetic_cifar100,
    quick_mode,
    with_transform,
)
from .support.batched_augment import BatchLoader
from .support.seeding import EpochSampler, SeededSamples, rng_state, set_rng_state


def predict_transform() -> v2.Compose:
    """Any-size RGB image -> ``[3, 32, 32]``: shorter side resized to 32, centre crop, as eval."""
    return v2.Compose([v2.Resize(IMAGE_SIZE), v2.CenterCrop(IMAGE_SIZE), eval_transform()])


def _describe(path: Path, err: Exception) -> str:
    if isinstance(err, FileNotFoundError):
        problem = "no such file"
    elif isinstance(err, IsADirectoryError) or path.is_dir():
        problem = "is a directory, not an image file"
    elif path.is_file() and path.stat().st_size == 0:
        problem = "empty file"
    else:
        problem = f"not a readable image ({type(err).__name__}: {err})"
    return " ".join(f"{path}: {problem}".split())  # one line


class ImageFileDataset(Dataset):
    """Image files for prediction: items ``{"image": [3, 32, 32], "path": str, "error": str}``.

    A file that cannot be read gives a zero image and a one-line ``error`` instead of an
    exception, so one bad path does not stop the predictions for the others.
    """

    def __init__(self, paths: Sequence[str | Path], transform: Any = None) -> None:
        self.paths = [Path(p) for p in paths]
        self.transform = predict_transform() if transform is None else transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")  # greyscale, palette, RGBA, CMYK...
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            blank = torch.zeros(3, IMAGE_SIZE, IMAGE_SIZE)
            return {"image": blank, "path": str(path), "error": _describe(path, err)}
        return {"image": self.transform(rgb), "path": str(path), "error": ""}


# Where training images are augmented: "torchvision" (per image, in DataLoader workers on the CPU:
# the plain path the book teaches), "batched" (the whole split held as uint8 on the training device,
# a GPU or the CPU itself, each batch augmented there at once by vitlib.support.batched_augment, same
# distribution), or "auto" ("batched" when training on one CUDA device, "torchvision" otherwise).
PIPELINES = ("auto", "torchvision", "batched")
# Older names, accepted and read as the new one: "gpu" named the batched pipeline before it ran on
# CPUs too (configs and recorded runs written before the rename say "gpu").
PIPELINE_ALIASES = {"gpu": "batched"}


def _uint8_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """A CIFAR-100 split (or a ``Subset`` of one) as uint8 images ``[N, 3, 32, 32]`` and int64 labels."""
    index: Any = slice(None)
    if isinstance(dataset, Subset):
        dataset, index = dataset.dataset, dataset.indices
    images = torch.from_numpy(rearrange(dataset.data[index], "n h w c -> n c h w").copy())
    labels = torch.from_numpy(np.asarray(dataset.targets, dtype=np.int64)[index])
    return images, labels


class _TrainerEpochs:
    """Iterates a ``BatchLoader`` at the trainer's current epoch.

    Lightning calls ``set_epoch`` only on a DataLoader's sampler; this sets the loader's epoch from
    the trainer at the start of every pass, so epoch ``e`` draws the same order and augmentations
    in a run resumed from a checkpoint as in an uninterrupted one.
    """

    def __init__(self, loader: BatchLoader, trainer: L.Trainer) -> None:
        self.loader, self.trainer = loader, trainer

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        # A generator: Lightning calls iter() once just to check that the loader is iterable.
        # The epoch count Lightning gives samplers' set_epoch (also right after a resume).
        self.loader.set_epoch(self.trainer.fit_loop.epoch_progress.current.processed)
        yield from self.loader


class CIFAR100DataModule(L.LightningDataModule):
    """CIFAR-100 for Lightning: augmented training batches (mixed on the device), validation, test
    and prediction on image files.

    Validation is the CIFAR-100 test set unless ``val_split=N > 0`` holds out ``N`` training images
    (chosen with ``seed``). ``augment=None`` / ``mix=None`` switch augmentation / CutMix-MixUp off.
    ``quick`` (default: ``VITLIB_QUICK``) swaps in a small synthetic dataset for runs on a CPU.
    ``pipeline`` chooses where images are augmented (see ``PIPELINES``; "gpu" is read as
    "batched", its older name); with "batched" the training, validation and test splits are held
    on the training device and ``num_workers`` is unused. Prediction on image files always reads
    them in DataLoader workers.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        val_split: int = 0,
        seed: int = 0,
        download: bool = True,
        verify_md5: bool = True,
        augment: AugmentConfig | None = AugmentConfig(),
        mix: MixConfig | None = MixConfig(),
        quick: bool | None = None,
        quick_train_size: int = 512,
        quick_test_size: int = 256,
        predict_files: list[str] | None = None,
        pipeline: str = "auto",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # Plain values in the checkpoint, so that it loads with torch.load(weights_only=True), and
        # accepted back as such (load_from_checkpoint).
        augment = AugmentConfig(**augment) if isinstance(augment, dict) else augment
        mix = MixConfig(**mix) if isinstance(mix, dict) else mix
        for name, value in (("augment", augment), ("mix", mix)):
            self.hparams[name] = None if value is None else dataclasses.asdict(value)
        counts = {"batch_size": (batch_size, 1), "eval_batch_size": (eval_batch_size, 1), "num_workers": (num_workers, 0),
                  "val_split": (val_split, 0), "seed": (seed, 0), "quick_train_size": (quick_train_size, 1),
                  "quick_test_size": (quick_test_size, 1)}  # fmt: skip
        for name, (value, least) in counts.items():
            if value is None and name in ("eval_batch_size", "num_workers"):  # None: batch_size, and automatic
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                hint = " (0 = validate on the test set)" if name == "val_split" else ""
                raise ValueError(f"CIFAR100DataModule.{name} must be an integer >= {least}{hint}; got {value!r}")
        if pipeline not in PIPELINES and pipeline not in PIPELINE_ALIASES:
            old = ", ".join(f"{old!r} for {new!r}" for old, new in PIPELINE_ALIASES.items())
            raise ValueError(f"pipeline must be one of {', '.join(map(repr, PIPELINES))} (or {old}); got {pipeline!r}")
        self.hparams["pipeline"] = PIPELINE_ALIASES.get(pipeline, pipeline)
        self.quick = quick_mode() if quick is None else quick
        self.data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
        self.augment = augment
        self.train_transform = train_transform(augment)
        self.eval_transform = eval_transform()
        self.mixer = BatchMixer(mix, NUM_CLASSES) if mix is not None else None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.predict_set: ImageFileDataset | None = None

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES

    @property
    def classes(self) -> list[str]:
        return list(FINE_LABELS)

    @property
    def quick_root(self) -> Path:
        """Where quick mode keeps its synthetic data; keyed by sizes and seed, so runs reuse it."""
        hp = self.hparams
        sizes = f"{hp.quick_train_size}-{hp.quick_test_size}"
        return Path(tempfile.gettempdir()) / f"vitlib-synthetic-cifar100-v{SYNTHETIC_VERSION}-{sizes}-seed{hp.seed}"

    def _root(self) -> Path:
        if self.quick:
            if not is_complete(self.quick_root / FOLDER):
                hp = self.hparams
                make_synthetic_cifar100(self.quick_root, hp.quick_train_size, hp.quick_test_size, hp.seed)
            return self.quick_root
        return ensure_cifar100(self.data_dir, download=self.hparams.download, verify_md5=self.hparams.verify_md5)

    def _load(self, train: bool, transform: Any) -> CIFAR100:
        verify = self.hparams.verify_md5 and not self.quick
        return load_cifar100(self._root(), train, transform, download=self.hparams.download, verify_md5=verify)

    def prepare_data(self) -> None:
        # Lightning calls this on one process per node: download / extract / synthesise once.
        # Prediction reads image files only and must work without the dataset.
        if self.trainer is not None and self.trainer.state.fn == "predict":
            return
        self._root()

    def describe(self, split: str) -> dict[str, str]:
        """Which data a split's metrics come from, for results files and figure captions."""
        # Never the data folder's path: results files and the book are read on other machines.
        dataset = (DatasetId.SYNTHETIC if self.quick else identify_cifar100(self.data_dir)).label
        if split == "train":
            images = "training set" if self.hparams.val_split == 0 else "training set minus the held-out images"
        elif split == "val" and self.hparams.val_split > 0:
            images = f"{self.hparams.val_split} training images held out (seed {self.hparams.seed})"
        else:
            images = "test set" + (" (used as the validation set)" if split == "val" else "")
        return {"dataset": dataset, "images": images}

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and self.train_set is None:
            self._setup_train_val()
        if stage == "test" and self.test_set is None:
            self.test_set = self._load(False, self.eval_transform)
        if stage == "predict":
            files = self.hparams.predict_files
            if not files:
                raise ValueError("predict_files is empty: pass the image paths to predict, e.g. --data.predict_files")
            self.predict_set = ImageFileDataset(files)

    def _setup_train_val(self) -> None:
        train = self._load(True, self.train_transform)
        n_val = self.hparams.val_split
        if n_val == 0:
            self.train_set = train
            if self.test_set is None:
                self.test_set = self._load(False, self.eval_transform)
            self.val_set = self.test_set
        else:
            if n_val >= len(train):
                raise ValueError(f"val_split ({n_val}) must be smaller than the training set ({len(train)} images)")
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.hparams.seed)).tolist()
            self.val_set = Subset(with_transform(train, self.eval_transform), order[:n_val])
            self.train_set = Subset(train, order[n_val:])
        if len(self.train_set) < self.batch_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) is larger than the training set ({len(self.train_set)} images): "
                f"with drop_last no batch would be trained; lower batch_size"
            )

    @property
    def active_pipeline(self) -> str:
        """The pipeline in use: ``pipeline`` with "auto" resolved against the attached trainer."""
        trainer = self.trainer
        world_size = trainer.world_size if trainer is not None else 1
        if self.hparams.pipeline == "batched" and world_size > 1:
            raise ValueError(
                f"pipeline='batched' keeps the whole dataset on one device and does not split it between the "
                f"{world_size} processes of this run; use pipeline='torchvision' (or 'auto') with several devices"
            )
        if self.hparams.pipeline == "auto":
            on_one_gpu = trainer is not None and world_size == 1 and trainer.strategy.root_device.type == "cuda"
            return "batched" if on_one_gpu else "torchvision"
        return self.hparams.pipeline

    def _device_loader(self, dataset: Dataset, batch_size: int, train: bool) -> BatchLoader | _TrainerEpochs:
        """The split on the training device: shuffled, augmented, full batches for training; in
        order, unaugmented, every sample for evaluation."""
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        images, labels = _uint8_tensors(dataset)
        loader = BatchLoader(
            images.to(device),
            labels.to(device),
            batch_size,
            self.augment if train else None,
            CIFAR100_MEAN,
            CIFAR100_STD,
            shuffle=train,
            drop_last=train,
            seed=self.hparams.seed,
        )
        return _TrainerEpochs(loader, self.trainer) if train and self.trainer is not None else loader

    def _loader(self, dataset: Dataset, batch_size: int, **kwargs: Any) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            # The workers' base seed is drawn from here, not from the global generator, so that
            # loading data does not move the stream that mixing and dropout draw from.
            generator=torch.Generator().manual_seed(self.hparams.seed),
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader | BatchLoader | _TrainerEpochs:
        if self.active_pipeline == "batched":
            return self._device_loader(self.train_set, self.batch_size, train=True)
        # Order and augmentation are functions of (seed, epoch), so a resumed run sees the same
        # epochs; on a resume the epoch to start at is Lightning's count of processed epochs.
        epoch = self.trainer.fit_loop.epoch_progress.current.processed if self.trainer is not None else 0
        sampler = EpochSampler(len(self.train_set), self.hparams.seed, epoch)
        return self._loader(SeededSamples(self.train_set), self.batch_size, sampler=sampler, drop_last=True)

    def _eval_loader(self, dataset: Dataset) -> DataLoader | BatchLoader:
        if self.active_pipeline == "batched":
            return self._device_loader(dataset, self.eval_batch_size, train=False)
        # Under DDP, Lightning's default sampler pads the last batch with repeated samples, which
        # would count them twice in the metrics; a sampler that does not pad is kept as it is.
        sampler = None
        if self.trainer is not None and self.trainer.world_size > 1:
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False, **self.trainer.distributed_sampler_kwargs)
        return self._loader(dataset, self.eval_batch_size, shuffle=False, sampler=sampler)

    def val_dataloader(self) -> DataLoader | BatchLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader | BatchLoader:
        return self._eval_loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set, self.eval_batch_size, shuffle=False)

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints: the global generator state, which mixing and dropout draw from."""
        return {"rng": rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "rng" in state_dict:
            set_rng_state(state_dict["rng"])

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Mix training batches on the device (one kernel for the whole batch, not per image)."""
        if self.mixer is not None and self.trainer is not None and self.trainer.training:
            images, labels = batch
            return self.mixer(images, labels)
        return batch
