import base64
import io
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from PIL import Image  # noqa: E402

from vitlib import (  # noqa: E402
    ViT,
    ViTConfig,
    rollout,  # noqa: E402
)
from vitlib.lab.book import figures  # noqa: E402
from vitlib.lab.book.figures import (
    HEAT_LABEL,
    caption,
    heat_scale,
    overlay,
    plot_attention_heads,
    plot_attention_layers,
    plot_patches,
    prediction_collage,
)
from vitlib.rollout import attention_entropy, attention_rollout, model_attention, token_heatmap, upsample_heatmap


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _random_attention(b: int, h: int, n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, n, n, generator=generator).mul(2).softmax(dim=-1)


def test_rollout_of_identity_attention_is_identity():
    eye = torch.eye(5).expand(2, 3, 5, 5)
    rollout = attention_rollout([eye, eye, eye])
    assert rollout.shape == (2, 5, 5)
    assert torch.allclose(rollout, torch.eye(5).expand(2, 5, 5))


@pytest.mark.parametrize("discard_ratio", [0.0, 0.4])
@pytest.mark.parametrize("head_fusion", ["mean", "max", "min"])
def test_rollout_rows_sum_to_one(head_fusion, discard_ratio):
    maps = [_random_attention(2, 4, 7, seed) for seed in range(3)]
    rollout = attention_rollout(maps, head_fusion, discard_ratio)
    assert torch.allclose(rollout.sum(dim=-1), torch.ones(2, 7), atol=1e-5)
    assert (rollout >= 0).all()


def test_single_layer_mean_rollout_by_hand():
    head_a = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    head_b = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5], [0.0, 0.0, 1.0]])
    maps = [torch.stack([head_a, head_b])[None]]  # [1, 2, 3, 3]
    # mean = [[.5, .5, 0], [.5, .25, .25], [0, 0, 1]]; (mean + I) / 2:
    expected = torch.tensor([[0.75, 0.25, 0.0], [0.25, 0.625, 0.125], [0.0, 0.0, 1.0]])
    assert torch.allclose(attention_rollout(maps, "mean")[0], expected)


def test_rollout_multiplies_first_layer_first():
    first, second = _random_attention(1, 2, 4, 0), _random_attention(1, 2, 4, 1)
    expected = attention_rollout([second]) @ attention_rollout([first])
    assert torch.allclose(attention_rollout([first, second]), expected, atol=1e-6)
    assert not torch.allclose(attention_rollout([first, second]), attention_rollout([second, first]), atol=1e-4)


@pytest.mark.parametrize(("head_fusion", "op"), [("max", torch.amax), ("min", torch.amin)])
def test_head_fusion_uses_the_elementwise_op(head_fusion, op):
    attn = _random_attention(2, 3, 5, seed=4)
    fused = op(attn, dim=1) + torch.eye(5)
    expected = fused / fused.sum(dim=-1, keepdim=True)
    rollout = attention_rollout([attn], head_fusion)
    assert torch.allclose(rollout, expected, atol=1e-6)
    assert not torch.allclose(rollout, attention_rollout([attn], "mean"), atol=1e-3)


def test_bad_head_fusion_and_discard_ratio_raise():
    attn = _random_attention(1, 2, 4, seed=0)
    with pytest.raises(ValueError, match="head_fusion"):
        attention_rollout([attn], head_fusion="median")
    with pytest.raises(ValueError, match="discard_ratio"):
        attention_rollout([attn], discard_ratio=1.0)
    with pytest.raises(ValueError, match="at least one"):
        attention_rollout([])


def test_discard_zeroes_the_lowest_off_diagonal_weights_and_keeps_the_diagonal():
    n = 5
    attn = _random_attention(1, 1, n, seed=2).clone()
    attn[0, 0].diagonal().fill_(1e-6)  # the smallest weights of all sit on the diagonal
    rollout = attention_rollout([attn], discard_ratio=0.5)[0]
    off_diagonal = rollout[~torch.eye(n, dtype=torch.bool)]
    assert int((off_diagonal == 0).sum()) == int(0.5 * (n * n - n))
    assert (rollout.diagonal() > 0).all()
    # The zeroed weights are the smallest off-diagonal ones.
    original = attn[0, 0][~torch.eye(n, dtype=torch.bool)]
    assert original[off_diagonal == 0].max() <= original[off_diagonal > 0].min()


