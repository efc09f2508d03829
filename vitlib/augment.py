"""Data augmentation: crop + flip, RandAugment, CutMix / MixUp and the soft-target loss."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AugmentConfig:
    """Per-image training augmentation (each switchable)."""

    crop_padding: int = 4  # random 32x32 crop of the image padded by this many pixels; 0 = off
    flip: bool = True  # random horizontal flip
    randaugment: bool = True
    randaugment_ops: int = 2  # N: operations per image
    randaugment_magnitude: int = 9  # M: 0..30 (torchvision's num_magnitude_bins=31)


@dataclass
class MixConfig:
    """Batch-level mixing: with probability ``prob`` a batch is mixed, by CutMix with probability
    ``cutmix_prob`` and by MixUp otherwise."""

    prob: float = 1.0
    cutmix_prob: float = 0.5
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
