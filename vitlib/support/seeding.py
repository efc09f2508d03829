"""Training randomness that survives an interruption: a function of (seed, epoch), not of history.

A resumed run must see the same epochs as an uninterrupted one. Three kinds of randomness matter:

- the order of the training samples: :class:`EpochSampler` draws it from ``(seed, epoch)``;
- the per-image augmentation (crop, flip, RandAugment draw from torch's global generator, in
  the main process or in a loader worker): :class:`EpochSampler` also gives every sample a seed
  from ``(seed, epoch)``, and :class:`SeededSamples` runs the transform under it. The result is
  the same for any ``num_workers`` and with persistent workers, whose generators would
  otherwise carry their history from epoch to epoch;
- what draws from the global generator in the main process (CutMix / MixUp, dropout):
  :func:`rng_state` / :func:`set_rng_state` carry its state through a checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["EpochSampler", "SeededSamples", "derive_seed", "rng_state", "set_rng_state"]


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from non-negative integer keys, e.g. ``(seed, epoch)``.

    ``SeedSequence`` mixes the keys into unrelated streams; ``seed + epoch`` would make
    ``(seed=0, epoch=1)`` replay ``(seed=1, epoch=0)``.
    """
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in keys):
        raise ValueError(f"seeds must be non-negative integers; got {keys}")
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class EpochSampler(Sampler[tuple[int, int]]):
    """Shuffles ``n`` samples anew each epoch and gives each one a seed: yields ``(index, seed)``.

    Both are functions of ``(seed, epoch)`` only. Lightning calls :meth:`set_epoch` before each
    epoch (also through its ``DistributedSamplerWrapper`` under DDP); ``epoch`` is the epoch of
    the first iteration, because a loader with workers starts drawing indices as soon as its
    iterator exists, which on a resume is before ``set_epoch`` is called.
    """

    def __init__(self, n: int, seed: int = 0, epoch: int = 0) -> None:
        derive_seed(seed, epoch)  # validates both
        self.n, self.seed, self.epoch = n, seed, epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        order = torch.randperm(self.n, generator=generator)
        seeds = torch.randint(0, 2**63 - 1, (self.n,), generator=generator)
        return zip(order.tolist(), seeds.tolist())


class SeededSamples(Dataset):
    """``dataset[index]`` computed with torch's CPU generator seeded by the sample's seed.

    Keys are the ``(index, seed)`` pairs of :class:`EpochSampler`. The generator's state is
    restored afterwards, so loading data in the main process (``num_workers=0``) does not move
    the global stream that CutMix / MixUp and dropout draw from.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed would reseed CUDA too
            return self.dataset[index]


def rng_state() -> dict[str, Any]:
    """torch's global generator states (CPU, and every CUDA device once CUDA is in use), as
    tensors: they load with ``torch.load(weights_only=True)``."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only where the devices match)."""
    torch.set_rng_state(state["cpu"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
