"""Stop training on a NaN or infinite loss, naming the step and the learning rate.

Once the loss is NaN every update writes NaN into the weights, so training on is wasted time and a
checkpoint written afterwards is garbage. Checking ``loss.isfinite()`` in Python after every step
would make the host wait for the GPU each step, so the check is split: on the device, each step
keeps the first non-finite step in a tensor (no host copy); on the host, that tensor is read only
every ``log_every_n_steps`` steps, at the last batch of an epoch and before any checkpoint is
written, so no checkpoint ever holds the weights of a diverged run.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from .hardware import Capabilities

__all__ = ["FiniteLossCheck", "NonFiniteLossError"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class FiniteLossCheck(L.Callback):
    """Raises :class:`NonFiniteLossError` soon after the training loss stops being finite."""

    def __init__(self) -> None:
        self._first_bad: torch.Tensor | None = None  # [step, loss] of the first bad step; step -1: none yet
        self._lrs: dict[int, float] = {}  # learning rate of each step since the last check
        self._step = 0  # the optimizer step the current batch belongs to

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._step = trainer.global_step
        if trainer.optimizers:
            self._lrs[self._step] = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        loss = loss.detach().float().reshape(())
        if self._first_bad is None:
            self._first_bad = torch.tensor([-1.0, 0.0], device=loss.device)
        new = (self._first_bad[0] < 0) & ~loss.isfinite()
        self._first_bad = torch.where(new, torch.stack([torch.full_like(loss, self._step), loss]), self._first_bad)
        last_batch = batch_idx + 1 >= trainer.num_training_batches
        if last_batch or trainer.global_step % max(1, trainer.log_every_n_steps) == 0:
            self._check(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        if self._first_bad is None:
            return
        # Every process checks the same steps, so all of them stop together under DDP.
        firsts = trainer.strategy.all_gather(self._first_bad).reshape(-1, 2).cpu()  # the one host copy
        bad = firsts[firsts[:, 0] >= 0]
        if len(bad) == 0:
            self._lrs.clear()
            return
        step, value = bad[bad[:, 0].argmin()].tolist()
        step = int(step)
        lr = self._lrs.get(step)
        lr_text = f"learning rate {lr:.3g}" if lr is not None else "learning rate unknown"
        gpu = Capabilities.detect() if trainer.strategy.root_device.type == "cuda" else Capabilities()
        raise NonFiniteLossError(
            f"the training loss became {value} at optimizer step {step} ({lr_text}, epoch {trainer.current_epoch}); "
            f"training stopped, as every update from there on writes NaN into the weights. The checkpoints hold "
            f"weights from before that step. Train again with a lower model.schedule.max_lr or a longer warm-up "
            f"(a resumed run keeps the checkpoint's schedule){precision_advice(str(trainer.precision), gpu)}."
        )


def precision_advice(precision: str, gpu: Capabilities) -> str:
    """What else to try after a non-finite loss in ``precision`` on ``gpu``: float16's narrow range
    is the usual suspect, and bf16 the cure only where the GPU has it natively (compute capability
    8.0 and up; below it torch emulates bf16, slowly). Empty for bf16 and float32 runs."""
    if precision not in ("16-mixed", "16", "16-true"):
        return ""
    if gpu.bf16_native:
        return f", or in bf16-mixed instead of {precision} (float16 overflows where bf16 does not; {gpu.named()} has bf16)"
    return (
        f", or in 32-true instead of {precision}, or keep {precision} with gradient clipping (--trainer.gradient_clip_val 1.0): "
        f"{gpu.named()} has no native bf16"
    )
