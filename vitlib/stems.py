"""Stems: the layers that turn an image into the token sequence the transformer reads. Taught in chapters 2 and 3.

Every stem maps ``[B, C, H, W] -> [B, (H/p)*(W/p), dim]`` for the configured patch size ``p``, so
the transformer behind it does not care which one is used.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .checks import same_names
from .config import STEMS, ViTConfig, cct_layers
from .patching import PatchEmbedding, patchify


class ConvStem(nn.Module):
    """Early convolutions (Xiao et al. 2021, "Early Convolutions Help Transformers See Better").

    ``log2(p)`` 3x3 stride-2 convolutions, each followed by BatchNorm and ReLU, halve the image
    until it is the token grid a ``p x p`` patchify would give; a final 1x1 convolution projects to
    ``dim``. Channels double at each step and reach ``dim`` at the last 3x3 convolution, as in the
    paper's stem (48-96-192-384 for a 384-wide model with 16x16 patches).
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        steps = patch_size.bit_length() - 1  # patch_size = 2**steps
        widths = [dim // 2 ** (steps - 1 - i) for i in range(steps)]
        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            layers += [
                nn.Conv2d(channels, width, kernel_size=3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        layers.append(nn.Conv2d(channels, dim, kernel_size=1))
        self.convs = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return rearrange(self.convs(images), "b d h w -> b (h w) d")


def shift_diagonally(images: torch.Tensor, shift: int) -> list[torch.Tensor]:
    """The four diagonal shifts of ``images`` by ``shift`` pixels, zero-filled, same size.

    Order: towards the top-left, top-right, bottom-left, bottom-right (the content moves in that
    direction, so the pixel at ``(i, j)`` of the top-left copy is the original's ``(i+s, j+s)``).
    """
    s = shift
    # F.pad takes (left, right, top, bottom); a negative value crops.
    return [
        F.pad(images, (-s, s, -s, s)),  # content moves up-left
        F.pad(images, (s, -s, -s, s)),  # up-right
        F.pad(images, (-s, s, s, -s)),  # down-left
        F.pad(images, (s, -s, s, -s)),  # down-right
    ]


class ShiftedPatchTokenization(nn.Module):
    """Shifted Patch Tokenization (Lee et al. 2021, "Vision Transformer for Small-Size Datasets").

    The image is concatenated with its four diagonal shifts by half a patch, so each token also
    sees the pixels around its patch; the ``5C``-channel image is patchified, layer-normalised and
    projected to ``dim``.
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        patch_dim = 5 * in_channels * patch_size * patch_size
        self.norm = nn.LayerNorm(patch_dim)
        self.proj = nn.Linear(patch_dim, dim)

    def shifted_stack(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, 5C, H, W]``: the image followed by its four shifted copies."""
        return torch.cat([images, *shift_diagonally(images, self.patch_size // 2)], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(patchify(self.shifted_stack(images), self.patch_size)))


class CCTTokenizer(nn.Module):
    """Compact Convolutional Transformers' tokenizer (Hassani et al. 2021, "Escaping the Big Data
    Paradigm with Compact Transformers").

    One or two layers of a 3x3 stride-1 convolution without bias, ReLU and a 3x3 stride-2 max-pool,
    each halving the image (:func:`vitlib.config.cct_layers`): two give ``p = 4``'s 8x8 grid on a
    32x32 image, one ``p = 2``'s 16x16. The last layer is ``dim`` wide and any before it 64, as in
    the paper's CCT-7/3x2. The overlapping windows let a token see past its own cell: 5 px for one
    layer, 13 px for two (:func:`vitlib.measure.receptive_field`).
    """

    HIDDEN_WIDTH = 64

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        widths = [self.HIDDEN_WIDTH] * (cct_layers(patch_size) - 1) + [dim]
        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            conv = nn.Conv2d(channels, width, kernel_size=3, stride=1, padding=1, bias=False)
            # He initialisation, as CCT: no normalisation follows, so this keeps the ReLU layers' scale.
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            layers += [conv, nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2, padding=1)]
            channels = width
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return rearrange(self.layers(images), "b d h w -> b (h w) d")


# The one registry of stems: ``ViTConfig.stem`` names a builder ``(in_channels, dim, patch_size) ->
# module`` here. A new stem is a class in this file, an entry here and its name in ``config.STEMS``
# (config validates names without importing torch, so it keeps its own tuple; the check below
# stops the two from drifting apart).
STEM_BUILDERS: dict[str, Callable[[int, int, int], nn.Module]] = {
    "patch": PatchEmbedding,
    "conv": ConvStem,
    "spt": ShiftedPatchTokenization,
    "cct": CCTTokenizer,
}
same_names("vitlib.stems.STEM_BUILDERS", STEM_BUILDERS, "vitlib.config.STEMS", STEMS, "stems")


def build_stem(cfg: ViTConfig) -> nn.Module:
    """The stem ``cfg.stem`` names in :data:`STEM_BUILDERS`."""
    return STEM_BUILDERS[cfg.stem](cfg.in_channels, cfg.dim, cfg.patch_size)
