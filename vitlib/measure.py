"""Sizes of a ViT and its stems: parameters per part, FLOPs, receptive fields, sequence lengths. Taught in chapters 1-3.

The numbers the book's tables print, computed from the modules themselves so that they cannot
drift from the code.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import ViTConfig
from .model import ViT, count_parameters, evaluating
from .stems import ShiftedPatchTokenization, build_stem


def flops(module: nn.Module, *inputs: Any, **kwargs: Any) -> int:
    """Floating-point operations (a multiply-add counts 2) of one forward call, from PyTorch's
    ``FlopCounterMode``; convolutions and matrix products, which are nearly all of a ViT's work."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs, **kwargs)
    return counter.get_total_flops()


def model_flops(model: ViT) -> int:
    """FLOPs of one image through ``model``. Counted on the explicit attention path
    (``return_attention=True``): the counter does not see inside the fused CPU attention kernel,
    and both paths do the same arithmetic."""
    cfg = model.cfg
    with evaluating(model):
        return flops(model, torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size), return_attention=True)


def receptive_field(stem: nn.Module) -> int:
    """Side, in pixels, of the image square that one output token of ``stem`` depends on.

    For stacked convolutions and max-pools the field grows by ``(k - 1) * jump`` per layer, where
    ``jump`` is the product of the earlier strides. Shifted Patch Tokenization sees its patch plus
    half a patch on every side (the shifted copies), so ``2p`` for an even patch size ``p``.
    """
    if isinstance(stem, ShiftedPatchTokenization):
        return stem.patch_size + 2 * (stem.patch_size // 2)
    field, jump = 1, 1
    for layer in stem.modules():
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            field += (_side(layer.kernel_size) - 1) * jump
            jump *= _side(layer.stride)
    return field


def _side(size: int | tuple[int, ...]) -> int:
    """A square window's side: ``Conv2d`` stores it as a pair, ``MaxPool2d`` as it was given."""
    return size if isinstance(size, int) else size[0]


def parameter_breakdown(model: ViT) -> dict[str, int]:
    """Trainable parameters per part: stem, class token and position embeddings, blocks, head (with
    sequence pooling's scores)."""
    embeddings = model.pos_embed.numel() + (model.cls_token.numel() if model.cls_token is not None else 0)
    pool_score = count_parameters(model.pool_score) if model.pool_score is not None else 0
    return {
        "stem": count_parameters(model.stem),
        "class token + positions": embeddings,
        "transformer blocks": count_parameters(model.blocks),
        "norm + head": count_parameters(model.norm) + count_parameters(model.head) + pool_score,
    }


def stem_summary(cfg: ViTConfig) -> dict[str, Any]:
    """One table row for ``cfg``'s stem: parameters, FLOPs per image, receptive field, tokens."""
    stem = build_stem(cfg).eval()
    image = torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size)
    return {
        "stem": cfg.stem,
        "parameters": count_parameters(stem),
        "MFLOPs / image": round(flops(stem, image) / 1e6, 2),
        "receptive field (px)": receptive_field(stem),
        "tokens": cfg.num_patches,
    }


def model_summary(name: str, cfg: ViTConfig) -> dict[str, Any]:
    """One table row for a model: its shape, sequence length, parameters and FLOPs per image."""
    model = ViT(cfg)
    return {
        "model": name,
        "stem": cfg.stem,
        "attention": cfg.attention,
        "pool": cfg.pool,
        "dim x depth": f"{cfg.dim} x {cfg.depth}",
        "tokens": cfg.num_tokens,
        "parameters (M)": round(count_parameters(model) / 1e6, 3),
        "MFLOPs / image": round(model_flops(model) / 1e6, 1),
    }