def test_token_heatmap_uses_class_row_or_mean_row():
    grid = 2
    with_cls = torch.zeros(1, 5, 5)
    with_cls[0, 0] = torch.tensor([0.2, 0.1, 0.4, 0.2, 0.1])  # class row: patches (0,0) .. (1,1)
    with_cls[0, 1:] = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])  # other rows prefer the last patch
    heat = token_heatmap(with_cls, has_cls_token=True, grid=grid)
    assert heat.shape == (1, grid, grid)
    # The class row's weights over the patches (0.8 of it; 0.2 stays on the class token) as shares
    # of that, in units of the uniform share (1/4 per patch): [.125, .5, .25, .125] times 4.
    assert torch.allclose(heat[0], torch.tensor([[0.5, 2.0], [1.0, 0.5]]))

    no_cls = torch.tensor([[[0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]]])
    heat = token_heatmap(no_cls, has_cls_token=False, grid=grid)
    # Mean row: [0, .75, 0, .25] -> times 4 patches: [0, 3, 0, 1].
    assert torch.allclose(heat[0], torch.tensor([[0.0, 3.0], [0.0, 1.0]]))


def test_uniform_attention_is_a_flat_map_on_a_fixed_scale():
    # Near-uniform attention must not be stretched into blobs: it maps to ~1 everywhere, and the
    # colour scale (0 .. at least 2) keeps it one flat colour.
    grid = 8
    uniform = torch.full((1, grid * grid + 1, grid * grid + 1), 1.0 / (grid * grid + 1))
    uniform += 1e-4 * torch.rand_like(uniform)
    heat = token_heatmap(uniform, has_cls_token=True, grid=grid)
    assert torch.allclose(heat, torch.ones_like(heat), atol=0.02)
    assert heat_scale(heat) == 2.0
    fig, ax = plt.subplots()
    layer = overlay(ax, torch.rand(3, 32, 32), heat[0])
    assert layer.get_clim() == (0.0, 2.0)


def test_uniform_over_the_patches_reads_1_with_either_pooling():
    """A class token that keeps 0.4 of its attention on itself and spreads the rest evenly over the
    patches attends uniformly to the patches: 1 everywhere, as mean pooling's uniform rows."""
    grid = 4
    with_cls = torch.full((1, 17, 17), 1.0 / 17)
    with_cls[0, 0, 0], with_cls[0, 0, 1:] = 0.4, 0.6 / 16
    mean_pooled = torch.full((1, 16, 16), 1.0 / 16)
    for matrix, cls in ((with_cls, True), (mean_pooled, False)):
        heat = token_heatmap(matrix, has_cls_token=cls, grid=grid)
        assert torch.allclose(heat, torch.ones_like(heat)), (cls, heat)


def test_token_heatmap_rejects_a_wrong_grid():
    with pytest.raises(ValueError, match="has_cls_token"):
        token_heatmap(torch.rand(1, 5, 5), has_cls_token=False, grid=2)


def test_upsample_heatmap_shape_and_range():
    heat = torch.rand(3, 4, 4)
    up = upsample_heatmap(heat, 32)
    assert up.shape == (3, 32, 32)
    assert up.min() >= heat.min() - 1e-6 and up.max() <= heat.max() + 1e-6
    assert upsample_heatmap(heat, (16, 8)).shape == (3, 16, 8)


def test_attention_entropy_of_uniform_and_one_hot_rows():
    n = 6
    uniform = torch.full((2, 1, n, n), 1 / n)
    one_hot = torch.eye(n).roll(1, dims=1).expand(2, 1, n, n)  # LSA-like: the diagonal is zero
    entropy = attention_entropy([torch.cat([uniform, one_hot], dim=1), torch.cat([one_hot, one_hot], dim=1)])
    assert entropy.shape == (2, 2)
    assert entropy[0, 0].item() == pytest.approx(math.log(n))
    assert entropy[0, 1].item() == pytest.approx(0.0, abs=1e-7)
    assert entropy[1].tolist() == pytest.approx([0.0, 0.0], abs=1e-7)
    # Random attention lies strictly between the two.
    random_entropy = attention_entropy([_random_attention(2, 3, n, seed=0)])
    assert ((random_entropy > 0) & (random_entropy < math.log(n))).all()


@pytest.fixture(params=["cls", "mean"])
def vit_and_images(request):
    torch.manual_seed(0)
    model = ViT(ViTConfig.from_preset("vit_tiny", pool=request.param))
    images = torch.rand(3, 3, 32, 32)
    return model, images


