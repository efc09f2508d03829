"""CIFAR-100 on disk: class names, finding / downloading / extracting / verifying the files, and
synthetic data in the same layout.

The dataset is read with ``torchvision.datasets.CIFAR100`` from ``<root>/cifar-100-python/``.
Synthetic data (quick mode, tests) is written in the original pickle layout, so it goes through
exactly the same reading code as the real files.
"""

from __future__ import annotations

import copy
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
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from einops import rearrange
from torchvision.datasets import CIFAR100
from torchvision.datasets.utils import check_integrity, download_url, extract_archive
from torchvision.datasets.vision import StandardTransform

from ..augment import (
    IMAGE_SIZE,
)
from .files import atomic_write
from .provenance import repository_root

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
    """``$VITLIB_DATA``; else ``data/`` at the root of the book's checkout when run anywhere inside
    one (the notebooks run in ``notebooks/``); else ``./data`` (an installed package)."""
    if os.environ.get("VITLIB_DATA"):
        return Path(os.environ["VITLIB_DATA"]).expanduser()
    root = repository_root()
    return root / "data" if root else Path("data")


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


class _ExistenceCheckedCIFAR100(CIFAR100):
    """``CIFAR100`` that only checks that the files exist.

    torchvision's ``_check_integrity`` and ``_load_meta`` skip the md5 when it is ``None``
    (``check_integrity(path, None)``), so clearing the checksums covers both checks without
    overriding either method.
    """

    train_list = [[name, None] for name, _ in CIFAR100.train_list]
    test_list = [[name, None] for name, _ in CIFAR100.test_list]
    meta = {**CIFAR100.meta, "md5": None}


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds all three CIFAR-100 files (train, test, meta)."""
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
        if not is_complete(tmp / FOLDER):
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
    if is_complete(root / FOLDER):
        return root
    if is_complete(root):  # the files themselves, one level too high: say so instead of downloading
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


class DatasetId(Enum):
    """The data a run used, one name for it everywhere: each member's value is the label that
    results files and captions carry (:func:`identify_cifar100` tells the real ones apart)."""

    OFFICIAL = "CIFAR-100 (official release, md5-verified)"
    Q75 = "CIFAR-100 (JPEG q75 copy)"
    UNVERIFIED = "CIFAR-100 layout, unverified files (neither the official release nor the JPEG q75 copy)"
    SYNTHETIC = "synthetic data in the CIFAR-100 layout (quick mode)"

    @property
    def label(self) -> str:
        return self.value

    @property
    def real(self) -> bool:
        """Real CIFAR-100 images (anything but quick mode's synthetic stripes)."""
        return self is not DatasetId.SYNTHETIC

    @classmethod
    def of(cls, label: str) -> DatasetId:
        """The dataset a results file's label names."""
        try:
            return cls(label)
        except ValueError:
            raise ValueError(f"unknown dataset {label!r}: one of {', '.join(repr(d.value) for d in cls)}") from None


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
def _identify(folder: Path, stamp: tuple[float, ...]) -> DatasetId:
    if official_md5(folder.parent):
        return DatasetId.OFFICIAL
    if all(_pixels_sha256(folder / split) == digest for split, digest in Q75_PIXELS_SHA256.items()):
        return DatasetId.Q75
    return DatasetId.UNVERIFIED


def identify_cifar100(root: str | Path) -> DatasetId:
    """Which CIFAR-100 lies under ``root/cifar-100-python``: ``DatasetId.OFFICIAL``, ``DatasetId.Q75``
    or ``DatasetId.UNVERIFIED``, whose label every results file and caption carries. About a second
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


def with_transform(dataset: CIFAR100, transform: Any) -> CIFAR100:
    """A shallow copy that shares the image array and reads it through another transform."""
    view = copy.copy(dataset)
    view.transform = transform
    view.transforms = StandardTransform(transform, dataset.target_transform)
    return view
