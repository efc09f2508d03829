"""The book's figures: images and patches, feature maps, attention heat maps and collages, curves,
confusion matrices, and the caption that every figure carries.

Figures are made with ``matplotlib.pyplot`` and returned, so a notebook shows them inline and a
script can ``savefig`` them. The attention maths they draw is in :mod:`vitlib.rollout`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import math
import textwrap
from collections.abc import Sequence
from typing import Any

import matplotlib.patheffects
import matplotlib.pyplot as plt
import matplotlib.text
import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from ...model import evaluating
from ...rollout import attention_rollout, patch_grid, position_similarity, token_heatmap, upsample_heatmap

_CORRECT, _WRONG = "tab:green", "tab:red"


# The book's text column is about 720 px wide and figures are saved at 100 dpi: a figure this wide
# (inches) is shown at its own size, so its labels stay as large as they were drawn.
PAGE_WIDTH = 7.2


SAVE_DPI = 100


# The smallest label a figure may be shown with at its own size. A phone shrinks a figure to its
# column, labels and all; a tap opens it full size (see caption), where they read at this size.
LEGIBLE_PT = 8.0


HEAT_LABEL = "attention ÷ uniform share (1 = uniform)"


def heat_scale(*heats: torch.Tensor) -> float:
    """The top of one colour scale for every panel of a figure: the largest value, and at least
    2 (twice the uniform share), so that a flat map near 1 shows as one flat colour."""
    return max(2.0, *(float(h.max()) for h in heats))


def add_heat_colorbar(fig: Figure, mappable: Any, axes: Sequence[Axes]) -> None:
    """One colour bar for the heat maps of ``axes`` (they share ``mappable``'s scale)."""
    fit_colorbar_label(fig, fig.colorbar(mappable, ax=list(axes), shrink=0.8), HEAT_LABEL)


def fit_colorbar_label(fig: Figure, colorbar: Any, text: str) -> None:
    """Label ``colorbar`` with ``text``, broken into as few lines as keep it inside the figure: a
    one-row figure is shorter than the heat label, which would otherwise be cut at its edges."""
    words = text.split()
    for lines in range(1, len(words) + 1):
        wrapped = textwrap.wrap(text, width=math.ceil(len(text) / lines), break_long_words=False)
        colorbar.set_label("\n".join(wrapped))
        fig.canvas.draw()  # the layout places the bar (and makes room for the label) when drawn
        if _inside_canvas(fig, colorbar.ax.yaxis.label):
            return


def _inside_canvas(fig: Figure, artist: Any) -> bool:
    """Whether ``artist`` (drawn) lies within ``fig``'s canvas, to a pixel."""
    box, canvas = artist.get_window_extent(fig.canvas.get_renderer()), fig.bbox
    return box.x0 >= canvas.x0 - 1 and box.y0 >= canvas.y0 - 1 and box.x1 <= canvas.x1 + 1 and box.y1 <= canvas.y1 + 1


def _show_image(ax: Axes, image: torch.Tensor) -> None:
    ax.imshow(rearrange(image, "c h w -> h w c").detach().cpu().clamp(0, 1).numpy())
    ax.set_axis_off()


def overlay(
    ax: Axes, image: torch.Tensor, heat: torch.Tensor, alpha: float = 0.5, cmap: str = "inferno", vmax: float | None = None
) -> Any:
    """Draw ``image`` ([3, H, W] in [0, 1]) with ``heat`` ([H, W]) over it on the scale [0, ``vmax``]
    (default: :func:`heat_scale` of this map); a coarser map is upsampled. Returns the heat layer
    (for a colour bar)."""
    if heat.shape != image.shape[-2:]:
        heat = upsample_heatmap(heat[None], tuple(image.shape[-2:]))[0]
    _show_image(ax, image)
    top = heat_scale(heat) if vmax is None else vmax
    return ax.imshow(heat.detach().cpu().numpy(), cmap=cmap, alpha=alpha, vmin=0.0, vmax=top)




def _panels(count: int, ncols: int, panel_size: float = 2.0) -> tuple[Figure, list[Axes]]:
    """A figure with exactly ``count`` axes on a grid ``ncols`` wide, no wider than the page."""
    ncols = min(ncols, count)
    nrows = math.ceil(count / ncols)
    panel_size = min(panel_size, PAGE_WIDTH / ncols)
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
    heat = token_heatmap(attn, has_cls_token, patch_grid(attn.shape[-1], has_cls_token))
    fig, axes = _panels(len(heat), ncols)
    top = heat_scale(heat)
    for head, (ax, head_heat) in enumerate(zip(axes, heat)):
        layer_image = overlay(ax, image, head_heat, alpha=alpha, vmax=top)
        ax.set_title(f"head {head}", fontsize=9)
    add_heat_colorbar(fig, layer_image, axes)
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
    grid = patch_grid(sample[0].shape[-1], has_cls_token)
    matrices = [reduce(attn, "b h n m -> b n m", "mean") for attn in sample]
    matrices.append(attention_rollout(sample, head_fusion, discard_ratio))
    titles = [f"block {i}" for i in range(len(maps))] + ["rollout"]
    fig, axes = _panels(len(matrices), ncols)
    heats = [token_heatmap(matrix, has_cls_token, grid)[0] for matrix in matrices]
    top = heat_scale(*heats)
    for ax, heat, title in zip(axes, heats, titles):
        layer_image = overlay(ax, image, heat, alpha=alpha, vmax=top)
        ax.set_title(title, fontsize=9)
    add_heat_colorbar(fig, layer_image, axes)
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
    column = min(2.6, PAGE_WIDTH / ncols)
    fig = plt.figure(figsize=(column * ncols, 1.55 * column * nrows), layout="constrained")
    cells = fig.add_gridspec(2 * nrows, ncols, height_ratios=[3, 2] * nrows)
    top = heat_scale(heatmaps) if heatmaps is not None else None
    heat_layer, image_axes = None, []
    for i in range(count):
        row, col = divmod(i, ncols)
        image_ax = fig.add_subplot(cells[2 * row, col])
        image_axes.append(image_ax)
        if heatmaps is None:
            _show_image(image_ax, images[i])
        else:
            heat_layer = overlay(image_ax, images[i], heatmaps[i], alpha=alpha, vmax=top)
        true, predicted = int(labels[i]), int(top_classes[i, 0])
        image_ax.set_title(
            f"true: {classes[true]}\npred: {classes[predicted]}",
            color=_CORRECT if predicted == true else _WRONG,
            fontsize=9,
        )
        bar_ax = fig.add_subplot(cells[2 * row + 1, col])
        colours = [_CORRECT if int(c) == true else "tab:gray" for c in top_classes[i]]
        bars = bar_ax.barh(range(k), top_probs[i].numpy(), color=colours)
        bar_ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
        bar_ax.set_yticks(range(k), [classes[int(c)] for c in top_classes[i]], fontsize=8)
        bar_ax.invert_yaxis()  # most probable on top
        bar_ax.set_xlim(0, 1)
        bar_ax.tick_params(axis="x", labelsize=8)
    if heat_layer is not None:
        add_heat_colorbar(fig, heat_layer, image_axes)
    return fig


def caption(fig: Figure, text: str, alt: str | None = None) -> Figure:
    """Show ``fig`` with ``text`` (e.g. which data it came from) as its caption; returns ``fig``.

    In a notebook the figure is displayed as an HTML ``<figure>``: the PNG with alt text (``alt``,
    else the figure's titles) and the caption as a ``<figcaption>``, so that the caption is page
    text, readable at any zoom and searchable, not pixels inside the image. Elsewhere (a script)
    the text is written under the figure, wrapped to its width.

    On the book's pages (``_static/narrow.css``) a phone shows the figure at the column's width and
    the image is a link to the figure itself: a tap shows it full size over the page (the figure
    is then the page's ``:target``), and its close button, or the browser's back, returns to it.
    """
    shell = _notebook_shell()
    if shell is None:
        fig.supxlabel(textwrap.fill(text, width=max(40, int(fig.get_figwidth() * 15))), fontsize=8, color="dimgray")
        return fig
    from IPython.display import HTML, display

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=SAVE_DPI, bbox_inches="tight")
    plt.close(fig)  # displayed once, here, not again by the inline backend
    png = base64.b64encode(buffer.getvalue()).decode("ascii")
    description = alt or figure_description(fig)
    smallest = smallest_font_pt(fig, drawn=True)  # savefig drew it
    buffer.seek(0)
    width = legible_width(Image.open(buffer).width, smallest)
    display(HTML(figure_html(png, description, text, smallest, width)))
    return fig