def test_model_attention_restores_mode_and_needs_no_grad(vit_and_images):
    model, images = vit_and_images
    model.train()
    logits, maps = model_attention(model, images)
    assert model.training
    cfg = model.cfg
    assert logits.shape == (3, cfg.num_classes) and not logits.requires_grad
    assert len(maps) == cfg.depth
    assert all(m.shape == (3, cfg.heads, cfg.num_tokens, cfg.num_tokens) for m in maps)
    model.eval()
    model_attention(model, images)
    assert not model.training


def _assert_panels_rendered(fig):
    """Every panel's rendered pixels vary (an image was drawn, not a blank square)."""
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())
    height = pixels.shape[0]
    for ax in fig.axes:
        box = ax.get_window_extent()
        crop = pixels[height - int(box.y1) : height - int(box.y0), int(box.x0) : int(box.x1), :3]
        assert crop.size and crop.std() > 1.0


def test_plot_attention_heads_has_one_panel_per_head(vit_and_images):
    model, images = vit_and_images
    _, maps = model_attention(model, images)
    fig = plot_attention_heads(images[1], maps, layer=1, has_cls_token=model.cfg.pool == "cls", index=1)
    panels, colorbar = fig.axes[:-1], fig.axes[-1]
    assert len(panels) == model.cfg.heads and colorbar.get_ylabel().replace("\n", " ") == HEAT_LABEL  # broken into lines that fit
    assert all(len(ax.images) == 2 for ax in panels)  # image + heat map
    assert len({ax.images[1].get_clim() for ax in panels}) == 1  # one scale for all heads
    _assert_panels_rendered(fig)


def test_plot_attention_layers_has_one_panel_per_block_plus_rollout(vit_and_images):
    model, images = vit_and_images
    _, maps = model_attention(model, images)
    fig = plot_attention_layers(images[0], maps, has_cls_token=model.cfg.pool == "cls")
    assert len(fig.axes) == model.cfg.depth + 2  # blocks, rollout, colour bar
    assert fig.axes[-2].get_title() == "rollout" and fig.axes[-1].get_ylabel().replace("\n", " ") == HEAT_LABEL
    _assert_panels_rendered(fig)


@pytest.mark.parametrize("with_heatmaps", [True, False])
def test_prediction_collage_marks_right_and_wrong(vit_and_images, with_heatmaps):
    model, images = vit_and_images
    logits, maps = model_attention(model, images)
    probs = logits.softmax(dim=-1)
    predicted = probs.argmax(dim=1)
    labels = predicted.clone()
    labels[1] = (predicted[1] + 1) % model.cfg.num_classes  # sample 1 is wrong
    classes = [f"class {i}" for i in range(model.cfg.num_classes)]
    heatmaps = None
    if with_heatmaps:
        cls = model.cfg.pool == "cls"
        grid = model.cfg.grid_size
        heatmaps = upsample_heatmap(token_heatmap(attention_rollout(maps), cls, grid), 32)
    fig = prediction_collage(images, labels, probs, heatmaps, classes, ncols=2, k=3)
    # image + bar chart per sample, and one colour bar for the heat maps
    assert len(fig.axes) == 2 * len(images) + with_heatmaps
    if with_heatmaps:
        assert fig.axes[-1].get_ylabel().replace("\n", " ") == HEAT_LABEL
    panels = fig.axes[: 2 * len(images)]
    image_axes, bar_axes = panels[0::2], panels[1::2]
    assert to_rgba(image_axes[0].title.get_color()) == to_rgba("tab:green")
    assert to_rgba(image_axes[1].title.get_color()) == to_rgba("tab:red")
    assert image_axes[1].get_title() == f"true: {classes[labels[1]]}\npred: {classes[predicted[1]]}"
    assert all(len(ax.images) == (2 if with_heatmaps else 1) for ax in image_axes)
    top3 = probs[2].topk(3).indices.tolist()
    assert [t.get_text() for t in bar_axes[2].get_yticklabels()] == [classes[i] for i in top3]
    widths = [patch.get_width() for patch in bar_axes[2].patches]
    assert widths == pytest.approx(probs[2].topk(3).values.tolist())
    _assert_panels_rendered(fig)


