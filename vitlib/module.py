"""The LightningModule: loss, AdamW, the LR schedule and top-1 / top-5 metrics per epoch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MetricCollection, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from .augment import soft_target_cross_entropy
from .config import ViTConfig
from .model import ViT
from .schedule import ScheduleConfig, build_scheduler


@dataclass
class OptimizerConfig:
    """AdamW settings. The learning rates live in :class:`~vitlib.schedule.ScheduleConfig`."""

    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    fused: bool | None = None  # None: the fused CUDA kernel when the parameters are on a GPU


def _as_dataclass(cls: type, value: Any) -> Any:
    """Accept a dataclass or the plain dict it was saved as (checkpoints store plain values)."""
    return cls(**value) if isinstance(value, dict) else (value if value is not None else cls())


class ViTModule(L.LightningModule):
    """Trains a :class:`~vitlib.ViT` with AdamW and a per-step LR schedule.

    Training batches carry either integer labels or soft targets (CutMix / MixUp, applied by the
    data module); both go through the soft-target cross-entropy with label smoothing. Validation
    and test report the plain cross-entropy and top-1 / top-5 accuracy, each computed over the
    whole split at the end of the epoch (torchmetrics accumulates on the device and synchronises
    across processes), never as an average of per-batch values.
    """

    def __init__(
        self,
        preset: str = "vit",
        overrides: dict[str, Any] | None = None,
        optimizer: OptimizerConfig | None = None,
        schedule: ScheduleConfig | None = None,
        label_smoothing: float = 0.1,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.config = ViTConfig.from_preset(preset, **(overrides or {}))
        self.optimizer_config = _as_dataclass(OptimizerConfig, optimizer)
        self.schedule_config = _as_dataclass(ScheduleConfig, schedule)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing!r}")
        self.label_smoothing = label_smoothing
        self.compile_model = compile
        # Plain values only, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(
            {
                "preset": preset,
                "overrides": dict(overrides or {}),
                "optimizer": dataclasses.asdict(self.optimizer_config),
                "schedule": dataclasses.asdict(self.schedule_config),
                "label_smoothing": label_smoothing,
                "compile": compile,
            }
        )
        self.model = ViT(self.config)
        classes = self.config.num_classes

        def split_metrics() -> MetricCollection:
            return MetricCollection(
                {
                    "loss": MeanMetric(),
                    "top1": MulticlassAccuracy(classes, top_k=1, average="micro"),
                    "top5": MulticlassAccuracy(classes, top_k=min(5, classes), average="micro"),
                    "count": SumMetric(),
                }
            )

        self.train_metrics, self.val_metrics, self.test_metrics = split_metrics(), split_metrics(), split_metrics()

    def configure_model(self) -> None:
        if self.compile_model:
            # In place, so parameter names (and checkpoints) stay those of the eager model.
            self.model.compile()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def _update(self, split: str, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor) -> None:
        metrics = getattr(self, f"{split}_metrics")
        metrics["loss"].update(loss.detach(), weight=labels.shape[0])
        metrics["top1"].update(logits.detach(), labels)
        metrics["top5"].update(logits.detach(), labels)
        metrics["count"].update(torch.tensor(labels.shape[0], device=logits.device, dtype=torch.float32))
        for name, metric in metrics.items():
            self.log(f"{split}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "top1")

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        loss = soft_target_cross_entropy(logits, targets, self.label_smoothing)
        # Mixed batches have soft targets: train accuracy counts the dominant label.
        labels = targets.argmax(dim=1) if targets.ndim == 2 else targets
        self._update("train", logits, labels, loss)
        self.log("loss", loss.detach(), prog_bar=True, logger=False)
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
        over-parameterised weights, and decaying them only pulls them towards zero)."""
        no_decay = self.model.no_weight_decay()
        params = dict(self.model.named_parameters())
        return [
            {"params": [p for n, p in params.items() if n not in no_decay]},
            {"params": [p for n, p in params.items() if n in no_decay], "weight_decay": 0.0},
        ]

    def configure_optimizers(self) -> dict[str, Any]:
        groups = self.parameter_groups()
        cfg = self.optimizer_config
        fused = cfg.fused if cfg.fused is not None else self.device.type == "cuda"
        optimizer = torch.optim.AdamW(
            groups,
            lr=self.schedule_config.max_lr,
            betas=tuple(cfg.betas),
            weight_decay=cfg.weight_decay,
            fused=fused or None,
        )
        max_epochs = max(1, self.trainer.max_epochs or 1)
        steps_per_epoch = max(1, self.trainer.estimated_stepping_batches // max_epochs)
        scheduler = build_scheduler(optimizer, self.schedule_config, steps_per_epoch, max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
