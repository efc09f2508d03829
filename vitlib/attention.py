"""Multi-head self-attention and Locality Self-Attention (Lee et al. 2021). Taught in chapter 3.

The training path calls ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on a
GPU) and never materialises the ``N x N`` weights. ``return_attention=True`` takes the explicit
softmax path instead, which computes the same function and also returns the weights for
visualisation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .checks import same_names
from .config import ATTENTIONS, ViTConfig


class Attention(nn.Module):
    """Multi-head self-attention; with ``locality=True``, Locality Self-Attention (LSA).

    LSA makes two changes (Lee et al. 2021): the softmax temperature is a learnable scalar,
    initialised to ``sqrt(head_dim)`` (the fixed value of plain attention), and the diagonal of the
    score matrix is masked so that a token attends to the others, not to itself. SDPA's ``scale``
    must be a Python float, so the learnable ``1/temperature`` multiplies the queries and SDPA runs
    with ``scale=1``.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, locality: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.locality = locality
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)
        if locality:
            self.temperature = nn.Parameter(torch.tensor(math.sqrt(self.head_dim)))

    def _scaled_queries(self, q: torch.Tensor) -> torch.Tensor:
        if self.locality:
            return q / self.temperature.to(q.dtype)
        return q * self.head_dim**-0.5

    def _locality_mask(self, n: int, device: torch.device) -> torch.Tensor | None:
        """Boolean ``[N, N]`` mask, True where attention is allowed (everywhere but the diagonal)."""
        if not self.locality:
            return None
        return ~torch.eye(n, dtype=torch.bool, device=device)

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x: [B, N, dim] -> ([B, N, dim], weights [B, heads, N, N] or None)``."""
        q, k, v = rearrange(self.qkv(x), "b n (qkv h d) -> qkv b h n d", qkv=3, h=self.heads)
        q = self._scaled_queries(q)
        mask = self._locality_mask(x.shape[1], x.device)
        drop = self.dropout if self.training else 0.0
        if return_attention:
            scores = q @ k.transpose(-2, -1)  # [B, h, N, N]
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            out = F.dropout(weights, drop, self.training) @ v
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, scale=1.0)
        out = rearrange(out, "b h n d -> b n (h d)")
        return self.proj_drop(self.proj(out)), weights


# The one registry of attentions: ``ViTConfig.attention`` names a builder ``(dim, heads, dropout) ->
# module`` here, the module's ``forward(x, return_attention)`` as ``Attention``'s. A new attention is
# an option of ``Attention`` or a class in this file, an entry here and its name in
# ``config.ATTENTIONS`` (config validates names without importing torch, so it keeps its own tuple;
# the check below stops the two from drifting apart).
ATTENTION_BUILDERS: dict[str, Callable[[int, int, float], nn.Module]] = {
    "mhsa": Attention,
    "lsa": functools.partial(Attention, locality=True),
}
same_names("vitlib.attention.ATTENTION_BUILDERS", ATTENTION_BUILDERS, "vitlib.config.ATTENTIONS", ATTENTIONS, "attentions")


def build_attention(cfg: ViTConfig) -> nn.Module:
    """The attention ``cfg.attention`` names in :data:`ATTENTION_BUILDERS`."""
    return ATTENTION_BUILDERS[cfg.attention](cfg.dim, cfg.heads, cfg.dropout)