def test_in_a_notebook_the_caption_is_page_text_and_the_image_has_alt_text(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr("vitlib.lab.book.figures._notebook_shell", lambda: object())
    monkeypatch.setattr(IPython.display, "display", shown.append)
    fig = plot_patches(torch.rand(3, 32, 32), 4)
    caption(fig, "CIFAR-100 (JPEG q75 copy) <test>")
    (output,) = shown
    page = output.data
    assert '<figcaption>CIFAR-100 (JPEG q75 copy) &lt;test&gt;</figcaption>' in page
    alt = page.split('alt="', 1)[1].split('"', 1)[0]
    assert alt.startswith("Figure: ") and len(alt) > len("Figure: ")
    assert page.count("data:image/png;base64,") == 1
    assert fig._supxlabel is None  # the caption is not drawn into the PNG


def test_every_book_figure_fits_the_page_column(vit_and_images):
    """Figures wider than the text column are shrunk by the browser, and their labels with them."""
    model, images = vit_and_images
    logits, maps = rollout.model_attention(model, images)
    probs, heat = rollout.rollout_heatmaps(model, images)
    image = images[0].clamp(0, 1)
    stages = [("stage", torch.rand(8, 16, 16)), ("tokens", torch.rand(8, 8, 8))]
    seed = {"train/loss": [(0, 4.0)], "val/top1": [(0, 0.1)]}
    drawn = {
        "patches": figures.plot_patches(image, 4),
        "feature maps": figures.plot_feature_maps(image, stages),
        "heads": figures.plot_attention_heads(image, maps, layer=0, has_cls_token=model.cfg.pool == "cls", ncols=12),
        "blocks": figures.plot_attention_layers(image, maps, has_cls_token=model.cfg.pool == "cls"),
        "collage": figures.prediction_collage(images.clamp(0, 1), torch.zeros(len(images), dtype=torch.long), probs, heat, [str(i) for i in range(100)]),
        "comparison": figures.plot_attention_comparison(images.clamp(0, 1)[:1].repeat(6, 1, 1, 1), {"a": heat[:1].repeat(6, 1, 1)}),
        "curves": figures.plot_training_curves({"train/loss": [(0, 4.0)], "val/top1": [(0, 0.1)]}),
        "run curves": figures.plot_run_curves({"a": [seed]}),
        "confusion": figures.plot_confusion(torch.eye(20), [str(i) for i in range(20)]),
        "schedules": figures.plot_lr_schedules({"a": [0.1, 0.2]}, steps_per_epoch=1),
    }
    too_wide = {name: round(fig.get_size_inches()[0], 2) for name, fig in drawn.items() if fig.get_size_inches()[0] > figures.PAGE_WIDTH + 1e-6}
    assert not too_wide, f"wider than {figures.PAGE_WIDTH} in: {too_wide}"
    # Shown at their own size, their smallest labels read at 8 pt (a CSS px is 1/96 in, a figure
    # pixel 1/100 in).
    small = {name: figures.smallest_font_pt(fig) for name, fig in drawn.items() if figures.smallest_font_pt(fig) * figures.SAVE_DPI / 96 < figures.LEGIBLE_PT}
    assert not small, f"labels below {figures.LEGIBLE_PT} pt at the figure's own size: {small}"


def test_a_figure_carries_the_width_at_which_its_smallest_label_reads_at_8_pt(monkeypatch):
    import IPython.display

    assert figures.legible_width(1000, 10.0) == 768  # 10 pt at 100 dpi: shown at 0.768 it reads as 8 pt
    assert figures.legible_width(1000, 6.0) == 1000  # never wider than the image: its labels are too small
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1])
    ax.set_title("title", fontsize=12)
    ax.tick_params(labelsize=7)
    ax.text(0.5, 0.5, "", fontsize=2)  # empty text is not a label
    assert figures.smallest_font_pt(fig) == 7.0
    shown = []
    monkeypatch.setattr("vitlib.lab.book.figures._notebook_shell", lambda: object())
    monkeypatch.setattr(IPython.display, "display", shown.append)
    caption(fig, "text")
    page = shown[0].data
    assert 'data-smallest-pt="7.0"' in page
    width = int(page.split("--legible-width:", 1)[1].split("px", 1)[0])
    png = base64.b64decode(page.split("base64,", 1)[1].split('"', 1)[0])
    assert width == figures.legible_width(Image.open(io.BytesIO(png)).width, 7.0) == Image.open(io.BytesIO(png)).width


def _inside(fig, artist) -> bool:
    box, canvas = artist.get_window_extent(fig.canvas.get_renderer()), fig.bbox
    return box.x0 >= canvas.x0 - 1 and box.y0 >= canvas.y0 - 1 and box.x1 <= canvas.x1 + 1 and box.y1 <= canvas.y1 + 1


