"""The Vision Transformer: a stem, a class token and position embeddings, pre-norm blocks, a head. Taught in chapter 1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torchvision.ops import MLP, StochasticDepth

from .attention import build_attention
from .config import ViTConfig
from .stems import build_stem


class Block(nn.Module):
    """Pre-norm transformer block: ``x + drop_path(attn(norm(x)))``, then the same with an MLP."""

    def __init__(self, cfg: ViTConfig, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = build_attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.dim)
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.mlp = MLP(cfg.dim, [hidden, cfg.dim], activation_layer=nn.GELU, dropout=cfg.dropout)
        # "row" mode drops the whole residual branch for a sample (Huang et al. 2016).
        self.drop_path = StochasticDepth(drop_path, mode="row")

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attn(self.norm1(x), return_attention)
        x = x + self.drop_path(attended)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, weights


class ViT(nn.Module):
    """Vision Transformer for small images: ``[B, C, H, W] -> logits [B, num_classes]``.

    >>> model = ViT(ViTConfig.from_preset("slvit"))
    >>> logits = model(images)                                  # training path (SDPA)
    >>> logits, attn = model(images, return_attention=True)     # attn: list of [B, heads, N, N]
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = build_stem(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim)) if cfg.pool == "cls" else None
        # Sequence pooling (Hassani et al. 2021): one learned score per token. No bias: the softmax
        # over the tokens ignores a shift shared by all scores, so a bias would never learn.
        self.pool_score = nn.Linear(cfg.dim, 1, bias=False) if cfg.pool == "seq" else None
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.dim))
        self.pos_drop = nn.Dropout(cfg.dropout)
        # Stochastic depth grows linearly with depth (Huang et al. 2016; DeiT).
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(Block(cfg, rate) for rate in rates)
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The sequence that enters the first block: ``[B, N(+1), dim]``."""
        x = self.stem(images)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.pos_drop(x + self.pos_embed)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, dim] -> [B, dim]``: the class token, the mean of the patch tokens, or (``"seq"``)
        their sum weighted by the softmax over the tokens of their learned scores."""
        if self.cls_token is not None:
            return x[:, 0]
        if self.pool_score is None:
            return x.mean(dim=1)
        weights = self.pool_score(x).softmax(dim=1)  # [B, N, 1], summing to 1 over the tokens
        return (weights * x).sum(dim=1)

    def forward(
        self, images: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.tokens(images)
        maps = []
        for block in self.blocks:
            x, weights = block(x, return_attention)
            maps.append(weights)
        # The head is LayerNorm + Linear on the pooled token. Sequence pooling, as in CCT, scores the
        # tokens after the final LayerNorm: the pre-norm residual stream's scale grows with depth, and
        # normalised tokens give the scores (and the convex mix the head reads) one scale. For "cls"
        # the order does not matter (LayerNorm acts per token); "mean" was trained norm-after-pool.
        pooled = self.pool(self.norm(x)) if self.pool_score is not None else self.norm(self.pool(x))
        logits = self.head(pooled)
        return (logits, maps) if return_attention else logits

    def no_weight_decay(self) -> set[str]:
        """Parameter names that AdamW should not decay: norms, biases, embeddings, temperatures."""
        names = {"pos_embed", "cls_token"}
        return {n for n, p in self.named_parameters() if p.ndim <= 1 or n in names}


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


@contextmanager
def evaluating(model: nn.Module, inference: bool = False) -> Iterator[nn.Module]:
    """``model`` in eval mode (no dropout, no stochastic depth, BatchNorm's running statistics) and
    without autograd for the block; its train/eval mode is restored afterwards, also on an error.

    ``torch.no_grad`` by default: its outputs are ordinary tensors that later code may change in
    place. ``inference=True`` uses ``torch.inference_mode``, a little faster, for outputs that are
    only read (predictions).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode() if inference else torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