def figure_html(png: str, alt: str, text: str, smallest_pt: float, width: int) -> str:
    """The ``<figure>`` of :func:`caption` for a base64 ``png``: the image, a link to the figure
    (a tap on a phone opens it full size), and a close button that only the book's CSS shows."""
    ident = "vitlib-figure-" + hashlib.sha1(png.encode("ascii")).hexdigest()[:12]
    return (
        f'<figure class="vitlib-figure" id="{ident}" style="--legible-width:{width}px">'
        f'<a class="vitlib-figure-open" id="{ident}-inline" href="#{ident}" title="Open the figure full size">'
        f'<img src="data:image/png;base64,{png}" alt="{html.escape(alt)}" data-smallest-pt="{smallest_pt:.1f}" '
        f'style="max-width:100%;height:auto"></a>'
        f'<a class="vitlib-figure-close" href="#{ident}-inline" style="display:none" aria-label="Close the full-size figure">×</a>'
        f'<figcaption>{html.escape(text)}</figcaption></figure>'
    )


def smallest_font_pt(fig: Figure, drawn: bool = False) -> float:
    """The size, in points, of the smallest visible label of ``fig`` (its ticks, titles, legends);
    ``drawn``: the figure was just drawn (saved), so its tick labels have their text already."""
    if not drawn:
        fig.canvas.draw()  # tick labels get their text when the figure is drawn
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
    return float(min(sizes)) if sizes else LEGIBLE_PT


