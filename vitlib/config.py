"""Typed model configuration and the named presets. Taught in chapters 1-3.

``ViTConfig`` validates itself on construction: every bad value raises one ``ValueError`` that
names the field and what it accepts, so a typo in a YAML file fails at once and not deep inside a
layer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from .checks import positive_int

STEMS = ("patch", "conv", "spt", "cct")
ATTENTIONS = ("mhsa", "lsa")
POOLS = ("cls", "mean", "seq")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"ViTConfig.{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def cct_layers(patch_size: int) -> int:
    """Convolution + max-pool layers of the ``"cct"`` stem for ``patch_size``: each halves the image,
    and Hassani et al. use one or two (CCT-7/3x1, CCT-7/3x2), so patch sizes 2 and 4."""
    layers = {2: 1, 4: 2}.get(patch_size)
    if layers is None:
        raise ValueError(
            f"ViTConfig.patch_size must be 2 or 4 with stem='cct' (1 or 2 convolution + stride-2 max-pool "
            f"layers, each halving the image); got {patch_size!r}"
        )
    return layers


def _probability(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"ViTConfig.{name} must be a number in [0, 1); got {value!r}")


@dataclass(frozen=True)
class ViTConfig:
    """Everything that defines a Vision Transformer's architecture.

    ``stem`` turns the image into tokens: ``"patch"`` (linear patch embedding, Dosovitskiy et al.),
    ``"conv"`` (stacked stride-2 3x3 convolutions, Xiao et al. 2021), ``"spt"`` (Shifted Patch
    Tokenization, Lee et al. 2021) or ``"cct"`` (Compact Convolutional Transformers' convolution +
    max-pool tokenizer, Hassani et al. 2021). ``attention`` is plain multi-head self-attention
    (``"mhsa"``) or Locality Self-Attention (``"lsa"``). ``pool="cls"`` adds a class token and
    classifies it; ``pool="mean"`` averages the patch tokens and ``pool="seq"`` (CCT's sequence
    pooling) weighs them by a learned softmax score, both without a class token.
    """

    image_size: int = 32
    patch_size: int = 4
    in_channels: int = 3
    num_classes: int = 100
    dim: int = 192
    depth: int = 9
    heads: int = 12
    mlp_ratio: float = 2.0
    stem: str = "patch"
    attention: str = "mhsa"
    pool: str = "cls"
    dropout: float = 0.0
    drop_path: float = 0.1

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "in_channels", "num_classes", "dim", "depth", "heads"):
            positive_int(f"ViTConfig.{name}", getattr(self, name))
        _choice("stem", self.stem, STEMS)
        _choice("attention", self.attention, ATTENTIONS)
        _choice("pool", self.pool, POOLS)
        _probability("dropout", self.dropout)
        _probability("drop_path", self.drop_path)
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, (int, float)) or not 0 < self.mlp_ratio < math.inf:
            raise ValueError(f"ViTConfig.mlp_ratio must be a positive finite number; got {self.mlp_ratio!r}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"ViTConfig.image_size ({self.image_size}) must be divisible by ViTConfig.patch_size "
                f"({self.patch_size}); allowed patch sizes for this image: {_divisors(self.image_size)}"
            )
        if self.dim % self.heads:
            raise ValueError(
                f"ViTConfig.dim ({self.dim}) must be divisible by ViTConfig.heads ({self.heads}); "
                f"allowed head counts for this dim: {_divisors(self.dim)}"
            )
        if self.attention == "lsa" and self.num_tokens < 2:
            raise ValueError(
                "ViTConfig.attention='lsa' masks each token's attention to itself, so it needs at least 2 tokens; "
                f"this config has {self.num_tokens} (image_size == patch_size with pool={self.pool!r}): use a smaller "
                "patch_size, pool='cls' or attention='mhsa'"
            )
        if self.stem == "conv" and self.patch_size & (self.patch_size - 1):
            raise ValueError(
                f"ViTConfig.patch_size must be a power of two with stem='conv' (one stride-2 convolution "
                f"per halving); got {self.patch_size}"
            )
        if self.stem == "cct":
            cct_layers(self.patch_size)

    @property
    def grid_size(self) -> int:
        """Tokens along one side of the image."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def num_tokens(self) -> int:
        """Sequence length seen by the transformer (patches plus the class token, if any)."""
        return self.num_patches + (self.pool == "cls")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    def replace(self, **changes: Any) -> "ViTConfig":
        """A copy with some fields changed (validated like a new config)."""
        _check_field_names(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ViTConfig":
        _check_field_names(values)
        return cls(**values)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ViTConfig":
        """A named preset (see ``PRESETS``), optionally with some fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; allowed presets: {', '.join(PRESETS)}")
        return PRESETS[name].replace(**overrides)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _check_field_names(values: dict[str, Any]) -> None:
    known = {f.name for f in fields(ViTConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown ViTConfig field(s) {unknown}; allowed fields: {', '.join(sorted(known))}")


# The transformer trunk follows Lee et al. 2021 (their ViT for CIFAR: 9 blocks, width 192,
# 12 heads of 16, MLP 384, 4x4 patches): 2.8 M parameters, far from the reference notebook's
# (reshalfahsi/image-classification-vit) 52.6 M, most of which sat in a flatten head that this library does not have.
_SMALL_DATA_VIT = ViTConfig()

PRESETS: dict[str, ViTConfig] = {
    # Plain ViT: linear patch embedding, multi-head self-attention.
    "vit": _SMALL_DATA_VIT,
    # Early convolutions (Xiao et al. 2021): same trunk, convolutional stem.
    "conv_vit": _SMALL_DATA_VIT.replace(stem="conv"),
    # SL-ViT (Lee et al. 2021): Shifted Patch Tokenization + Locality Self-Attention.
    "slvit": _SMALL_DATA_VIT.replace(stem="spt", attention="lsa"),
    # A wider model for longer schedules, still under 10 M parameters.
    "vit_small": _SMALL_DATA_VIT.replace(dim=384, depth=7, heads=6),
    # Seconds on a CPU: quick mode, tests and notebooks without a GPU.
    "vit_tiny": _SMALL_DATA_VIT.replace(dim=64, depth=2, heads=4, drop_path=0.0),
}
