"""The Lightning callbacks every ``vitlib`` run uses: speed, metrics files, flushed logs, top-k output.

:class:`ThroughputMonitor` times a ``fit``: the wall time of the whole run (from the trainer's
construction, so data loading and set-up count), the time of every training epoch, and, when
training ends, the **bare step** of the same model in the same process with the same threads:
forward + backward + AdamW on one batch held in memory, no data loading, no augmentation, no
logging. The ratio of the two is the share of the machine the model really gets; a loop that
starves the model shows as a ratio well under 1. The bare step runs in the regime training ran
in: the precision plugin's autocast (and float16's loss scaling), the model compiled as training
compiled it, the same float32 matmul precision (TF32 or not); ``metrics.json`` names all three
beside the figure.

:class:`MetricsWriter` writes a run's final metrics as ``metrics.json``, :class:`FlushLogsEachEpoch`
makes ``metrics.csv`` readable while a run trains, and :class:`TopKPrinter` prints ``predict``'s
top-k classes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import BasePredictionWriter

from ..augment import soft_target_cross_entropy
from .cifar import FINE_LABELS
from .files import write_json_atomic
from .run_folder import CONFIG, METRICS_JSON


def bare_step_images_per_s(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int = 10,
    warmup: int = 3,
    forward_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    scaler: torch.amp.GradScaler | None = None,
) -> float:
    """Images per second of forward + cross-entropy + backward + AdamW on ``images``, the forward
    inside ``forward_context()`` (a precision plugin's ``forward_context``: autocast) and the loss
    scaled by ``scaler`` when given (float16). ``model`` itself trains, compiled or not as it is (a
    copy would not share its compiled code), and gets its weights, buffers, gradients and mode back."""
    saved = {name: value.detach().clone() for name, value in model.state_dict().items()}
    grads = [p.grad for p in model.parameters()]
    was_training = model.training
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=images.is_cuda or None)

    def step() -> None:
        with forward_context():
            loss = soft_target_cross_entropy(model(images), labels, 0.1)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    try:
        model.train()
        for _ in range(warmup):
            step()
        if images.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if images.is_cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
        for parameter, grad in zip(model.parameters(), grads):
            parameter.grad = grad
    return steps * images.shape[0] / seconds


class ThroughputMonitor(L.Callback):
    """Times a ``fit`` (see the module docstring); :meth:`summary` is written to ``metrics.json``.

    Per epoch it logs ``time/train_epoch_s`` and ``time/train_images_per_s`` (the training loop
    alone, validation excluded), ``time/val_epoch_s`` and ``time/elapsed_s`` (this process's wall
    time so far), so they land in ``metrics.csv`` beside the losses and a run that was killed and
    resumed can still be timed from its rows.
    """

    def __init__(self, bare_steps: int = 10) -> None:
        self.bare_steps = bare_steps
        self.created = time.perf_counter()
        self.epoch_start = self.val_start = self.val_s = 0.0
        self.train_s = 0.0
        self.train_images = 0
        self.bare: float | None = None
        # The bare step's precision, whether it ran compiled, and the float32 matmul precision (TF32).
        self.bare_regime: dict[str, Any] = dict.fromkeys(("bare_step_precision", "bare_step_compiled", "float32_matmul_precision"))
        self.wall_s: float | None = None
        self.resumed_from: str | None = None
        self.last_epoch: tuple[float, float] | None = None  # (training s, validation s) of the last epoch

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # A resumed run's wall time and images/s cover only its own part: the record says so.
        self.resumed_from = str(trainer.ckpt_path) if trainer.ckpt_path else None

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        _synchronize(module)
        self.epoch_start = time.perf_counter()
        self.val_s = 0.0

    # Lightning validates inside the training epoch, before on_train_epoch_end: its time is taken out.
    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        _synchronize(module)  # training steps still queued on a GPU are training time
        self.val_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        _synchronize(module)
        self.val_s += time.perf_counter() - self.val_start

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        _synchronize(module)
        seconds = time.perf_counter() - self.epoch_start - self.val_s
        self.last_epoch = (seconds, self.val_s)
        batch_size = getattr(trainer.datamodule, "batch_size", 0)
        images = trainer.num_training_batches * batch_size * trainer.world_size
        self.train_s += seconds
        self.train_images += images
        module.log("time/train_epoch_s", seconds, on_epoch=True, on_step=False)
        module.log("time/train_images_per_s", images / seconds, on_epoch=True, on_step=False)
        module.log("time/val_epoch_s", self.val_s, on_epoch=True, on_step=False)
        # Wall time of this process so far: a run killed and resumed is timed from these rows.
        module.log("time/elapsed_s", time.perf_counter() - self.created, on_epoch=True, on_step=False)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.bare_steps <= 0 or not trainer.is_global_zero or self.train_images == 0:
            return
        images, labels = next(iter(trainer.train_dataloader))
        images, labels = images.to(module.device), labels.to(module.device)
        # As training ran: the plugin's autocast, a fresh scaler where float16 scales the loss, and
        # the model compiled or eager as it is now (after a failed compile: eager).
        plugin = trainer.precision_plugin
        scaler = torch.amp.GradScaler(module.device.type) if getattr(plugin, "scaler", None) is not None else None
        compiled = getattr(module.model, "_compiled_call_impl", None) is not None
        self.bare_regime = {
            "bare_step_precision": str(trainer.precision),
            "bare_step_compiled": compiled,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),  # "highest": no TF32
        }
        self.bare = bare_step_images_per_s(
            module.model, images, labels, steps=self.bare_steps, forward_context=plugin.forward_context, scaler=scaler
        )

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.wall_s = time.perf_counter() - self.created

    def summary(self) -> dict[str, Any]:
        """Seconds and images/s of this run; ``None`` for what was not measured."""
        train_rate = self.train_images / self.train_s if self.train_s else None
        fit_rate = self.train_images / self.wall_s if self.wall_s else None
        return {
            "fit_wall_s": self.wall_s,
            "train_s": self.train_s,
            "train_images": self.train_images,
            "fit_images_per_s": fit_rate,  # whole fit: set-up and validation included
            "train_images_per_s": train_rate,  # training epochs only
            "bare_step_images_per_s": self.bare,
            **self.bare_regime,
            "train_vs_bare": train_rate / self.bare if train_rate and self.bare else None,
            "threads": torch.get_num_threads(),
            "resumed_from": self.resumed_from,
        }


def _synchronize(module: L.LightningModule) -> None:
    # A GPU runs the queued steps after Python moved on: time them done, not queued. Once per epoch
    # and validation, never per step.
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


class MetricsWriter(L.Callback):
    """Writes ``metrics.json`` (final loss / top-1 / top-5 as fractions, epoch, what ran, config) to the log dir.

    The numbers are the epoch-level torchmetrics values of the last validation (after ``fit``) or of
    the whole test set (after ``test``).
    """

    def _write(self, trainer: L.Trainer, module: L.LightningModule, stage: str, split: str) -> None:
        metrics = trainer.callback_metrics
        if f"{split}/top1" not in metrics:
            return  # e.g. fit with validation switched off
        # trainer.log_dir is a collective under DDP: every rank asks, rank 0 writes.
        log_dir = Path(trainer.log_dir or trainer.default_root_dir)
        if not trainer.is_global_zero:
            return
        datamodule = getattr(trainer, "datamodule", None)
        config_file = log_dir / CONFIG  # written by the CLI's SaveConfigCallback
        if config_file.is_file():
            config = yaml.safe_load(config_file.read_text())
        else:
            config = {"model": dict(module.hparams), "data": dict(getattr(datamodule, "hparams", {}))}
        payload = {
            "stage": stage,
            "split": split,
            **(datamodule.describe(split) if hasattr(datamodule, "describe") else {}),
            "loss": float(metrics[f"{split}/loss"]),
            "top1": float(metrics[f"{split}/top1"]),
            "top5": float(metrics[f"{split}/top5"]),
            "samples": int(metrics[f"{split}/count"]),
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            # What really ran: the precision after vitlib's decision, compiled or eager (a failed
            # compile trains eagerly), and whether float32 matmuls used TF32 ("high") or not ("highest").
            "ran": {
                "precision": str(trainer.precision),
                "compile": getattr(module, "compiled", None),
                "float32_matmul_precision": torch.get_float32_matmul_precision(),
            },
            "config": config,
        }
        monitor = next((cb for cb in trainer.callbacks if isinstance(cb, ThroughputMonitor)), None)
        if monitor is not None and stage == "fit":
            payload["throughput"] = monitor.summary()
        path = (log_dir / METRICS_JSON).resolve()
        write_json_atomic(path, payload)
        print(f"metrics written to {path}")

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._write(trainer, module, "fit", "val")

    def on_test_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._write(trainer, module, "test", "test")


class FlushLogsEachEpoch(L.Callback):
    """Writes the loggers' buffered rows to disk when an epoch starts.

    The CSV logger writes every 100 steps, while an epoch's checkpoint is saved (at the end of its
    validation) before its training metrics are even logged. A run killed after a checkpoint could
    thus lose the last epochs' rows from ``metrics.csv`` and resume past them, leaving holes in its
    history. Flushed here, everything up to the last finished epoch is on disk whenever the next
    epoch can be cut short.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        for logger in trainer.loggers:
            logger.save()


class TopKPrinter(BasePredictionWriter):
    """Prints the top-k classes and probabilities of every predicted file, or why it failed."""

    def __init__(self, k: int = 5) -> None:
        super().__init__(write_interval="batch")
        self.k = k

    def write_on_batch_end(self, trainer, module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        classes = getattr(trainer.datamodule, "classes", FINE_LABELS)
        probs, idx = prediction["probs"].topk(min(self.k, prediction["probs"].shape[1]), dim=1)
        for row, (path, error) in enumerate(zip(prediction["path"], prediction["error"])):
            if error:
                print(f"{path}: error: {error}")
                continue
            ranked = ", ".join(f"{classes[i]} {p:.3f}" for p, i in zip(probs[row].tolist(), idx[row].tolist()))
            print(f"{path}: {ranked}")
