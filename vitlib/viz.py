"""Attention analysis and figures: attention rollout, heat maps, prediction collages, entropy.

Attention maps are ``ViT(...)(images, return_attention=True)``'s list, one ``[B, heads, N, N]``
tensor per block, rows summing to 1; token 0 is the class token when the model has one.
Figures are made with ``matplotlib.pyplot`` and returned, so a notebook shows them inline and a
script can ``savefig`` them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from matplotlib.axes import Axes
from matplotlib.figure import Figure

HEAD_FUSIONS = ("mean", "max", "min")
_CORRECT, _WRONG = "tab:green", "tab:red"


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


def _normalise(heat: torch.Tensor) -> torch.Tensor:
    """Scale each ``[B, ...]`` map to [0, 1] (a constant map becomes all zeros)."""
    flat = rearrange(heat, "b ... -> b (...)")
    low = flat.amin(dim=1).view(-1, *[1] * (heat.ndim - 1))
    span = (flat.amax(dim=1) - flat.amin(dim=1)).view_as(low)
    return (heat - low) / span.clamp_min(torch.finfo(heat.dtype).tiny)


def token_heatmap(matrix: torch.Tensor, has_cls_token: bool, grid: int) -> torch.Tensor:
    """``[B, N, N]`` token-to-token weights -> ``[B, grid, grid]`` map over the patches, in [0, 1].

    With a class token: the class token's row (what the classifier reads). Without one (mean
    pooling): the mean of the rows, because the pooled representation is the mean of the tokens.
    """
    n = matrix.shape[-1]
    if grid * grid + has_cls_token != n:
        raise ValueError(
            f"token_heatmap: {n} tokens do not make a {grid}x{grid} patch grid "
            f"{'plus a class token' if has_cls_token else 'without a class token'}; check grid and has_cls_token"
        )
    weights = matrix[:, 0, 1:] if has_cls_token else matrix.mean(dim=1)
    return _normalise(rearrange(weights.float(), "b (h w) -> b h w", h=grid))


def upsample_heatmap(heat: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """``[B, g, g] -> [B, H, W]`` by bilinear interpolation."""
    return F.interpolate(heat[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def _show_image(ax: Axes, image: torch.Tensor) -> None:
    ax.imshow(rearrange(image, "c h w -> h w c").detach().cpu().clamp(0, 1).numpy())
    ax.set_axis_off()


def overlay(ax: Axes, image: torch.Tensor, heat: torch.Tensor, alpha: float = 0.5, cmap: str = "inferno") -> None:
    """Draw ``image`` ([3, H, W] in [0, 1]) with ``heat`` ([H, W]) over it; a coarser map is upsampled."""
    if heat.shape != image.shape[-2:]:
        heat = upsample_heatmap(heat[None], tuple(image.shape[-2:]))[0]
    _show_image(ax, image)
    ax.imshow(heat.detach().cpu().numpy(), cmap=cmap, alpha=alpha)


def _patch_grid(num_tokens: int, has_cls_token: bool) -> int:
    patches = num_tokens - has_cls_token
    grid = math.isqrt(patches)
    if grid * grid != patches:
        raise ValueError(
            f"{num_tokens} tokens ({patches} patches) are not a square patch grid; "
            f"check has_cls_token={has_cls_token}"
        )
    return grid


def _panels(count: int, ncols: int, panel_size: float = 2.0) -> tuple[Figure, list[Axes]]:
    """A figure with exactly ``count`` axes on a grid ``ncols`` wide."""
    ncols = min(ncols, count)
    nrows = math.ceil(count / ncols)
    fig = plt.figure(figsize=(panel_size * ncols, panel_size * nrows + 0.3), layout="constrained")
    return fig, [fig.add_subplot(nrows, ncols, i + 1) for i in range(count)]


def plot_attention_heads(
    image: torch.Tensor,
    maps: Sequence[torch.Tensor],
    layer: int,
    has_cls_token: bool,
    index: int = 0,
    ncols: int = 6,
    alpha: float = 0.6,
) -> Figure:
    """One panel per head of block ``layer``: the class token's attention over the patches (or, for
    a mean-pooled model, the mean row), over ``image`` ([3, H, W]), sample ``index`` of the batch."""
    attn = maps[layer][index]  # [heads, N, N]
    heat = token_heatmap(attn, has_cls_token, _patch_grid(attn.shape[-1], has_cls_token))
    fig, axes = _panels(len(heat), ncols)
    for head, (ax, head_heat) in enumerate(zip(axes, heat)):
        overlay(ax, image, head_heat, alpha=alpha)
        ax.set_title(f"head {head}", fontsize=9)
    fig.suptitle(f"Block {layer}: attention per head")
    return fig


def plot_attention_layers(
    image: torch.Tensor,
    maps: Sequence[torch.Tensor],
    has_cls_token: bool,
    index: int = 0,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    ncols: int = 6,
    alpha: float = 0.6,
) -> Figure:
    """One panel per block with its heads averaged, then the rollout through all blocks."""
    sample = [attn[index : index + 1] for attn in maps]
    grid = _patch_grid(sample[0].shape[-1], has_cls_token)
    matrices = [reduce(attn, "b h n m -> b n m", "mean") for attn in sample]
    matrices.append(attention_rollout(sample, head_fusion, discard_ratio))
    titles = [f"block {i}" for i in range(len(maps))] + ["rollout"]
    fig, axes = _panels(len(matrices), ncols)
    for ax, matrix, title in zip(axes, matrices, titles):
        overlay(ax, image, token_heatmap(matrix, has_cls_token, grid)[0], alpha=alpha)
        ax.set_title(title, fontsize=9)
    fig.suptitle("Attention per block (heads averaged) and rollout")
    return fig


def prediction_collage(
    images: torch.Tensor,
    labels: torch.Tensor,
    probs: torch.Tensor,
    heatmaps: torch.Tensor | None,
    classes: Sequence[str],
    ncols: int = 4,
    k: int = 5,
    alpha: float = 0.5,
) -> Figure:
    """Per sample: the image (with the attention overlay when ``heatmaps`` is given) titled with the
    true and predicted labels (green when right, red when wrong), above a bar chart of the top-``k``
    probabilities. ``images [B, 3, H, W]`` in [0, 1], ``labels [B]``, ``probs [B, K]`` (softmax),
    ``heatmaps [B, H, W]`` or ``None``."""
    count, num_classes = probs.shape
    if len(classes) != num_classes:
        raise ValueError(f"prediction_collage: {len(classes)} class names for {num_classes} probabilities")
    k = min(k, num_classes)
    top_probs, top_classes = probs.detach().float().cpu().topk(k, dim=1)
    labels = labels.detach().cpu()
    ncols = min(ncols, count)
    nrows = math.ceil(count / ncols)
    fig = plt.figure(figsize=(2.6 * ncols, 4.0 * nrows), layout="constrained")
    cells = fig.add_gridspec(2 * nrows, ncols, height_ratios=[3, 2] * nrows)
    for i in range(count):
        row, col = divmod(i, ncols)
        image_ax = fig.add_subplot(cells[2 * row, col])
        if heatmaps is None:
            _show_image(image_ax, images[i])
        else:
            overlay(image_ax, images[i], heatmaps[i], alpha=alpha)
        true, predicted = int(labels[i]), int(top_classes[i, 0])
        image_ax.set_title(
            f"true: {classes[true]}\npred: {classes[predicted]}",
            color=_CORRECT if predicted == true else _WRONG,
            fontsize=9,
        )
        bar_ax = fig.add_subplot(cells[2 * row + 1, col])
        colours = [_CORRECT if int(c) == true else "tab:gray" for c in top_classes[i]]
        bars = bar_ax.barh(range(k), top_probs[i].numpy(), color=colours)
        bar_ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
        bar_ax.set_yticks(range(k), [classes[int(c)] for c in top_classes[i]], fontsize=7)
        bar_ax.invert_yaxis()  # most probable on top
        bar_ax.set_xlim(0, 1)
        bar_ax.tick_params(axis="x", labelsize=7)
    return fig


def attention_entropy(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[layers, heads]``: the mean entropy (nats) of each head's attention rows, over rows and the
    batch. ``log(N)`` is uniform attention; 0 is every query attending to a single token."""
    # xlogy gives 0 * log 0 = 0 for the masked (zero) weights of LSA.
    return torch.stack([-torch.special.xlogy(a.float(), a.float()).sum(dim=-1).mean(dim=(0, 2)) for a in maps])


def model_attention(model: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(logits, maps)`` of a ``vitlib.ViT`` in eval mode without gradients; the model's previous
    train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(images, return_attention=True)
    finally:
        model.train(was_training)
