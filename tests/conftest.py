"""Shared fixtures: a tiny synthetic CIFAR-100 folder, the real-bytes mini set when present, a
stand-in for the folder of the JPEG q75 copy, and records made from a few fields."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from vitlib.lab.results.records import Record
from vitlib.support.cifar import DatasetId, make_synthetic_cifar100

# The tests' tensors are tiny: one thread each is as fast, and several test processes (DDP,
# subprocess CLI runs) on two cores no longer oversubscribe them (10x slower when they do).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

# Real CIFAR-100 bytes (first 486 train / 916 test images) beside the repository; never committed.
MINI_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar100-mini"


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a synthetic CIFAR-100 (``cifar-100-python/`` inside): 512 train, 256 test images.

    Shared by the session: read it, do not write into it.
    """
    return make_synthetic_cifar100(tmp_path_factory.mktemp("cifar"), n_train=512, n_test=256, seed=0)


@pytest.fixture(scope="session")
def mini_root() -> Path:
    """Root of the real-bytes mini set (read with ``verify_md5=False``); skips when it is absent."""
    if not (MINI_ROOT / "cifar-100-python" / "meta").is_file():
        pytest.skip(f"real CIFAR-100 mini set not found at {MINI_ROOT}")
    return MINI_ROOT


# A stand-in for the JPEG q75 copy's build.py: the same command line, the same layout written.
Q75_BUILD_PY = (
    "import pathlib, sys\nfolder = pathlib.Path(sys.argv[1], 'cifar-100-python')\nfolder.mkdir(parents=True)\n"
    "for name in ('train', 'test', 'meta'):\n    (folder / name).write_text(name)\nprint('built')\n"
)


@pytest.fixture
def q75_source() -> Callable[..., Path]:
    """Makes a stand-in for the folder of the JPEG q75 copy (``cifar100_q75.npz``, ``build.py``,
    ``meta``), as ``benchmarks.gpu_run --data-source`` and a bundle's ``data/`` hold it."""

    def make(folder: Path, npz_bytes: int = 100) -> Path:
        folder.mkdir(parents=True)
        with open(folder / "cifar100_q75.npz", "wb") as f:
            f.truncate(npz_bytes)  # sparse: nothing is written
        (folder / "build.py").write_text(Q75_BUILD_PY)
        (folder / "meta").write_text("meta")
        return folder

    return make


@pytest.fixture
def make_record() -> Callable[..., Record]:
    """Makes a :class:`~vitlib.lab.results.records.Record` from the fields a test cares about, the
    provenance a results file requires filled with placeholders."""

    def make(**fields: object) -> Record:
        placeholders = {"name": "run", "command": "python -m vitlib fit", "commit": "0" * 40, "hardware": "CPU",
                        "date": "2026-01-01T00:00:00+00:00", "dataset": DatasetId.Q75.label, "metrics": {"top1": 0.5}}  # fmt: skip
        return Record.from_json({**placeholders, **fields})

    return make