def legible_width(width_px: int, smallest_pt: float, dpi: int = SAVE_DPI) -> int:
    """CSS pixels at which a ``width_px`` image drawn at ``dpi`` shows its ``smallest_pt`` label at
    :data:`LEGIBLE_PT` (a CSS pixel is 1/96 inch: a label of ``s`` pt at scale ``k`` reads as
    ``s * k * dpi / 96`` pt); never more than the image's own width."""
    return min(width_px, math.ceil(width_px * LEGIBLE_PT * 96 / (smallest_pt * dpi)))


def _notebook_shell() -> Any:
    """The running IPython kernel, or ``None`` outside a notebook."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return shell if shell is not None and hasattr(shell, "kernel") else None


def figure_description(fig: Figure) -> str:
    """Alt text from a figure's own titles: its title, then its panels' titles and axis labels."""
    parts = [fig._suptitle.get_text()] if fig._suptitle is not None else []
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_ylabel() if not ax.get_title() else ""]
    words = [p.replace("\n", " ") for p in parts if p]
    unique = list(dict.fromkeys(words))
    summary = "; ".join(unique[:8]) + (f" and {len(unique) - 8} more panels" if len(unique) > 8 else "")
    return f"Figure: {summary}" if summary else _untitled_description(fig)


def _untitled_description(fig: Figure) -> str:
    """Alt text for a figure without titles: what its panels show and how they are laid out (a
    grid of images, e.g. an augmentation's draws)."""
    panels = [ax for ax in fig.axes if ax.get_subplotspec() is not None]
    if not panels:
        return "Figure"
    rows, cols = panels[0].get_subplotspec().get_gridspec().get_geometry()
    what = "images" if all(ax.images for ax in panels) else "panels"
    if len(panels) == 1:
        return f"Figure: one {what[:-1]}"
    layout = f"{rows} rows of {cols}" if rows > 1 else "in one row"
    return f"Figure: {len(panels)} {what}, {layout}"


def plot_image_grid(
    images: torch.Tensor, titles: Sequence[str] | None = None, ncols: int = 8, panel_size: float = 1.5
) -> Figure:
    """``images [B, 3, H, W]`` in [0, 1] on a grid, each with its title (if given)."""
    fig, axes = _panels(len(images), ncols, panel_size)
    for i, ax in enumerate(axes):
        _show_image(ax, images[i])
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    return fig


def _tile(patches: torch.Tensor, per_row: int, gap: int = 1) -> torch.Tensor:
    """``[N, C, p, p] -> [C, H, W]``: patches side by side, ``per_row`` a row, white gaps between."""
    n, c, p, _ = patches.shape
    rows = math.ceil(n / per_row)
    padded = torch.ones(rows * per_row, c, p + gap, p + gap)
    padded[:n, :, :p, :p] = patches
    return rearrange(padded, "(r k) c h w -> c (r h) (k w)", k=per_row)[:, :-gap, :-gap]


# White digits with a dark outline: they read on a bright sky as on a dark ground.
INDEX_OUTLINE = matplotlib.patheffects.withStroke(linewidth=1.5, foreground="black")


def plot_patches(image: torch.Tensor, patch_size: int, per_row: int = 16) -> Figure:
    """An image ``[3, H, W]`` cut into patches: the image with the patch grid and indices, the
    patches as a sequence in raster order, and the ``[N, p*p*3]`` matrix the transformer reads."""
    c, h, w = image.shape
    grid_h, grid_w = h // patch_size, w // patch_size
    patches = rearrange(image, "c (gh p1) (gw p2) -> (gh gw) c p1 p2", p1=patch_size, p2=patch_size)
    flat = rearrange(patches, "n c p1 p2 -> n (p1 p2 c)")  # the row layout of vitlib.patching.patchify
    fig = plt.figure(figsize=(PAGE_WIDTH, 2.8), layout="constrained")
    left, middle, right = fig.subplots(1, 3, width_ratios=[1, 1.6, 1])
    _show_image(left, image)
    for k in range(1, grid_h):
        left.axhline(k * patch_size - 0.5, color="white", lw=0.8)
    for k in range(1, grid_w):
        left.axvline(k * patch_size - 0.5, color="white", lw=0.8)
    for index in range(grid_h * grid_w):
        row, col = divmod(index, grid_w)
        left.text((col + 0.5) * patch_size - 0.5, (row + 0.5) * patch_size - 0.5, str(index),
                  color="white", fontsize=8, ha="center", va="center",
                  path_effects=[INDEX_OUTLINE])  # fmt: skip
    left.set_title(f"{h}x{w} image, {patch_size}x{patch_size} patches", fontsize=9)
    _show_image(middle, _tile(patches, per_row))
    middle.set_title(f"the sequence: {len(patches)} patches in raster order", fontsize=9)
    right.imshow(flat.numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
    right.set_xlabel(f"{flat.shape[1]} values = {patch_size}x{patch_size} px x {c} channels", fontsize=8)
    right.set_ylabel("patch (token) index", fontsize=8)
    right.set_title("patchify: one row per patch", fontsize=9)
    return fig


def plot_position_similarity(pos_embed: torch.Tensor, has_cls_token: bool) -> Figure:
    """Cosine similarity of each patch's position embedding with every other one (as in Fig. 7 of
    Dosovitskiy et al.): a small map per patch position, laid out on the patch grid.
    ``pos_embed [N(+1), dim]``."""
    similarity = position_similarity(pos_embed, has_cls_token)
    grid = patch_grid(len(similarity), False)
    maps = F.pad(rearrange(similarity, "p (h w) -> p h w", h=grid), (0, 1, 0, 1), value=float("nan"))
    mosaic = rearrange(maps, "(gh gw) h w -> (gh h) (gw w)", gh=grid)[:-1, :-1]
    fig, ax = plt.subplots(figsize=(6.2, 5.4), layout="constrained")
    shown = ax.imshow(mosaic.numpy(), cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    fig.colorbar(shown, ax=ax, shrink=0.8, label="cosine similarity")
    ax.set_title(f"Position embedding similarity: {grid}x{grid} maps, one per patch position", fontsize=10)
    return fig


def conv_stem_stages(stem: torch.nn.Module, image: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Feature maps ``[C, H, W]`` after every ReLU of a ``ConvStem`` and after its last layer, for
    one image ``[3, H, W]``; the stem's train/eval mode is restored afterwards."""
    stages, x, conv = [], image[None], None
    with evaluating(stem):
        for index, layer in enumerate(stem.convs):
            x = layer(x)
            if isinstance(layer, torch.nn.Conv2d):
                conv = f"{layer.kernel_size[0]}x{layer.kernel_size[1]} conv, stride {layer.stride[0]}"
            if isinstance(layer, torch.nn.ReLU) or index == len(stem.convs) - 1:
                stages.append((f"{conv}: {x.shape[1]}x{x.shape[2]}x{x.shape[3]}", x[0]))
    return stages


def plot_feature_maps(image: torch.Tensor, stages: Sequence[tuple[str, torch.Tensor]], channels: int = 8) -> Figure:
    """The input image, then one row per stage showing its first ``channels`` feature maps."""
    panel = PAGE_WIDTH / (channels + 1)
    fig = plt.figure(figsize=(PAGE_WIDTH, (panel + 0.2) * len(stages) + 0.4), layout="constrained")
    axes = fig.subplots(len(stages), channels + 1, squeeze=False)
    for row, (name, maps) in enumerate(stages):
        if row == 0:
            _show_image(axes[0, 0], image)
            axes[0, 0].set_title("input", fontsize=8)
        else:
            axes[row, 0].set_axis_off()
        axes[row, 1].set_title(name, fontsize=8, loc="left")
        for col in range(channels):
            ax = axes[row, col + 1]
            ax.imshow(maps[col].cpu().numpy(), cmap="magma")
            ax.set_axis_off()
    return fig


def plot_shifted_copies(image: torch.Tensor, shift: int) -> Figure:
    """Shifted Patch Tokenization's input: the image and its four diagonal shifts by ``shift`` px."""
    from ...stems import shift_diagonally

    copies = [image, *(s[0] for s in shift_diagonally(image[None], shift))]
    titles = ["original", "up-left", "up-right", "down-left", "down-right"]
    fig = plot_image_grid(torch.stack(copies), [f"{t}" for t in titles], ncols=5, panel_size=2.0)
    fig.suptitle(f"The image and its four diagonal shifts by {shift} px (zero-filled)", fontsize=10)
    return fig


def plot_token_view(image: torch.Tensor, patch_size: int, row: int, col: int) -> Figure:
    """What one SPT token sees: its patch (solid box) and the window the shifted copies add (dashed),
    then the five ``p x p`` crops that are concatenated into the token's input."""
    from matplotlib.patches import Rectangle

    from ...stems import shift_diagonally

    shift = patch_size // 2
    y, x = row * patch_size, col * patch_size
    copies = [image, *(s[0] for s in shift_diagonally(image[None], shift))]
    crops = [c[:, y : y + patch_size, x : x + patch_size] for c in copies]
    fig, axes = _panels(6, 6, 2.0)
    _show_image(axes[0], image)
    axes[0].add_patch(Rectangle((x - 0.5, y - 0.5), patch_size, patch_size, fill=False, ec="red", lw=1.5))
    axes[0].add_patch(Rectangle((x - shift - 0.5, y - shift - 0.5), patch_size + 2 * shift, patch_size + 2 * shift,
                                fill=False, ec="yellow", lw=1.5, ls="--"))  # fmt: skip
    axes[0].set_title(f"patch ({row}, {col})", fontsize=9)
    for ax, crop, name in zip(axes[1:], crops, ["original", "up-left", "up-right", "down-left", "down-right"]):
        _show_image(ax, crop)
        ax.set_title(name, fontsize=9)
    fig.suptitle("One SPT token: its patch (red) and the pixels the shifted copies add (yellow)", fontsize=10)
    return fig


def plot_attention_matrices(matrices: dict[str, torch.Tensor], log_scale: bool = False) -> Figure:
    """Token-to-token attention ``[N, N]`` of several models side by side (rows: queries)."""
    from matplotlib.colors import LogNorm

    fig, axes = _panels(len(matrices), len(matrices), 3.4)
    for ax, (name, matrix) in zip(axes, matrices.items()):
        values = matrix.detach().float().cpu()
        norm = LogNorm(vmin=max(values[values > 0].min().item(), 1e-4), vmax=values.max().item()) if log_scale else None
        shown = ax.imshow(values.clamp_min(1e-4).numpy() if log_scale else values.numpy(), cmap="viridis", norm=norm)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("key token", fontsize=8)
        ax.set_ylabel("query token", fontsize=8)
        fig.colorbar(shown, ax=ax, shrink=0.75)
    return fig


def plot_sharpness(entropies: dict[str, torch.Tensor], attendable: int | dict[str, int]) -> Figure:
    """How far attention is from uniform, per block, for several models: ``log M`` minus the
    attention entropy (``[layers, heads]`` each, from :func:`attention_entropy`), in nats, where
    ``M`` is the number of tokens a query can attend to (:func:`attendable_tokens`; one per model
    when they differ). 0 is uniform attention over those tokens, ``log M`` attention to a single
    token. Bars are the head mean, whiskers the least and the most focused head."""
    counts = attendable if isinstance(attendable, dict) else dict.fromkeys(entropies, attendable)
    fig, ax = plt.subplots(figsize=(7, 3.4), layout="constrained")
    width = 0.8 / len(entropies)
    for i, (name, entropy) in enumerate(entropies.items()):
        sharpness = math.log(counts[name]) - entropy.detach().float().cpu()
        mean, low, high = sharpness.mean(dim=1), sharpness.amin(dim=1), sharpness.amax(dim=1)
        blocks = torch.arange(len(mean)) + (i - (len(entropies) - 1) / 2) * width
        ax.bar(blocks.numpy(), mean.numpy(), width, label=f"{name} (M = {counts[name]})",
               yerr=torch.stack([mean - low, high - mean]).numpy(), capsize=3)  # fmt: skip
    ax.set_xticks(range(len(next(iter(entropies.values())))))
    ax.set_xlabel("block")
    ax.set_ylabel("log M - entropy (nats)")
    ax.set_title("Sharpness of attention: 0 = uniform over the M tokens a query can attend to", fontsize=10)
    fig.legend(loc="outside lower center", ncols=3, fontsize=8)  # below the bars, never over them
    return fig


def plot_mixed_batch(images: torch.Tensor, targets: torch.Tensor, classes: Sequence[str], ncols: int = 8) -> Figure:
    """Mixed images with their soft labels: the two largest target weights as titles."""
    weights, indices = targets.detach().float().cpu().topk(2, dim=1)
    titles = [
        "\n".join(f"{classes[int(c)]} {w:.2f}" for w, c in zip(ws, cs) if w > 0.005)
        for ws, cs in zip(weights.tolist(), indices.tolist())
    ]
    return plot_image_grid(images, titles, ncols=ncols, panel_size=1.7)


def plot_lr_schedules(traces: dict[str, Sequence[float]], steps_per_epoch: int) -> Figure:
    """Learning rate per optimizer step for each named schedule, against epochs."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 3.4), layout="constrained")
    for name, trace in traces.items():
        epochs = torch.arange(len(trace)) / steps_per_epoch
        ax.plot(epochs.numpy(), list(trace), label=name, lw=1.4)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_lr_range_test(lrs: Sequence[float], losses: Sequence[float], suggestion: float | None) -> Figure:
    """The LR range test: smoothed training loss against the (exponentially growing) learning rate."""
    fig, ax = plt.subplots(figsize=(7, 3.4), layout="constrained")
    ax.plot(lrs, losses, lw=1.4)
    ax.set_xscale("log")
    if suggestion is not None:
        ax.axvline(suggestion, color="tab:red", ls="--", lw=1, label=f"steepest descent: {suggestion:.2g}")
        ax.legend(fontsize=8)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.grid(alpha=0.3)
    return fig


def plot_training_curves(history: dict[str, list[tuple[int, float]]]) -> Figure:
    """Loss and top-1 per epoch for train and validation; ``history["train/loss"]`` is a list of
    ``(epoch, value)`` (see ``vitlib.support.run_folder.read_history``)."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 3.2), layout="constrained")
    for ax, metric in ((loss_ax, "loss"), (acc_ax, "top1")):
        for split in ("train", "val"):
            points = history.get(f"{split}/{metric}", [])
            if points:
                epochs, values = zip(*points)
                ax.plot(epochs, values, marker="o", ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(_epoch_ticks())
        ax.set_ylabel("top-1 accuracy" if metric == "top1" else "cross-entropy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


# The panels of plot_run_curves: (history key, axis label).
RUN_PANELS = (("train/loss", "training loss"), ("val/top1", "test top-1"))


def plot_run_curves(
    runs: dict[str, Sequence[dict[str, list[tuple[int, float]]]]], panels: Sequence[tuple[str, str]] = RUN_PANELS
) -> Figure:
    """Per-epoch curves of several models, one panel per ``(history key, axis label)`` of
    ``panels`` (default: training loss and test top-1): ``runs[name]`` is one history per seed
    (:attr:`vitlib.lab.results.records.RecordedRun.history`); a model's seeds share its colour, so their spread
    shows as a band of lines."""
    fig, axes = plt.subplots(1, len(panels), figsize=(PAGE_WIDTH, 3), layout="constrained", squeeze=False)
    axes = list(axes[0])
    for colour, (name, histories) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], runs.items()):
        for seed, history in enumerate(histories):
            label = f"{name} ({len(histories)} seed{'s' * (len(histories) > 1)})" if seed == 0 else None
            for ax, (key, _) in zip(axes, panels):
                if history.get(key):
                    epochs, values = zip(*history[key])
                    ax.plot(epochs, values, color=colour, marker="o", ms=2.5, lw=1, alpha=0.85, label=label)
    for ax, (_, ylabel) in zip(axes, panels):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(_epoch_ticks())
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    entries: dict[str, Any] = {}  # one entry per model, from whichever panel has its curves
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:  # below the panels: a narrow panel has no room for it, and it never covers a curve
        labels = list(entries)
        fig.legend(list(entries.values()), labels, loc="outside lower center",
                   ncols=legend_columns(labels, fig.get_figwidth()), fontsize=8)  # fmt: skip
    return fig


def _epoch_ticks() -> MaxNLocator:
    """Whole epochs, as many as the axis has room for (its length over three label heights), so
    that the labels of a narrow panel never touch."""
    return MaxNLocator(nbins="auto", integer=True)


def legend_columns(labels: Sequence[str], width_in: float, fontsize: float = 8) -> int:
    """How many legend entries of ``labels`` fit side by side in ``width_in`` inches: the longest
    label (about 0.55 em a character) and its line sample (about 4 em) per column."""
    column_pt = (0.55 * max(len(label) for label in labels) + 4) * fontsize
    return max(1, min(len(labels), int(width_in * 72 // column_pt)))


def plot_confusion(matrix: torch.Tensor, names: Sequence[str]) -> Figure:
    """A confusion matrix (rows: true class, normalised to sum to 1; columns: predicted class)."""
    counts = matrix.detach().float().cpu()
    rates = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 6.4), layout="constrained")
    shown = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(shown, ax=ax, shrink=0.7, label="fraction of the true class")
    return fig


def plot_attention_comparison(images: torch.Tensor, heatmaps: dict[str, torch.Tensor], alpha: float = 0.6) -> Figure:
    """One row per model, one column per image: each model's attention map over the image.
    ``images [B, 3, H, W]`` in [0, 1]; ``heatmaps[name]`` is ``[B, h, w]``."""
    count = len(images)
    panel = min(1.6, (PAGE_WIDTH - 0.9) / count)  # 0.9 in for the row names and the colour bar
    fig = plt.figure(figsize=(panel * count + 0.9, (panel + 0.05) * len(heatmaps) + 0.3), layout="constrained")
    axes = fig.subplots(len(heatmaps), count, squeeze=False)
    top = heat_scale(*heatmaps.values())
    for row, (name, heat) in enumerate(heatmaps.items()):
        for col in range(count):
            heat_layer = overlay(axes[row, col], images[col], heat[col], alpha=alpha, vmax=top)
        axes[row, 0].set_axis_on()
        axes[row, 0].set_xticks([])
        axes[row, 0].set_yticks([])
        axes[row, 0].set_ylabel(name, fontsize=8)
    add_heat_colorbar(fig, heat_layer, axes.ravel())
    return fig
