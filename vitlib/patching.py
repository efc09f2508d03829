"""Images as sequences: cutting an image into patches and embedding them as tokens. Taught in chapter 1."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into non-overlapping square patches, one flattened patch per row.

    ``[B, C, H, W] -> [B, N, p*p*C]`` with ``N = (H/p) * (W/p)`` in row-major (raster) order; each
    row lists the patch's pixels row by row, the channels of a pixel together.
    """
    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int) -> torch.Tensor:
    """Inverse of :func:`patchify` for a square grid: ``[B, N, p*p*C] -> [B, C, H, W]``."""
    grid = int(round(patches.shape[1] ** 0.5))
    return rearrange(
        patches, "b (h w) (p1 p2 c) -> b c (h p1) (w p2)", h=grid, w=grid, p1=patch_size, p2=patch_size, c=channels
    )


class PatchEmbedding(nn.Module):
    """Linear projection of every patch to a ``dim``-wide token: ``[B, C, H, W] -> [B, N, dim]``.

    A convolution with kernel = stride = patch size computes exactly ``Linear(patchify(x))`` (the
    same weights, reshaped), in one kernel instead of a copy plus a matrix product.
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return rearrange(self.proj(images), "b d h w -> b (h w) d")

    def as_linear(self) -> nn.Linear:
        """The equivalent ``nn.Linear`` acting on :func:`patchify` rows (for teaching and tests)."""
        weight = rearrange(self.proj.weight, "d c p1 p2 -> d (p1 p2 c)")
        linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            linear.weight.copy_(weight)
            linear.bias.copy_(self.proj.bias)
        return linear
