"""Reading attention: attention rollout, token heat maps, attention entropy, position-embedding
similarity. Taught in chapter 7 (and chapters 1 and 3 use the similarity and the entropy).

Attention maps are ``ViT(...)(images, return_attention=True)``'s list, one ``[B, heads, N, N]``
tensor per block, rows summing to 1; token 0 is the class token when the model has one. The
drawing lives in :mod:`vitlib.lab.book.figures`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange, reduce

from .model import evaluating

HEAD_FUSIONS = ("mean", "max", "min")


def patch_grid(num_tokens: int, has_cls_token: bool) -> int:
    patches = num_tokens - has_cls_token
    grid = math.isqrt(patches)
    if grid * grid != patches:
        raise ValueError(
            f"{num_tokens} tokens ({patches} patches) are not a square patch grid; "
            f"check has_cls_token={has_cls_token}"
        )
    return grid


def _fuse_heads(attn: torch.Tensor, head_fusion: str) -> torch.Tensor:
    """``[B, h, N, N] -> [B, N, N]``."""
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {', '.join(map(repr, HEAD_FUSIONS))}; got {head_fusion!r}")
    return reduce(attn, "b h n m -> b n m", head_fusion)


def _discard_lowest(attn: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero the lowest ``ratio`` of each map's off-diagonal weights. The diagonal (which holds the
    class token's own weight) is always kept, so no token loses its path to itself."""
    n = attn.shape[-1]
    count = int(ratio * (n * n - n))
    if count == 0:
        return attn
    eye = torch.eye(n, dtype=torch.bool, device=attn.device)
    candidates = rearrange(attn.masked_fill(eye, float("inf")), "b n m -> b (n m)")
    lowest = candidates.topk(count, dim=1, largest=False).indices
    kept = torch.ones_like(candidates, dtype=torch.bool).scatter_(1, lowest, False)
    return attn * rearrange(kept, "b (n m) -> b n m", n=n)


def attention_rollout(
    maps: Sequence[torch.Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0
) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): how much each output token draws on each input token.

    Each layer's heads are fused (``"mean"``, ``"max"`` or ``"min"``), optionally the lowest
    ``discard_ratio`` of its weights are zeroed, the identity is added for the residual connection
    and the rows are renormalised to sum to 1; the layers then multiply, first layer first:
    ``R = A_L ... A_2 A_1``. Returns ``[B, N, N]`` with rows summing to 1.
    """
    if not maps:
        raise ValueError("attention_rollout needs at least one attention map; got an empty list")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1); got {discard_ratio!r}")
    b, _, n, _ = maps[0].shape
    eye = torch.eye(n, device=maps[0].device)
    rollout = eye.expand(b, n, n)
    for attn in maps:
        fused = _discard_lowest(_fuse_heads(attn.float(), head_fusion), discard_ratio) + eye
        rollout = (fused / fused.sum(dim=-1, keepdim=True)) @ rollout
    return rollout


def token_heatmap(matrix: torch.Tensor, has_cls_token: bool, grid: int) -> torch.Tensor:
    """``[B, N, N]`` token-to-token weights -> ``[B, grid, grid]`` map over the patches, in units
    of uniform attention: 1 everywhere when every patch gets the same weight, 4 on a patch that
    gets four times its share. Never stretched per map, so near-uniform attention looks uniform.

    With a class token: the class token's row (what the classifier reads) over the patches, as
    shares of what goes to the patches (the weight the class token keeps on itself is left out, so
    that 1 is the uniform share with either pooling). Without one (mean pooling): the mean of the
    rows, because the pooled representation is the mean of the tokens.
    """
    n = matrix.shape[-1]
    if grid * grid + has_cls_token != n:
        raise ValueError(
            f"token_heatmap: {n} tokens do not make a {grid}x{grid} patch grid "
            f"{'plus a class token' if has_cls_token else 'without a class token'}; check grid and has_cls_token"
        )
    weights = matrix[:, 0, 1:].float() if has_cls_token else matrix.float().mean(dim=1)
    weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    return rearrange(weights, "b (h w) -> b h w", h=grid) * (grid * grid)


def upsample_heatmap(heat: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """``[B, g, g] -> [B, H, W]`` by bilinear interpolation."""
    return F.interpolate(heat[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def attention_entropy(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[layers, heads]``: the mean entropy (nats) of each head's attention rows, over rows and the
    batch. ``log(N)`` is uniform attention; 0 is every query attending to a single token."""
    # xlogy gives 0 * log 0 = 0 for the masked (zero) weights of LSA.
    return torch.stack([-torch.special.xlogy(a.float(), a.float()).sum(dim=-1).mean(dim=(0, 2)) for a in maps])


def model_attention(model: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(logits, maps)`` of a ``vitlib.ViT`` in eval mode without gradients; the model's previous
    train/eval mode is restored afterwards."""
    with evaluating(model):
        return model(images, return_attention=True)


def position_similarity(pos_embed: torch.Tensor, has_cls_token: bool) -> torch.Tensor:
    """Cosine similarity ``[P, P]`` between the patches' position embedding rows (the class
    token's row, if any, left out). ``pos_embed [N(+1), dim]``."""
    unit = F.normalize(pos_embed.detach().float().cpu()[int(has_cls_token) :], dim=-1)
    return unit @ unit.T


def mirror_similarity(pos_embed: torch.Tensor, has_cls_token: bool) -> dict[str, float]:
    """Mean cosine similarity of each patch position's embedding with that of its mirror image
    across the vertical axis (``left-right``: column c and its opposite column) and across the
    horizontal one (``up-down``). Random embeddings give about 0 for both; a model trained with
    horizontal flips, which make left and right interchangeable, can learn a left-right one near 1."""
    similarity = position_similarity(pos_embed, has_cls_token)
    grid = patch_grid(len(similarity), False)
    index = torch.arange(grid * grid).reshape(grid, grid)
    rows = index.flatten()
    return {
        "left-right": similarity[rows, index.flip(1).flatten()].mean().item(),
        "up-down": similarity[rows, index.flip(0).flatten()].mean().item(),
    }


def attendable_tokens(cfg: Any) -> int:
    """How many tokens each query can attend to: all ``N`` with plain attention, ``N - 1`` with
    LSA, whose mask removes the query itself (uniform attention then has entropy ``log(N - 1)``)."""
    return cfg.num_tokens - (cfg.attention == "lsa")


def rollout_heatmaps(model: torch.nn.Module, images: torch.Tensor, discard_ratio: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(probabilities [B, K], maps [B, g, g])``: a ViT's predictions and its attention rollout over
    the patch grid for normalised ``images``."""
    logits, maps = model_attention(model, images)
    has_cls = model.cfg.pool == "cls"
    heat = token_heatmap(attention_rollout(maps, discard_ratio=discard_ratio), has_cls, model.cfg.grid_size)
    return logits.float().softmax(dim=-1), heat
