"""Data augmentation: crop + flip, RandAugment, CutMix / MixUp and the soft-target loss. Taught in chapter 4.

Also home of the CIFAR-100 normalisation statistics, because every pipeline here ends with them;
``vitlib.data`` re-exports them (it imports this module for its configs, so they cannot live there
without an import cycle).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

# Per-channel mean and standard deviation of the 50,000 CIFAR-100 training images, in [0, 1].
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

IMAGE_SIZE = 32


def _require(ok: bool, field: str, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{field} must be {rule}; got {value!r}")


@dataclass
class AugmentConfig:
    """Per-image training augmentation (each switchable)."""

    crop_padding: int = 4  # random 32x32 crop of the image padded by this many pixels; 0 = off
    flip: bool = True  # random horizontal flip
    randaugment: bool = True
    randaugment_ops: int = 2  # N: operations per image
    randaugment_magnitude: int = 9  # M: 0..30 (torchvision's num_magnitude_bins=31)

    def __post_init__(self) -> None:
        _require(self.crop_padding >= 0, "AugmentConfig.crop_padding", "an integer >= 0", self.crop_padding)
        _require(self.randaugment_ops >= 0, "AugmentConfig.randaugment_ops", "an integer >= 0", self.randaugment_ops)
        _require(
            0 <= self.randaugment_magnitude <= 30,
            "AugmentConfig.randaugment_magnitude",
            "an integer in [0, 30]",
            self.randaugment_magnitude,
        )

    def describe(self) -> str:
        """What it applies, for a table: ``"crop (pad 4), flip, RandAugment N=2 M=9"``. Every field
        shows when it differs (a test checks each), so a new one cannot go unsaid."""
        steps = [f"crop (pad {self.crop_padding})"] * bool(self.crop_padding) + ["flip"] * self.flip
        steps += [f"RandAugment N={self.randaugment_ops} M={self.randaugment_magnitude}"] * self.randaugment
        return ", ".join(steps) or "none"


@dataclass
class MixConfig:
    """Batch-level mixing: with probability ``prob`` a batch is mixed, by CutMix with probability
    ``cutmix_prob`` and by MixUp otherwise."""

    prob: float = 1.0
    cutmix_prob: float = 0.5
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0

    def __post_init__(self) -> None:
        _check_mix(self)

    def describe(self) -> str:
        """``"CutMix/MixUp p=1 (CutMix in 0.5 of them, alpha 1; MixUp alpha 0.8)"``: every field shows."""
        return (f"CutMix/MixUp p={self.prob:g} (CutMix in {self.cutmix_prob:g} of them, alpha {self.cutmix_alpha:g}; "
                f"MixUp alpha {self.mixup_alpha:g})")  # fmt: skip


def _check_mix(cfg: MixConfig) -> None:
    for name in ("prob", "cutmix_prob"):
        value = getattr(cfg, name)
        _require(0.0 <= value <= 1.0, f"MixConfig.{name}", "a probability in [0, 1]", value)
    for name in ("mixup_alpha", "cutmix_alpha"):
        value = getattr(cfg, name)
        _require(value > 0.0, f"MixConfig.{name}", "a Beta-distribution parameter > 0", value)


def normalize() -> v2.Normalize:
    """Standardise a float image in [0, 1] with the CIFAR-100 training statistics."""
    return v2.Normalize(CIFAR100_MEAN, CIFAR100_STD)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Undo :func:`normalize` on ``[B, 3, H, W]`` (or ``[3, H, W]``): float images in [0, 1], clamped."""
    mean = torch.tensor(CIFAR100_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(CIFAR100_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * std + mean).clamp(0.0, 1.0)


def _to_normalized_float() -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), normalize()]


