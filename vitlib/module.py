"""The LightningModule: loss, AdamW, the LR schedule and top-1 / top-5 metrics per epoch,
for any classifier (:class:`ClassifierModule`) and for the book's ViT (:class:`ViTModule`). Taught in chapter 6."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MetricCollection, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from .augment import soft_target_cross_entropy
from .checks import positive_int
from .config import ViTConfig
from .model import ViT
from .schedule import ScheduleConfig, build_scheduler
from .support import hardware
from .support.checkpoints import CONFIG_KEY, check_compatible
from .support.loss_check import FiniteLossCheck

LR_SCALINGS = ("none", "linear", "sqrt")
# torch.compile's modes; "reduce-overhead" and "max-autotune" also replay the step's kernels as CUDA
# graphs, which removes the per-kernel launch cost that dominates small models.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class OptimizerConfig:
    """AdamW settings. The learning rates live in :class:`~vitlib.schedule.ScheduleConfig`."""

    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    # None: the fused CUDA kernel when the parameters are on a GPU, unless float16's loss scaling
    # and gradient clipping meet (fused AdamW unscales inside its step, after the clipping).
    fused: bool | None = None
    # Large batches: the schedule's learning rates are given for a global batch of
    # ``reference_batch_size`` and multiplied by (batch / reference) for "linear" (Goyal et al.
    # 2017, as DeiT does) or by its square root for "sqrt" (the rule derived for Adam by Malladi et
    # al. 2022); "none" uses them as given.
    lr_scaling: str = "none"
    reference_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.lr_scaling not in LR_SCALINGS:
            raise ValueError(
                f"OptimizerConfig.lr_scaling must be one of {', '.join(map(repr, LR_SCALINGS))}; got {self.lr_scaling!r}"
            )
        positive_int("OptimizerConfig.reference_batch_size", self.reference_batch_size)
        if not (isinstance(self.weight_decay, (int, float)) and 0 <= self.weight_decay < float("inf")):
            raise ValueError(f"OptimizerConfig.weight_decay must be a finite number >= 0; got {self.weight_decay!r}")
        betas = tuple(self.betas) if isinstance(self.betas, (tuple, list)) else ()
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ValueError(f"OptimizerConfig.betas must be two numbers in [0, 1); got {self.betas!r}")

    def lr_factor(self, batch_size: int) -> float:
        """What the learning rates are multiplied by for a global batch of ``batch_size``."""
        ratio = batch_size / self.reference_batch_size
        return {"none": 1.0, "linear": ratio, "sqrt": ratio**0.5}[self.lr_scaling]


def _as_dataclass(cls: type, value: Any) -> Any:
    """Accept a dataclass or the plain dict it was saved as (checkpoints store plain values)."""
    return cls(**value) if isinstance(value, dict) else (value if value is not None else cls())


class ClassifierModule(L.LightningModule):
    """Trains an image classifier (``model``: images to ``num_classes`` logits) with AdamW and a
    per-step LR schedule: the training loop every model of the book shares.

    ``compile``: ``"auto"`` (the default) compiles the model only on a GPU where compiling was
    measured to win (:func:`vitlib.support.hardware.choose`), ``True`` or a ``torch.compile`` mode
    compiles it anywhere, ``False`` never. Should compiling fail at the first step (its forward or
    its backward), the model trains eagerly from there on and one printed line says why;
    :attr:`compiled` says what ran.

    Training batches carry either integer labels or soft targets (CutMix / MixUp, applied by the
    data module); both go through the soft-target cross-entropy with label smoothing. Validation
    and test report the plain cross-entropy and top-1 / top-5 accuracy, each computed over the
    whole split at the end of the epoch (torchmetrics accumulates on the device and synchronises
    across processes), never as an average of per-batch values. :class:`ViTModule` trains the
    book's ViTs; :class:`vitlib.lab.results.baseline.ResNetModule` a CNN on the same recipe.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        num_classes: int,
        optimizer: OptimizerConfig | None = None,
        schedule: ScheduleConfig | None = None,
        label_smoothing: float = 0.1,
        compile: bool | str = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(compile, bool) and compile != "auto" and compile not in COMPILE_MODES:
            raise ValueError(
                f"compile must be true, false, 'auto' or a torch.compile mode ({', '.join(map(repr, COMPILE_MODES))}); got {compile!r}"
            )
        self.optimizer_config = _as_dataclass(OptimizerConfig, optimizer)
        self.schedule_config = _as_dataclass(ScheduleConfig, schedule)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing!r}")
        self.label_smoothing = label_smoothing
        self.compile_model = compile
        # What ran: "eager", "compiled" or "compiled (MODE)", and "eager (...)" after a failed compile.
        self.compiled = "eager"
        self._compile_unproven = False  # compiled, and no whole training step has run yet
        self._first_batch: tuple[torch.Tensor, torch.Tensor] | None = None  # the batch of that step
        self.model = model
        self.num_classes = num_classes

        def split_metrics() -> MetricCollection:
            # Sync-free updates, so a GPU never waits for the host inside a step: the default NaN
            # check (``.any()`` in Python) and argument validation (``torch.unique``) both copy a
            # result to the host. A NaN loss still shows: it makes the epoch's mean NaN.
            return MetricCollection(
                {
                    "loss": MeanMetric(nan_strategy="disable"),
                    "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro", validate_args=False),
                    "top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro", validate_args=False),
                    "count": SumMetric(nan_strategy="disable"),
                }
            )

        self.train_metrics, self.val_metrics, self.test_metrics = split_metrics(), split_metrics(), split_metrics()

    def recipe_hyperparameters(self) -> dict[str, Any]:
        """The training settings as plain values (checkpoints load with ``torch.load(weights_only=True)``)."""
        return {
            "optimizer": dataclasses.asdict(self.optimizer_config),
            "schedule": dataclasses.asdict(self.schedule_config),
            "label_smoothing": self.label_smoothing,
            "compile": self.compile_model,
        }

    def configure_callbacks(self) -> list[L.Callback]:
        return [FiniteLossCheck()]  # stops a diverged run, whichever Trainer runs this module

    def setup(self, stage: str) -> None:
        # Labels beyond the model's classes would fail deep inside the loss ("Target 82 is out of bounds").
        classes = getattr(self.trainer.datamodule, "num_classes", None)
        if classes is not None and classes != self.num_classes:
            raise ValueError(
                f"the model predicts {self.num_classes} classes but the data have {classes} classes: set "
                f"model.overrides.num_classes to {classes}, or use a checkpoint trained on these data"
            )

    def configure_model(self) -> None:
        compile = self.compile_model
        if compile == "auto":
            # Before the strategy moves the module: the device it will train on is the strategy's.
            device = self._trainer.strategy.root_device if self._trainer is not None else self.device
            compile = hardware.compile_wins(device)
        if compile and self.model._compiled_call_impl is None:
            # In place, so parameter names (and checkpoints) stay those of the eager model.
            mode = compile if isinstance(compile, str) else None
            self.model.compile(mode=mode)
            self.compiled = f"compiled ({mode})" if mode else "compiled"
            self._compile_unproven = True

    def _fall_back_to_eager(self, error: BaseException, where: str) -> None:
        """Undoes ``configure_model``'s compile after it failed in the first step's ``where``."""
        self.model._compiled_call_impl = None  # nn.Module.compile's own slot: the eager call again
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        self.compiled = f"eager (torch.compile failed in the first step's {where})"
        self._compile_unproven = False
        print(f"torch.compile failed in the first step's {where} ({reason[:300]}): training eagerly instead", file=sys.stderr)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self._compile_unproven:
            try:
                return self.model(images)
            except Exception as error:  # noqa: BLE001 - any compiler failure; an eager error repeats below
                self._fall_back_to_eager(error, "forward")
        return self.model(images)

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        # The backward graph is compiled at the first backward (lazily): a failure there redoes the
        # step's forward and backward eagerly, under the same autocast and loss scaling.
        if not (self._compile_unproven and self._first_batch is not None):
            super().backward(loss, *args, **kwargs)
            return
        try:
            super().backward(loss, *args, **kwargs)
        except Exception as error:  # noqa: BLE001 - as in forward
            images, targets = self._first_batch
            self._fall_back_to_eager(error, "backward")
            for parameter in self.parameters():
                parameter.grad = None
            plugin = self.trainer.precision_plugin
            with plugin.forward_context():
                loss = soft_target_cross_entropy(self(images), targets, self.label_smoothing)
            scaler = getattr(plugin, "scaler", None)
            super().backward(scaler.scale(loss) if scaler is not None else loss, *args, **kwargs)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._compile_unproven, self._first_batch = False, None  # a whole step compiled and ran: it holds

    def _update(self, split: str, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor) -> None:
        metrics = getattr(self, f"{split}_metrics")
        # No Python numbers: one would be copied from the host, and such a copy waits for the GPU
        # to finish its queue. The batch's mean loss is entered once per sample (an expanded view)
        # instead of with weight=batch size, which nan_strategy="disable" ignores (torchmetrics 1.9).
        metrics["loss"].update(loss.detach().expand(labels.shape[0]))
        metrics["top1"].update(logits.detach(), labels)
        metrics["top5"].update(logits.detach(), labels)
        metrics["count"].update(torch.ones_like(labels, dtype=torch.float32))
        for name, metric in metrics.items():
            self.log(f"{split}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name in ("loss", "top1"))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        if self._compile_unproven:
            self._first_batch = (images, targets)  # for backward, should its compile fail
        logits = self(images)
        loss = soft_target_cross_entropy(logits, targets, self.label_smoothing)
        # Mixed batches have soft targets: train accuracy counts the dominant label.
        labels = targets.argmax(dim=1) if targets.ndim == 2 else targets
        self._update("train", logits, labels, loss)
        # Not on the progress bar: Lightning turns every per-step bar value into a Python number
        # after every step (whatever the bar's refresh rate), a host sync per step. The bar shows
        # the epoch's loss and top-1; this per-step value stays in trainer.callback_metrics.
        self.log("loss", loss.detach(), logger=False)
        return loss

    def _evaluate(self, split: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        images, labels = batch
        logits = self(images)
        self._update(split, logits, labels, F.cross_entropy(logits.float(), labels))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate("test", batch)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Softmax probabilities for a batch of ``{"image", "path", "error"}`` items."""
        probs = self(batch["image"]).float().softmax(dim=-1)
        return {"probs": probs.cpu(), "path": batch["path"], "error": batch["error"]}

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Weights decay; norms, biases, embeddings and LSA temperatures do not (they are not
        over-parameterised weights, and decaying them only pulls them towards zero). The model
        names them with ``no_weight_decay()``; without it, every parameter of one dimension."""
        no_weight_decay = getattr(self.model, "no_weight_decay", None)
        no_decay = no_weight_decay() if no_weight_decay else {n for n, p in self.model.named_parameters() if p.ndim <= 1}
        params = dict(self.model.named_parameters())
        return [
            {"params": [p for n, p in params.items() if n not in no_decay]},
            {"params": [p for n, p in params.items() if n in no_decay], "weight_decay": 0.0},
        ]

    def global_batch_size(self) -> int:
        """Images per optimizer step over all processes: the data module's ``batch_size`` times
        the number of processes times the gradient-accumulation count."""
        batch_size = getattr(self.trainer.datamodule, "batch_size", None)
        if not isinstance(batch_size, int):
            raise ValueError(
                "OptimizerConfig.lr_scaling needs the batch size, read from the data module's batch_size: "
                "train with a data module (e.g. CIFAR100DataModule), or set lr_scaling to 'none' and give "
                "the learning rates for your batch size"
            )
        return batch_size * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def scaled_schedule(self) -> ScheduleConfig:
        """The schedule with its learning rates scaled for the batch size (``OptimizerConfig.lr_scaling``)."""
        cfg = self.schedule_config
        if self.optimizer_config.lr_scaling == "none":
            return cfg
        factor = self.optimizer_config.lr_factor(self.global_batch_size())
        return dataclasses.replace(cfg, base_lr=cfg.base_lr * factor, max_lr=cfg.max_lr * factor, min_lr=cfg.min_lr * factor)

    def fused_adamw(self) -> bool:
        """Whether AdamW runs its fused CUDA kernel: ``OptimizerConfig.fused``, or by default on a
        GPU. Never where float16's loss scaling (``16-mixed``) meets gradient clipping: the fused
        step unscales the gradients itself, after Lightning would have clipped them (Lightning
        refuses the pair)."""
        cfg = self.optimizer_config
        scaled = getattr(self.trainer.precision_plugin, "scaler", None) is not None
        if scaled and self.trainer.gradient_clip_val:
            if cfg.fused:
                raise ValueError(
                    "model.optimizer.fused true cannot train with gradient clipping under 16-mixed (the fused AdamW "
                    "unscales the gradients inside its step, after the clipping): leave fused unset, or set it to false"
                )
            return False
        return cfg.fused if cfg.fused is not None else self.device.type == "cuda"

    def configure_optimizers(self) -> dict[str, Any]:
        groups = self.parameter_groups()
        fused = self.fused_adamw()
        cfg = self.optimizer_config
        schedule = self.scaled_schedule()
        optimizer = torch.optim.AdamW(
            groups,
            lr=schedule.max_lr,
            betas=tuple(cfg.betas),
            weight_decay=cfg.weight_decay,
            fused=fused or None,
        )
        max_epochs = max(1, self.trainer.max_epochs or 1)
        steps_per_epoch = max(1, self.trainer.estimated_stepping_batches // max_epochs)
        scheduler = build_scheduler(optimizer, schedule, steps_per_epoch, max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class ViTModule(ClassifierModule):
    """Trains the :class:`~vitlib.ViT` of ``preset`` (with ``overrides`` of its
    :class:`~vitlib.ViTConfig` fields); its checkpoints carry that config."""

    def __init__(
        self,
        preset: str = "vit",
        overrides: dict[str, Any] | None = None,
        optimizer: OptimizerConfig | None = None,
        schedule: ScheduleConfig | None = None,
        label_smoothing: float = 0.1,
        compile: bool | str = "auto",
    ) -> None:
        config = ViTConfig.from_preset(preset, **(overrides or {}))
        super().__init__(ViT(config), config.num_classes, optimizer, schedule, label_smoothing, compile)
        self.config = config
        self.save_hyperparameters({"preset": preset, "overrides": dict(overrides or {}), **self.recipe_hyperparameters()})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The architecture itself, beside the hyperparameters (which load_from_checkpoint
        # overwrites with its keyword arguments, and whose presets may change between versions).
        checkpoint[CONFIG_KEY] = self.config.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Called before the weights are copied in: a checkpoint of another model is reported as
        # the config fields that differ, not as a list of tensor size mismatches.
        path = self._trainer.ckpt_path if self._trainer is not None else None
        check_compatible(checkpoint, self.config, self.state_dict(), f"checkpoint {path}" if path else "the checkpoint")
