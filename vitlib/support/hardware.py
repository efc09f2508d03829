"""The fast path a machine gets: precision, augmentation pipeline, ``torch.compile`` and
channels-last, chosen in one place from what the hardware can do.

- Precision: bf16 autocast where the GPU computes in bf16 (compute capability 8.0 and up: A100,
  L4, H100), float16 autocast with loss scaling on older GPUs (T4, V100), float32 on a CPU.
- The augmentation pipeline is ``gpu`` everywhere: on a GPU the batches are augmented there; on a
  CPU the same batched code runs in the training process, which kept 90 % of the bare step's
  images/s with RandAugment and CutMix / MixUp on two cores (``results/speed/fit-vs-bare-cpu.json``),
  against DataLoader workers that compete with the model for the same cores.
- ``torch.compile`` only where a measurement says it helps: :data:`COMPILE_MEASURED` lists the GPU
  families with a committed benchmark in which compiling won. None is committed yet, so every
  machine trains eagerly (which also spares Colab, whose torch differs from the pinned one, a
  compiler that may fail).
- Channels-last: never. A ViT's tensors are token sequences; only the stem has convolutions, a
  few percent of its FLOPs, too few for a memory-format change to pay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# GPU names (substrings of torch.cuda.get_device_name) where a committed benchmark measured
# torch.compile faster than eager for this library's models.
COMPILE_MEASURED: tuple[str, ...] = ()


@dataclass(frozen=True)
class Capabilities:
    """What the machine offers the choice: a GPU (its name and compute capability) or none."""

    gpu: str | None = None
    compute_capability: tuple[int, int] | None = None
    cpu_threads: int = 1

    @classmethod
    def detect(cls) -> Capabilities:
        threads = torch.get_num_threads()
        if not torch.cuda.is_available():
            return cls(cpu_threads=threads)
        return cls(torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0), threads)


@dataclass(frozen=True)
class FastPath:
    """The settings :func:`choose` picked, and why (one reason per setting)."""

    accelerator: str
    precision: str
    pipeline: str
    compile: bool
    channels_last: bool
    reasons: tuple[str, ...]

    def describe(self) -> str:
        return "; ".join(self.reasons)

    def trainer_kwargs(self) -> dict[str, Any]:
        return {"accelerator": self.accelerator, "precision": self.precision}


def choose(capabilities: Capabilities | None = None) -> FastPath:
    """The fast path for ``capabilities`` (default: this machine's)."""
    caps = capabilities or Capabilities.detect()
    if caps.gpu is None:
        return FastPath(
            "cpu", "32-true", "gpu", False, False,
            (f"CPU ({caps.cpu_threads} threads): float32", "batches augmented in the training process",
             "eager (torch.compile not measured to help on a CPU)"),
        )
    major, minor = caps.compute_capability or (0, 0)
    bf16 = major >= 8
    precision = "bf16-mixed" if bf16 else "16-mixed"
    why_precision = (
        f"{caps.gpu} (compute capability {major}.{minor}): "
        + ("bf16 autocast" if bf16 else "float16 autocast with loss scaling (no fast bf16 before 8.0)")
    )
    measured = any(family in caps.gpu for family in COMPILE_MEASURED)
    why_compile = "torch.compile (measured faster on this GPU)" if measured else "eager (torch.compile not measured on this GPU)"
    return FastPath("gpu", precision, "gpu", measured, False, (why_precision, "batches augmented on the GPU", why_compile))