def train_transform(cfg: AugmentConfig | None) -> v2.Compose:
    """PIL image -> augmented, normalised ``float32 [3, 32, 32]``; ``None``: no augmentation.

    The geometric and RandAugment steps run on the ``uint8`` tensor, which is what RandAugment's
    colour operations (posterize, solarize, equalize) are defined on.
    """
    steps: list[v2.Transform] = [v2.ToImage()]
    if cfg is not None:
        if cfg.crop_padding:
            steps.append(v2.RandomCrop(IMAGE_SIZE, padding=cfg.crop_padding))
        if cfg.flip:
            steps.append(v2.RandomHorizontalFlip())
        if cfg.randaugment:
            steps.append(v2.RandAugment(num_ops=cfg.randaugment_ops, magnitude=cfg.randaugment_magnitude))
    return v2.Compose(steps + _to_normalized_float())


def eval_transform() -> v2.Compose:
    """PIL image -> normalised ``float32 [3, H, W]``, no randomness."""
    return v2.Compose([v2.ToImage(), *_to_normalized_float()])


class BatchMixer:
    """CutMix / MixUp on a batch: ``(images [B, C, H, W], labels int [B]) -> (images, targets float [B, K])``.

    With probability ``cfg.prob`` the batch is mixed, by CutMix with probability ``cfg.cutmix_prob``
    and by MixUp otherwise. An unmixed batch gets one-hot targets, so the loss always sees one kind
    of target. The random draws use torch's global generator, like torchvision's transforms.
    """

    def __init__(self, cfg: MixConfig, num_classes: int) -> None:
        _check_mix(cfg)  # the dataclass is mutable: check the values in use now
        self.cfg = cfg
        self.num_classes = num_classes
        self.cutmix = v2.CutMix(alpha=cfg.cutmix_alpha, num_classes=num_classes)
        self.mixup = v2.MixUp(alpha=cfg.mixup_alpha, num_classes=num_classes)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.rand(()) >= self.cfg.prob:
            return images, F.one_hot(labels, self.num_classes).float()
        mixer = self.cutmix if torch.rand(()) < self.cfg.cutmix_prob else self.mixup
        return mixer(images, labels)


def soft_target_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy against int labels ``[B]`` or a distribution ``[B, K]``, mean over the batch.

    Label smoothing turns the target ``t`` into ``(1 - e) t + e / K``. ``F.cross_entropy`` already
    does exactly this for both kinds of target, so this only computes it in float32 (under mixed
    precision the logits are bf16 or float16: the loss and a soft target keep float32's precision,
    the logits are upcast rather than the target rounded down) and gives the training code a single
    name for both cases.
    """
    if target.is_floating_point():
        target = target.float()
    return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)


def firing_rates(augment: AugmentConfig | None, mix: MixConfig | None) -> dict[str, float]:
    """How often each step of the training pipeline changes its input, from the configs alone.

    Per image: the random crop leaves the image in place only when it draws the centre offset,
    one of ``(2 * padding + 1)**2``; the flip fires half the time; RandAugment draws ``N``
    operations uniformly from torchvision's list, which includes ``Identity``. Per batch: mixing
    with probability ``prob``, CutMix for ``cutmix_prob`` of those and MixUp for the rest.
    """
    rates: dict[str, float] = {}
    if augment is not None:
        if augment.crop_padding:
            rates["random crop moves the image"] = 1 - 1 / (2 * augment.crop_padding + 1) ** 2
        if augment.flip:
            rates["horizontal flip"] = 0.5
        if augment.randaugment and augment.randaugment_ops:
            # torchvision keeps its operation list in a private table; it has no public accessor.
            ops = list(v2.RandAugment._AUGMENTATION_SPACE)
            identity = ops.count("Identity") / len(ops)
            rates["RandAugment changes the image (>= 1 non-identity op)"] = 1 - identity**augment.randaugment_ops
    if mix is not None:
        rates["batch mixed (CutMix or MixUp)"] = mix.prob
        rates["batch mixed by CutMix"] = mix.prob * mix.cutmix_prob
        rates["batch mixed by MixUp"] = mix.prob * (1 - mix.cutmix_prob)
    return rates
