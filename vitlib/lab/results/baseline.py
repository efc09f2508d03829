"""A CNN baseline trained exactly like the book's ViTs, to answer "do ViTs need more data than CNNs?"
with a measurement on the same budget.

The network is He et al.'s CIFAR ResNet (2016, section 4.2): a 3x3 convolution, then three stages
of ``n`` residual blocks at 16, 32 and 64 channels (the last two halve the resolution), global
average pooling and one linear layer, ``6n + 2`` layers in all. ResNet-32 (``n = 5``) has 0.47 M
parameters, close to the CPU recipe's ViT (0.52 M), and 138 MFLOPs per image, about twice the
ViT's 73 M (both counted by :func:`vitlib.measure.flops`). The blocks are torchvision's ``BasicBlock``; :class:`ResNetModule` is the same
:class:`~vitlib.module.ClassifierModule` (loss, AdamW, schedule, metrics) the ViTs train with, so
``configs/cpu_resnet.yaml`` differs from ``configs/cpu.yaml`` in the network only::

    python -m vitlib.lab.results.baseline fit --config cpu_resnet --data.data_dir DIR
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from ... import cli
from ...measure import flops
from ...model import count_parameters
from ...module import ClassifierModule, OptimizerConfig
from ...schedule import ScheduleConfig
from ...support.checkpoints import load_checkpoint, network_state
from ...support.pretrained import save_weights
from ...support.run_folder import last_checkpoint
from . import records
from .records import Record

WIDTHS = (16, 32, 64)


class CIFARResNet(nn.Sequential):
    """ResNet-``depth`` for 32 x 32 images (``depth = 6n + 2``: 20, 32, 44, 56, 110...)."""

    def __init__(self, depth: int = 32, num_classes: int = 100) -> None:
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 for a whole number n >= 1 (8, 14, 20, 32, 44, 56, 110); got {depth!r}")
        blocks_per_stage = (depth - 2) // 6
        layers: list[nn.Module] = [nn.Conv2d(3, WIDTHS[0], 3, padding=1, bias=False), nn.BatchNorm2d(WIDTHS[0]), nn.ReLU(inplace=True)]
        channels = WIDTHS[0]
        for stage, width in enumerate(WIDTHS):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                # A 1x1 convolution on the shortcut where the shape changes (He et al.'s option B).
                shortcut = None
                if stride != 1 or channels != width:
                    shortcut = nn.Sequential(nn.Conv2d(channels, width, 1, stride, bias=False), nn.BatchNorm2d(width))
                layers.append(BasicBlock(channels, width, stride, shortcut))
                channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
        super().__init__(*layers)
        self.depth, self.num_classes = depth, num_classes
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def no_weight_decay(self) -> set[str]:
        """BatchNorm scales and shifts and the biases: AdamW leaves them undecayed, as for the ViTs."""
        return {name for name, p in self.named_parameters() if p.ndim <= 1}


class ResNetModule(ClassifierModule):
    """Trains a :class:`CIFARResNet` with the recipe the ViTs train with."""

    def __init__(
        self,
        depth: int = 32,
        num_classes: int = 100,
        optimizer: OptimizerConfig | None = None,
        schedule: ScheduleConfig | None = None,
        label_smoothing: float = 0.1,
        compile: bool | str = "auto",
    ) -> None:
        super().__init__(CIFARResNet(depth, num_classes), num_classes, optimizer, schedule, label_smoothing, compile)
        self.save_hyperparameters({"depth": depth, "num_classes": num_classes, **self.recipe_hyperparameters()})


def model_from_checkpoint(checkpoint: dict[str, Any]) -> CIFARResNet:
    """The trained network of a :class:`ResNetModule` checkpoint (as loaded by ``torch.load``)."""
    hparams = checkpoint["hyper_parameters"]
    model = CIFARResNet(hparams["depth"], hparams["num_classes"])
    model.load_state_dict(network_state(checkpoint))
    return model.eval()


def export_weights(run_dir: Path, folder: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The run's ``last.ckpt`` as ``folder/model.safetensors`` + ``config.json`` (depth and
    classes), for :func:`vitlib.lab.results.records.record_run`: ``(weights entry, size)``."""
    model = model_from_checkpoint(load_checkpoint(last_checkpoint(run_dir)))
    save_weights(model, {"depth": model.depth, "num_classes": model.num_classes}, folder)
    size = {"parameters": count_parameters(model), "flops_per_image": flops(model, torch.zeros(1, 3, 32, 32))}
    return records.weights_entry(folder), size


def record(
    run_dir: str | Path, name: str = "cpu-resnet", out_dir: str | Path = "results", command: str | None = None, note: str | None = None
) -> Path:
    """Record a finished baseline run like every run of the book (:func:`vitlib.lab.results.records.record_run`)."""
    return records.record_run(run_dir, name, out_dir, command=command, note=note, exporter=export_weights)


RECIPE_DATA = ("batch_size", "val_split", "seed", "augment", "mix", "pipeline")  # what the training sees
RECIPE_MODEL = ("optimizer", "schedule", "label_smoothing")


def same_recipe(a: Record, b: Record) -> bool:
    """Two records trained with the same recipe: epochs, data pipeline, optimizer, schedule, loss
    (where the data were read from, and whether they were downloaded, do not count)."""
    return (
        a.epochs == b.epochs
        and all(a.data.get(k) == b.data.get(k) for k in RECIPE_DATA)
        and all(a.model.get(k) == b.model.get(k) for k in RECIPE_MODEL)
    )


def finding(vit: Record | None, cnn: Record | None) -> str | None:
    """The comparison of the CPU recipe's ViT record with the CNN baseline's, in one sentence read
    from the two records; ``None`` until both are recorded."""
    if not (vit and cnn):
        return None
    v, c = vit.metrics.top1, cnn.metrics.top1

    def size(record: Record) -> str:
        s = record.size or {}
        return f"{s.get('parameters', 0) / 1e6:.2f} M parameters, {s.get('flops_per_image', 0) / 1e6:.0f} MFLOPs per image"

    budget = f"the same recipe ({vit.epochs} epochs, data pipeline, optimizer and schedule)" if same_recipe(vit, cnn) else "their own recipes (not the same budget)"
    verdict = f"the CNN is ahead by {100 * (c - v):.1f} points" if c > v else f"the ViT is ahead by {100 * (v - c):.1f} points"
    return (
        f"Under {budget}, ResNet-{cnn.model['depth']} ({size(cnn)}) reaches {c:.1%} top-1 and the convolutional-stem "
        f"ViT ({size(vit)}) {v:.1%}: {verdict} (test split, last epoch, {cnn.dataset.label})."
    )


def main(argv: list[str] | None = None) -> None:
    cli.main(argv, model_class=ResNetModule)


if __name__ == "__main__":
    main()
