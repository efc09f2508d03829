"""Shared fixtures: a tiny synthetic CIFAR-100 folder, and the real-bytes mini set when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from vitlib.support.cifar import make_synthetic_cifar100

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
