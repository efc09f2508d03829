"""CIFAR-100: class names, finding / extracting / reading the dataset, synthetic data, the DataModule.

The dataset is read with ``torchvision.datasets.CIFAR100`` from ``<root>/cifar-100-python/``.
Synthetic data (quick mode, tests) is written in the original pickle layout, so it goes through
exactly the same reading code as the real files.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
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
from torchvision.datasets.vision import StandardTransform
from torchvision.datasets.utils import check_integrity, download_url, extract_archive
from torchvision.transforms import v2

from .augment import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGE_SIZE,
    AugmentConfig,
    BatchMixer,
    MixConfig,
    denormalize,
    eval_transform,
    normalize,
    train_transform,
)
from .files import atomic_write
from .gpu_augment import GPUBatchLoader
from .seeding import EpochSampler, SeededSamples, rng_state, set_rng_state

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "COARSE_LABELS",
    "FINE_LABELS",
    "FINE_TO_COARSE",
    "CIFAR100DataModule",
    "DatasetNotFoundError",
    "ImageFileDataset",
    "PIPELINES",
    "default_data_dir",
    "denormalize",
    "ensure_cifar100",
    "identify_cifar100",
    "load_cifar100",
    "make_synthetic_cifar100",
    "normalize",
    "predict_transform",
    "quick_mode",
    "write_cifar100",
]

# The official names, in label-index order (the `meta` file of the release).
FINE_LABELS = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table",
    "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
]  # fmt: skip
COARSE_LABELS = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
]  # fmt: skip
# FINE_TO_COARSE[fine] is the superclass of a fine label (from the labels stored with the images).
FINE_TO_COARSE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]  # fmt: skip
NUM_CLASSES = len(FINE_LABELS)

FOLDER = CIFAR100.base_folder  # "cifar-100-python"
ARCHIVE = CIFAR100.filename  # "cifar-100-python.tar.gz"
FILES = ("train", "test", "meta")


class DatasetNotFoundError(RuntimeError):
    """No usable CIFAR-100 under the given root (missing, corrupt, or not the official files)."""


def quick_mode() -> bool:
    """True when the environment variable ``VITLIB_QUICK`` is 1 / true / yes (any case)."""
    return os.environ.get("VITLIB_QUICK", "").strip().lower() in {"1", "true", "yes"}


def default_data_dir() -> Path:
    """``$VITLIB_DATA``, or ``./data``."""
    return Path(os.environ.get("VITLIB_DATA") or "data").expanduser()


# --------------------------------------------------------------------------- writing the pickles


def _atomic_pickle(path: Path, obj: Any) -> None:
    with atomic_write(path) as f:
        pickle.dump(obj, f, protocol=2)  # the protocol of the original (Python 2) pickles


def _split_record(images: np.ndarray, fine: Sequence[int], name: str, batch_label: str) -> dict[str, Any]:
    images = np.asarray(images)
    fine = [int(label) for label in fine]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"{name}_images must be uint8 [N, 32, 32, 3] (HWC); got {images.dtype} {list(images.shape)}")
    if len(fine) != len(images):
        raise ValueError(f"{name}_fine has {len(fine)} labels for {len(images)} {name} images")
    if any(not 0 <= label < NUM_CLASSES for label in fine):
        raise ValueError(f"{name}_fine labels must be in [0, {NUM_CLASSES}); got min {min(fine)}, max {max(fine)}")
    # Key order, types and the channel-planar rows (all of R, then G, then B) are those of the release.
    return {
        "filenames": [f"synthetic_{name}_{i:06d}.png" for i in range(len(fine))],
        "batch_label": batch_label,
        "fine_labels": fine,
        "coarse_labels": [FINE_TO_COARSE[label] for label in fine],
        "data": np.ascontiguousarray(rearrange(images, "n h w c -> n (c h w)")),
    }


def write_cifar100(
    root: str | Path,
    train_images: np.ndarray,
    train_fine: Sequence[int],
    test_images: np.ndarray,
    test_fine: Sequence[int],
) -> Path:
    """Write ``root/cifar-100-python/{train,test,meta}`` in the original pickle layout; returns ``root``.

    Images are ``uint8 [N, 32, 32, 3]`` (HWC, as ``CIFAR100(...).data``); coarse labels follow
    from ``FINE_TO_COARSE``. Each file is written atomically.
    """
    root = Path(root)
    folder = root / FOLDER
    records = {
        "train": _split_record(train_images, train_fine, "train", "training batch 1 of 1"),
        "test": _split_record(test_images, test_fine, "test", "testing batch 1 of 1"),
        "meta": {"fine_label_names": list(FINE_LABELS), "coarse_label_names": list(COARSE_LABELS)},
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, record in records.items():
        _atomic_pickle(folder / name, record)
    return root


def _synthetic_split(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images with balanced labels: each class is a stripe pattern (orientation and period)
    in two class colours, with a random phase and pixel noise, so colour alone nearly gives the
    class and a tiny model learns it within a few hundred steps."""
    palette = np.random.default_rng(100).integers(0, 256, size=(NUM_CLASSES, 2, 3))  # fixed per class
    labels = rng.permutation(np.arange(n) % NUM_CLASSES)
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    axes = np.stack([yy, xx, yy + xx, yy - xx + IMAGE_SIZE])  # 4 stripe orientations
    period = 4 + 2 * ((labels // 4) % 4)  # 4, 6, 8 or 10 pixels
    phase = rng.integers(0, 10, size=n)
    u = axes[labels % 4] + phase[:, None, None]  # [n, H, W]
    stripe = (u // (period[:, None, None] // 2)) % 2  # 0 background / 1 stripe
    colours = palette[labels[:, None, None], stripe]  # [n, H, W, 3]
    noisy = colours + rng.normal(0.0, 16.0, size=colours.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8), labels


SYNTHETIC_VERSION = 1  # bump when the generator changes, so cached quick-mode data is not reused


def make_synthetic_cifar100(root: str | Path, n_train: int = 512, n_test: int = 256, seed: int = 0) -> Path:
    """Learnable synthetic images in the CIFAR-100 layout under ``root`` (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    train_images, train_fine = _synthetic_split(rng, n_train)
    test_images, test_fine = _synthetic_split(rng, n_test)
    return write_cifar100(root, train_images, train_fine, test_images, test_fine)


# --------------------------------------------------------------------------- finding and reading


class _ExistenceCheckedCIFAR100(CIFAR100):
    """``CIFAR100`` that only checks that the files exist.

    torchvision's ``_check_integrity`` and ``_load_meta`` skip the md5 when it is ``None``
    (``check_integrity(path, None)``), so clearing the checksums covers both checks without
    overriding either method.
    """

    train_list = [[name, None] for name, _ in CIFAR100.train_list]
    test_list = [[name, None] for name, _ in CIFAR100.test_list]
    meta = {**CIFAR100.meta, "md5": None}


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILES)


def _how_to_fix(root: Path) -> str:
    return (
        f"Put {ARCHIVE} (or the extracted {FOLDER}/ folder) in {root}, or set VITLIB_DATA to the folder "
        f"that holds it, or set VITLIB_QUICK=1 to train on synthetic data."
    )


def _extract(archive: Path, root: Path) -> None:
    """Extract the archive into a temporary folder and move the files into place, so that a
    corrupt or truncated archive leaves nothing half-extracted behind."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER}-extract-", dir=root))
    try:
        try:
            extract_archive(archive, tmp)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
            raise DatasetNotFoundError(
                f"{archive} is corrupt or truncated ({type(err).__name__}: {err}); nothing was extracted. "
                f"Delete it and put a complete copy there (md5 {CIFAR100.tgz_md5})."
            ) from err
        if not _complete(tmp / FOLDER):
            raise DatasetNotFoundError(
                f"{archive} does not contain {FOLDER}/{{{','.join(FILES)}}}; nothing was extracted. "
                f"Replace it with the official {ARCHIVE} (md5 {CIFAR100.tgz_md5})."
            )
        (root / FOLDER).mkdir(exist_ok=True)
        for name in FILES:
            os.replace(tmp / FOLDER / name, root / FOLDER / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _download(root: Path, verify_md5: bool) -> None:
    """Download the archive into ``root`` with torchvision.

    torchvision's download has no timeout, so behind a firewall that drops packets it would hang
    for minutes; a short request first (through any configured proxy) makes "offline" fail in seconds.
    """
    try:
        urllib.request.urlopen(urllib.request.Request(CIFAR100.url, method="HEAD"), timeout=10).close()
    except urllib.error.HTTPError:
        pass  # the server answered: reachable, let torchvision handle the rest
    part = root / f".{ARCHIVE}.part"  # renamed when complete: a killed download leaves no truncated archive
    try:
        download_url(CIFAR100.url, root, part.name, md5=CIFAR100.tgz_md5 if verify_md5 else None)
        os.replace(part, root / ARCHIVE)
    finally:
        part.unlink(missing_ok=True)


def ensure_cifar100(root: str | Path, download: bool = True, verify_md5: bool = True) -> Path:
    """Make ``root/cifar-100-python/{train,test,meta}`` exist: use the folder if complete, else
    extract ``root/cifar-100-python.tar.gz``, else download it. Returns ``root`` (absolute).

    Raises ``DatasetNotFoundError`` (a ``RuntimeError``) with what to do when none of that works.
    Checksums are checked when the dataset is read (:func:`load_cifar100`).
    """
    root = Path(root).expanduser().absolute()
    if _complete(root / FOLDER):
        return root
    if _complete(root):  # the files themselves, one level too high: say so instead of downloading
        where = (
            f"{root} is the {FOLDER}/ folder itself: pass the folder that contains it, {root.parent}"
            if root.name == FOLDER
            else f"the files {', '.join(FILES)} are directly in {root}: move them into {root / FOLDER}/"
        )
        raise DatasetNotFoundError(f"CIFAR-100 is not laid out as expected: {where}.")
    archive = root / ARCHIVE
    reason = "download=False"
    if not archive.is_file() and download:
        try:
            _download(root, verify_md5)
        except (urllib.error.URLError, OSError, RuntimeError) as err:  # offline, HTTP error, bad md5
            archive.unlink(missing_ok=True)  # a partial download is worse than none
            reason = f"the download failed: {err}"
    if archive.is_file():
        _extract(archive, root)
        return root
    raise DatasetNotFoundError(f"CIFAR-100 not found in {root} ({reason}). {_how_to_fix(root)}")


# What a results file or caption calls each dataset (identify_cifar100).
DATASET_OFFICIAL = "CIFAR-100 (official release, md5-verified)"
DATASET_Q75 = "CIFAR-100 (JPEG q75 copy)"
DATASET_UNVERIFIED = "CIFAR-100 layout, unverified files (neither the official release nor the JPEG q75 copy)"
# sha256 of each split's pixel array (N x 3072 uint8 planes, as stored in its pickle) in the
# quality-75 JPEG copy of CIFAR-100 decoded with Pillow's libjpeg-turbo: pixels, not file bytes,
# identify it, because the pickles' bytes depend on the pickle protocol that wrote them.
Q75_PIXELS_SHA256 = {
    "train": "5b15b7eb2e65c02b2d1c642e6b844f629124b4c229377ac4c066b8a2fdbc66c5",
    "test": "70b865edb46f698c6edd1856811e06ff245c2bffef65302b53fb4b0a63afbd0b",
}


def official_md5(root: str | Path) -> bool:
    """True when every file under ``root/cifar-100-python`` has the official release's md5."""
    files = CIFAR100.train_list + CIFAR100.test_list + [[CIFAR100.meta["filename"], CIFAR100.meta["md5"]]]
    return all(check_integrity(str(Path(root) / FOLDER / name), md5) for name, md5 in files)


def _pixels_sha256(file: Path) -> str | None:
    try:
        with open(file, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        return hashlib.sha256(np.ascontiguousarray(entry["data"], dtype=np.uint8).tobytes()).hexdigest()
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError):
        return None


@functools.lru_cache(maxsize=8)
def _identify(folder: Path, stamp: tuple[float, ...]) -> str:
    if official_md5(folder.parent):
        return DATASET_OFFICIAL
    if all(_pixels_sha256(folder / split) == digest for split, digest in Q75_PIXELS_SHA256.items()):
        return DATASET_Q75
    return DATASET_UNVERIFIED


def identify_cifar100(root: str | Path) -> str:
    """Which CIFAR-100 lies under ``root/cifar-100-python``: ``DATASET_OFFICIAL``, ``DATASET_Q75``
    or ``DATASET_UNVERIFIED``; the label every results file and caption carries. About a second
    (md5 and pixel hashes); cached until the files change."""
    folder = Path(root).expanduser().absolute() / FOLDER
    stamp = tuple(p.stat().st_mtime if p.exists() else -1.0 for p in (folder / name for name in FILES))
    return _identify(folder, stamp)


def load_cifar100(
    root: str | Path,
    train: bool,
    transform: Any = None,
    download: bool = True,
    verify_md5: bool = True,
) -> CIFAR100:
    """The CIFAR-100 train or test split as a ``torchvision.datasets.CIFAR100``.

    ``verify_md5=True`` keeps torchvision's checksum test of every file, which only the official
    release passes. ``verify_md5=False`` only checks that the files exist: for synthetic data and
    for subsets of the real files.
    """
    root = ensure_cifar100(root, download=download, verify_md5=verify_md5)
    dataset_class = CIFAR100 if verify_md5 else _ExistenceCheckedCIFAR100
    try:
        return dataset_class(str(root), train=train, transform=transform, download=False)
    except RuntimeError as err:  # torchvision's "not found or corrupted": here always a checksum
        raise DatasetNotFoundError(
            f"the CIFAR-100 files in {root / FOLDER} fail torchvision's md5 check, so they are not the "
            f"official release (a subset, synthetic data, or damaged files). Replace them with the "
            f"official {ARCHIVE}, or pass verify_md5=False to read them as they are."
        ) from err
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as err:
        raise DatasetNotFoundError(
            f"the CIFAR-100 files in {root / FOLDER} are not readable CIFAR pickles ({type(err).__name__}: "
            f"{err}). {_how_to_fix(root)}"
        ) from err


def _with_transform(dataset: CIFAR100, transform: Any) -> CIFAR100:
    """A shallow copy that shares the image array and reads it through another transform."""
    view = copy.copy(dataset)
    view.transform = transform
    view.transforms = StandardTransform(transform, dataset.target_transform)
    return view


# --------------------------------------------------------------------------- prediction on files


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


# --------------------------------------------------------------------------- the DataModule

# Where training images are augmented: "torchvision" (per image, in DataLoader workers on the CPU:
# the plain path the book teaches), "gpu" (the whole split held as uint8 on the training device,
# each batch augmented there at once by vitlib.gpu_augment, same distribution), or "auto" ("gpu"
# when training on one CUDA device, "torchvision" otherwise).
PIPELINES = ("auto", "torchvision", "gpu")


def _uint8_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """A CIFAR-100 split (or a ``Subset`` of one) as uint8 images ``[N, 3, 32, 32]`` and int64 labels."""
    index: Any = slice(None)
    if isinstance(dataset, Subset):
        dataset, index = dataset.dataset, dataset.indices
    images = torch.from_numpy(rearrange(dataset.data[index], "n h w c -> n c h w").copy())
    labels = torch.from_numpy(np.asarray(dataset.targets, dtype=np.int64)[index])
    return images, labels


class _TrainerEpochs:
    """Iterates a ``GPUBatchLoader`` at the trainer's current epoch.

    Lightning calls ``set_epoch`` only on a DataLoader's sampler; this sets the loader's epoch from
    the trainer at the start of every pass, so epoch ``e`` draws the same order and augmentations
    in a run resumed from a checkpoint as in an uninterrupted one.
    """

    def __init__(self, loader: GPUBatchLoader, trainer: L.Trainer) -> None:
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
    ``pipeline`` chooses where images are augmented (see ``PIPELINES``); with "gpu" the
    training, validation and test splits are held on the training device and ``num_workers`` is
    unused. Prediction on image files always reads them in DataLoader workers.
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
        if pipeline not in PIPELINES:
            raise ValueError(f"pipeline must be one of {', '.join(map(repr, PIPELINES))}; got {pipeline!r}")
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
            if not _complete(self.quick_root / FOLDER):
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
        dataset = "synthetic data in the CIFAR-100 layout (quick mode)" if self.quick else identify_cifar100(self.data_dir)
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
            self.val_set = Subset(_with_transform(train, self.eval_transform), order[:n_val])
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
        if self.hparams.pipeline == "gpu" and world_size > 1:
            raise ValueError(
                f"pipeline='gpu' keeps the whole dataset on one device and does not split it between the "
                f"{world_size} processes of this run; use pipeline='torchvision' (or 'auto') with several devices"
            )
        if self.hparams.pipeline == "auto":
            on_one_gpu = trainer is not None and world_size == 1 and trainer.strategy.root_device.type == "cuda"
            return "gpu" if on_one_gpu else "torchvision"
        return self.hparams.pipeline

    def _device_loader(self, dataset: Dataset, batch_size: int, train: bool) -> GPUBatchLoader | _TrainerEpochs:
        """The split on the training device: shuffled, augmented, full batches for training; in
        order, unaugmented, every sample for evaluation."""
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        images, labels = _uint8_tensors(dataset)
        loader = GPUBatchLoader(
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

    def train_dataloader(self) -> DataLoader | GPUBatchLoader | _TrainerEpochs:
        if self.active_pipeline == "gpu":
            return self._device_loader(self.train_set, self.batch_size, train=True)
        # Order and augmentation are functions of (seed, epoch), so a resumed run sees the same
        # epochs; on a resume the epoch to start at is Lightning's count of processed epochs.
        epoch = self.trainer.fit_loop.epoch_progress.current.processed if self.trainer is not None else 0
        sampler = EpochSampler(len(self.train_set), self.hparams.seed, epoch)
        return self._loader(SeededSamples(self.train_set), self.batch_size, sampler=sampler, drop_last=True)

    def _eval_loader(self, dataset: Dataset) -> DataLoader | GPUBatchLoader:
        if self.active_pipeline == "gpu":
            return self._device_loader(dataset, self.eval_batch_size, train=False)
        # Under DDP, Lightning's default sampler pads the last batch with repeated samples, which
        # would count them twice in the metrics; a sampler that does not pad is kept as it is.
        sampler = None
        if self.trainer is not None and self.trainer.world_size > 1:
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False, **self.trainer.distributed_sampler_kwargs)
        return self._loader(dataset, self.eval_batch_size, shuffle=False, sampler=sampler)

    def val_dataloader(self) -> DataLoader | GPUBatchLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader | GPUBatchLoader:
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