def test_patch_indices_carry_a_dark_outline():
    """White digits alone vanish on a bright sky: each index is stroked in black."""
    fig = plot_patches(torch.ones(3, 32, 32), 8)
    digits = [t for t in fig.axes[0].texts if t.get_text().isdigit()]
    assert [t.get_text() for t in digits] == [str(i) for i in range(16)]
    for digit in digits:
        (effect,) = digit.get_path_effects()
        assert to_rgba(digit.get_color()) == to_rgba("white")
        assert to_rgba(effect._gc["foreground"]) == to_rgba("black")


def test_heat_colour_bar_label_lies_inside_the_figure(vit_and_images):
    """A one-row figure is shorter than the heat label: the label is broken into lines that fit."""
    model, images = vit_and_images
    _, maps = rollout.model_attention(model, images)
    has_cls = model.cfg.pool == "cls"
    for fig in (plot_attention_heads(images[0], maps, layer=0, has_cls_token=has_cls),
                plot_attention_layers(images[0], maps, has_cls_token=has_cls)):  # fmt: skip
        fig.canvas.draw()
        bar = fig.axes[-1]
        label = bar.yaxis.label
        assert label.get_text().replace("\n", " ") == HEAT_LABEL
        assert _inside(fig, label), (label.get_window_extent(), fig.bbox)
        assert all(_inside(fig, tick) for tick in bar.get_yticklabels() if tick.get_text())


def test_run_curves_keep_their_legend_below_and_their_epochs_apart():
    """Three narrow panels: the legend sits under them, inside the figure, and the epoch labels
    of each panel do not overlap."""
    history = {"lr": [(e, 0.001) for e in range(30)], "train/loss": [(e, 4.0 - e / 30) for e in range(30)],
               "val/top1": [(e, e / 60) for e in range(30)]}  # fmt: skip
    panels = [("lr", "learning rate"), ("train/loss", "training loss"), ("val/top1", "held-out top-1")]
    fig = figures.plot_run_curves({"the recipe": [history, history], "warm-up + cosine instead of triangular": [history]}, panels)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    assert _inside(fig, legend)
    legend_box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        assert ax.get_legend() is None
        assert legend_box.y1 <= ax.get_tightbbox(renderer).y0 + 1  # below every panel, its labels included
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
        boxes = [b for b in boxes if ax.bbox.x0 - 1 <= (b.x0 + b.x1) / 2 <= ax.bbox.x1 + 1]
        assert len(boxes) >= 2
        assert all(a.x1 + 2 <= b.x0 for a, b in zip(boxes, boxes[1:])), [(b.x0, b.x1) for b in boxes]
    assert figures.legend_columns(["a" * 45, "b" * 50], figures.PAGE_WIDTH) == 2
    assert figures.legend_columns(["a" * 45] * 6, figures.PAGE_WIDTH) == 2
    assert figures.legend_columns(["a" * 200], 2.0) == 1


def test_an_untitled_figure_is_described_by_its_panels():
    """Chapter 4's grid of augmentation draws has no titles: its alt text still says what it shows."""
    fig = figures.plot_image_grid(torch.rand(32, 3, 8, 8), ncols=8, panel_size=1.3)
    assert figures.figure_description(fig) == "Figure: 32 images, 4 rows of 8"
    assert figures.figure_description(figures.plot_image_grid(torch.rand(3, 3, 8, 8), ncols=8)) == "Figure: 3 images, in one row"
    assert figures.figure_description(plt.figure()) == "Figure"


def test_a_figure_links_to_itself_for_its_full_size_view(monkeypatch):
    """On a phone the figure fits the column; its image links to the figure (the page's target),
    which the book's CSS shows full size, with a close button hidden elsewhere."""
    import IPython.display

    shown = []
    monkeypatch.setattr("vitlib.lab.book.figures._notebook_shell", lambda: object())
    monkeypatch.setattr(IPython.display, "display", shown.append)
    caption(plot_patches(torch.rand(3, 32, 32), 4), "text")
    page = shown[0].data
    ident = page.split('<figure class="vitlib-figure" id="', 1)[1].split('"', 1)[0]
    assert ident.startswith("vitlib-figure-")
    assert f'<a class="vitlib-figure-open" id="{ident}-inline" href="#{ident}"' in page
    assert page.index('href="#' + ident + '"') < page.index("<img ") < page.index("</a>")
    assert f'<a class="vitlib-figure-close" href="#{ident}-inline" style="display:none"' in page
    assert 'style="max-width:100%;height:auto"' in page  # fits its column, in Jupyter as on the site
