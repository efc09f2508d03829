"""The fast path a machine gets: precision, augmentation pipeline, ``torch.compile`` and
channels-last, chosen in one place from what the hardware can do. Every run takes it: the CLI
(a config or flag that names no ``trainer.precision`` gets :func:`choose`'s, and
``model.compile: auto``, the default, compiles only where :func:`choose` does), every packaged
config, the GPU run (``benchmarks/gpu_run.py``) and chapter 6.

- Precision: bf16 autocast where the GPU computes in bf16 (compute capability 8.0 and up: A100,
  L4, H100), float16 autocast with loss scaling on older GPUs (T4, V100), float32 on a CPU. Below
  8.0 torch only emulates bf16 (no tensor cores, and ``scaled_dot_product_attention`` falls back to
  its math kernel), so a config or flag that asks for bf16 there runs in ``16-mixed`` instead, and
  :func:`decide_precision` says so in one line.
- The augmentation pipeline is ``batched`` everywhere: on a GPU the batches are augmented there; on a
  CPU the same batched code runs in the training process, which kept 90 % of the bare step's
  images/s with RandAugment and CutMix / MixUp on two cores (``results/speed/fit-vs-bare-cpu.json``),
  against DataLoader workers that compete with the model for the same cores.
- ``torch.compile`` only where a measurement says it helps: :data:`COMPILE_MEASURED` lists the GPU
  families with a committed benchmark in which compiling won (``benchmarks/bench.py``'s
  ``vitlib-vit-fast-compiled`` row against ``vitlib-vit-fast-eager``). None is committed yet, so
  every machine trains eagerly (which also spares Colab, whose torch differs from the pinned one,
  a compiler that may fail). Where a compile fails at the first step anyway, the module trains
  eagerly and says so (:class:`vitlib.module.ClassifierModule`).
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
# The first compute capability with bf16 tensor cores (Ampere); below it torch emulates bf16.
BF16_NATIVE = (8, 0)
# Lightning's precision names that compute in bf16 or float16, and those of float16.
BF16_PRECISIONS = ("bf16-mixed", "bf16", "bf16-true")
HALF_PRECISIONS = (*BF16_PRECISIONS, "16-mixed", "16", "16-true")


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

    @property
    def bf16_native(self) -> bool:
        """Whether the GPU computes in bf16 on tensor cores (compute capability 8.0 and up)."""
        return self.gpu is not None and tuple(self.compute_capability or (0, 0)) >= BF16_NATIVE

    def named(self) -> str:
        """``Tesla T4 (compute capability 7.5)``, or ``CPU``."""
        if self.gpu is None:
            return "CPU"
        major, minor = self.compute_capability or (0, 0)
        return f"{self.gpu} (compute capability {major}.{minor})"


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
            "cpu", "32-true", "batched", False, False,
            (f"CPU ({caps.cpu_threads} threads): float32", "batches augmented in the training process",
             "eager (torch.compile not measured to help on a CPU)"),
        )
    bf16 = caps.bf16_native
    precision = "bf16-mixed" if bf16 else "16-mixed"
    why_precision = f"{caps.named()}: " + (
        "bf16 autocast" if bf16 else "float16 autocast with loss scaling (no fast bf16 before 8.0)"
    )
    measured = any(family in caps.gpu for family in COMPILE_MEASURED)
    why_compile = "torch.compile (measured faster on this GPU)" if measured else "eager (torch.compile not measured on this GPU)"
    return FastPath("gpu", precision, "batched", measured, False, (why_precision, "batches augmented on the GPU", why_compile))


def run_capabilities(accelerator: object = None) -> Capabilities:
    """What a run on ``accelerator`` (a Trainer's ``accelerator`` setting) gets: this machine's
    GPU, unless it asks for the CPU (``"cpu"``) or there is no GPU."""
    if isinstance(accelerator, str) and accelerator.lower() == "cpu":
        return Capabilities(cpu_threads=torch.get_num_threads())
    return Capabilities.detect()


def decide_precision(requested: str | int | None, capabilities: Capabilities) -> tuple[str, str | None]:
    """The precision a run asking for ``requested`` gets on ``capabilities``, and the one line
    that says why when it is not what was asked (else None).

    ``None`` (a config or command line that names none) is :func:`choose`'s. A half precision on a
    CPU becomes ``32-true``; bf16 (``bf16-mixed``, ``bf16``, ``bf16-true``) on a GPU below compute
    capability 8.0 becomes ``16-mixed``, from a config or from the command line alike: torch only
    emulates bf16 there, slower than float16 on every step. Anything else is kept.
    """
    if requested is None:
        return choose(capabilities).precision, None
    asked = str(requested)
    if capabilities.gpu is None and asked in HALF_PRECISIONS:
        return "32-true", f"no GPU: running in float32 instead of {asked}"
    if capabilities.gpu is not None and asked in BF16_PRECISIONS and not capabilities.bf16_native:
        return "16-mixed", (
            f"{capabilities.named()} has no native bf16 (torch would emulate it: no tensor cores, attention on "
            f"its math kernel): running in 16-mixed (float16 autocast with loss scaling) instead of {asked}"
        )
    return asked, None


def compile_wins(device: torch.device) -> bool:
    """Whether ``model.compile: auto`` compiles on ``device``: only on a GPU of
    :data:`COMPILE_MEASURED` (as :func:`choose` decides)."""
    return device.type == "cuda" and choose(Capabilities.detect()).compile
