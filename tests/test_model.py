"""The model: shapes, presets, stems, SPT, LSA, CCT's tokenizer and sequence pooling, and the SDPA fast path."""

import importlib.util
import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vitlib import PRESETS, ViT, ViTConfig, attention, checks, config, count_parameters, measure, stems
from vitlib.attention import Attention
from vitlib.model import evaluating
from vitlib.patching import PatchEmbedding, patchify, unpatchify
from vitlib.stems import CCTTokenizer, ConvStem, ShiftedPatchTokenization
from vitlib.support.pretrained import from_pretrained, save_pretrained

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_shapes_and_size(name):
    cfg = PRESETS[name]
    model = ViT(cfg)
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, cfg.num_classes)
    logits, maps = model.eval()(x, return_attention=True)
    assert logits.shape == (2, cfg.num_classes)
    assert len(maps) == cfg.depth
    assert all(m.shape == (2, cfg.heads, cfg.num_tokens, cfg.num_tokens) for m in maps)
    assert torch.allclose(maps[0].sum(-1), torch.ones(()), atol=1e-5)
    n = count_parameters(model)
    assert n <= 10_000_000
    # No flatten head: the classifier is one Linear(dim, classes) on the pooled token.
    assert model.head.weight.shape == (cfg.num_classes, cfg.dim)


def test_parameter_count_matches_the_architecture():
    cfg = PRESETS["vit"]
    d, r, n_tok = cfg.dim, cfg.mlp_ratio, cfg.num_tokens
    hidden = int(d * r)
    block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * hidden + hidden) + (hidden * d + d)
    stem = 3 * cfg.patch_size**2 * d + d
    expected = stem + d + n_tok * d + cfg.depth * block + 2 * d + d * cfg.num_classes + cfg.num_classes
    assert count_parameters(ViT(cfg)) == expected


def test_patchify_roundtrip_and_order():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    p = patchify(x, 4)
    assert p.shape == (2, 4, 48)
    # Patch 1 is the top-right 4x4 block; its first entry is pixel (0, 4), channel 0.
    assert p[0, 1, 0] == x[0, 0, 0, 4]
    assert p[0, 1, 1] == x[0, 1, 0, 4]  # channels of one pixel are adjacent
    assert torch.equal(unpatchify(p, 4, 3), x)


def test_patch_embedding_is_a_linear_map_of_patches():
    emb = PatchEmbedding(3, 16, 4)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(emb(x), emb.as_linear()(patchify(x, 4)), atol=1e-5)


@pytest.mark.parametrize("patch", [2, 4, 8, 16])
def test_conv_stem_yields_the_patch_grid(patch):
    stem = ConvStem(3, 32, patch)
    out = stem(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, (32 // patch) ** 2, 32)
    n_strided = sum(isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2) for m in stem.modules())
    assert n_strided == int(math.log2(patch))


def test_spt_equals_a_hand_computed_result():
    # 1 channel, 4x4 image, 2x2 patches: shifts by one pixel.
    img = torch.arange(1, 17, dtype=torch.float32).reshape(1, 1, 4, 4)
    spt = ShiftedPatchTokenization(1, 8, 2)
    stack = spt.shifted_stack(img)
    assert stack.shape == (1, 5, 4, 4)
    # Up-left copy: pixel (i, j) holds the original (i+1, j+1), zeros past the edge.
    up_left = torch.tensor([[6, 7, 8, 0], [10, 11, 12, 0], [14, 15, 16, 0], [0, 0, 0, 0]], dtype=torch.float32)
    down_right = torch.tensor([[0, 0, 0, 0], [0, 1, 2, 3], [0, 5, 6, 7], [0, 9, 10, 11]], dtype=torch.float32)
    up_right = torch.tensor([[0, 5, 6, 7], [0, 9, 10, 11], [0, 13, 14, 15], [0, 0, 0, 0]], dtype=torch.float32)
    down_left = torch.tensor([[0, 0, 0, 0], [2, 3, 4, 0], [6, 7, 8, 0], [10, 11, 12, 0]], dtype=torch.float32)
    assert torch.equal(stack[0, 0], img[0, 0])
    assert torch.equal(stack[0, 1], up_left)
    assert torch.equal(stack[0, 2], up_right)
    assert torch.equal(stack[0, 3], down_left)
    assert torch.equal(stack[0, 4], down_right)
    # First token: the top-left 2x2 patch of all five images, layer-normed, then projected.
    raw = torch.stack([img[0, 0], up_left, up_right, down_left, down_right])[:, :2, :2]  # [5, 2, 2]
    row = raw.permute(1, 2, 0).reshape(-1)  # pixel by pixel, channels together
    expected = spt.proj(F.layer_norm(row, (20,), spt.norm.weight, spt.norm.bias))
    assert torch.allclose(spt(img)[0, 0], expected, atol=1e-6)


@pytest.mark.parametrize("locality", [False, True])
def test_sdpa_path_equals_explicit_softmax(locality):
    torch.manual_seed(0)
    attn = Attention(32, 4, locality=locality).eval()
    if locality:
        with torch.no_grad():
            attn.temperature.fill_(1.7)  # away from its initial value
    x = torch.randn(3, 17, 32)
    fast, none = attn(x)
    slow, weights = attn(x, return_attention=True)
    assert none is None
    assert torch.allclose(fast, slow, atol=1e-5)
    assert weights.shape == (3, 4, 17, 17)


def test_whole_model_sdpa_equals_explicit_path():
    torch.manual_seed(0)
    model = ViT(PRESETS["slvit"].replace(depth=3)).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(model(x), model(x, return_attention=True)[0], atol=1e-5)


def test_lsa_masks_the_diagonal_and_learns_its_temperature():
    attn = Attention(32, 4, locality=True)
    assert torch.isclose(attn.temperature, torch.tensor(math.sqrt(8.0)))
    x = torch.randn(2, 9, 32)
    out, weights = attn(x, return_attention=True)
    diag = weights.diagonal(dim1=-2, dim2=-1)
    assert torch.all(diag == 0)
    assert torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-5)
    # The fast path too: its gradient reaches the temperature.
    fast, _ = attn(x)
    fast.square().sum().backward()
    assert attn.temperature.grad is not None and attn.temperature.grad.abs() > 0


def test_mhsa_does_not_mask_the_diagonal():
    _, weights = Attention(32, 4).eval()(torch.randn(2, 9, 32), return_attention=True)
    assert torch.all(weights.diagonal(dim1=-2, dim2=-1) > 0)


def test_mean_pool_has_no_class_token():
    model = ViT(PRESETS["vit_tiny"].replace(pool="mean"))
    assert model.cls_token is None
    _, maps = model(torch.randn(1, 3, 32, 32), return_attention=True)
    assert maps[0].shape[-1] == 64


def test_seq_pool_weighs_the_normalised_tokens_by_a_softmax_over_learned_scores():
    torch.manual_seed(0)
    model = ViT(PRESETS["vit_tiny"].replace(pool="seq")).eval()
    assert model.cls_token is None and model.pool_score.weight.shape == (1, 64) and model.pool_score.bias is None
    with torch.no_grad():
        model.pool_score.weight.normal_()  # away from its near-uniform start
    images = torch.randn(2, 3, 32, 32)
    logits, maps = model(images, return_attention=True)
    assert logits.shape == (2, 100) and maps[0].shape[-1] == 64
    x = model.tokens(images)
    for block in model.blocks:
        x, _ = block(x)
    tokens = model.norm(x)  # CCT pools after the final LayerNorm
    weights = torch.softmax(tokens @ model.pool_score.weight[0], dim=1)  # [B, N]
    assert torch.allclose(logits, model.head(torch.einsum("bn,bnd->bd", weights, tokens)), atol=1e-5)
    assert not torch.allclose(weights, torch.full_like(weights, 1 / 64))  # not the mean pool


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_the_old_pools_still_normalise_the_pooled_token(pool):
    """As before sequence pooling: ``head(norm(pool(x)))`` (for "mean" the order changes the logits)."""
    model = ViT(PRESETS["vit_tiny"].replace(pool=pool)).eval()
    images = torch.randn(2, 3, 32, 32)
    x = model.tokens(images)
    for block in model.blocks:
        x, _ = block(x)
    pooled = x[:, 0] if pool == "cls" else x.mean(dim=1)
    assert model.pool_score is None
    assert torch.equal(model(images), model.head(model.norm(pooled)))


@pytest.mark.parametrize("patch, grid", [(2, 16), (4, 8)])
def test_cct_stem_yields_the_patch_grid_with_a_conv_and_max_pool_per_halving(patch, grid):
    stem = CCTTokenizer(3, 32, patch)
    assert stem(torch.randn(2, 3, 32, 32)).shape == (2, grid * grid, 32)
    convs = [m for m in stem.modules() if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in stem.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(convs) == len(pools) == config.cct_layers(patch) == int(math.log2(patch))
    assert [c.out_channels for c in convs] == [64] * (len(convs) - 1) + [32]
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.bias is None for c in convs)
    assert all((p.kernel_size, p.stride, p.padding) == (3, 2, 1) for p in pools)
    assert measure.receptive_field(stem) == {2: 5, 4: 13}[patch]  # 3x3 conv: +2; 3x3/2 pool: +2; then x2


def test_cct_patch_sizes_are_checked_with_one_message_naming_them():
    with pytest.raises(ValueError, match=r"^ViTConfig\.patch_size must be 2 or 4 with stem='cct' .*; got 8$"):
        ViTConfig(stem="cct", patch_size=8)
    with pytest.raises(ValueError, match="must be 2 or 4 with stem='cct'"):
        CCTTokenizer(3, 32, 16)  # built directly, the same check
    assert ViTConfig(stem="cct", patch_size=2).num_patches == 256


@pytest.mark.parametrize(
    "changes", [{"pool": "seq"}, {"stem": "cct"}, {"stem": "cct", "patch_size": 2, "pool": "seq", "attention": "lsa"}]
)
def test_the_cct_options_train_every_parameter_and_round_trip_through_save_pretrained(changes, tmp_path):
    torch.manual_seed(0)
    model = ViT(ViTConfig.from_preset("vit_tiny", depth=1, num_classes=10, **changes))
    images = torch.randn(2, 3, 32, 32)
    logits = model(images)
    assert logits.shape == (2, 10)
    logits.square().sum().backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent, f"no gradient reaches {silent}"
    assert sum(measure.parameter_breakdown(model).values()) == count_parameters(model)
    loaded = from_pretrained(save_pretrained(model, tmp_path / "model"))
    assert loaded.cfg == model.cfg
    with evaluating(model), evaluating(loaded):
        assert torch.equal(loaded(images), model(images))


def test_the_defaults_and_presets_keep_their_parameters():
    """CCT's options are off by default: no preset has the pooling scores or the CCT stem, and every
    ViT weight file committed in results/ loads (same names and shapes) into the model its config builds."""
    assert (ViTConfig().stem, ViTConfig().pool) == ("patch", "cls")
    for name, cfg in PRESETS.items():
        names = ViT(cfg).state_dict()
        assert cfg.stem != "cct" and cfg.pool != "seq" and not any(n.startswith("pool_score") for n in names), name
    committed = subprocess.run(["git", "ls-files", "results/**model.safetensors"], cwd=REPO, capture_output=True, text=True)
    folders = [(REPO / f).parent for f in committed.stdout.split()]
    vits = [f for f in folders if set(json.loads((f / "config.json").read_text())) == set(ViTConfig().to_dict())]
    assert vits or not folders, "no committed ViT weights found"  # results/ also holds a CNN baseline's
    for folder in vits:
        from_pretrained(folder)  # raises on any missing, extra or reshaped tensor


def test_no_weight_decay_covers_norms_biases_embeddings():
    model = ViT(PRESETS["slvit"])
    names = model.no_weight_decay()
    assert {"pos_embed", "cls_token", "blocks.0.attn.temperature", "blocks.0.norm1.weight", "head.bias"} <= names
    assert "blocks.0.attn.qkv.weight" not in names and "head.weight" not in names


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"patch_size": 5}, "patch_size"),
        ({"stem": "linear"}, "stem"),
        ({"attention": "local"}, "attention"),
        ({"pool": "max"}, "pool"),
        ({"dim": 0}, "dim"),
        ({"depth": -1}, "depth"),
        ({"heads": 5}, "heads"),
        ({"dropout": 1.5}, "dropout"),
        ({"drop_path": -0.1}, "drop_path"),
        ({"mlp_ratio": 0}, "mlp_ratio"),
        ({"mlp_ratio": float("inf")}, "mlp_ratio"),
        ({"stem": "conv", "patch_size": 6, "image_size": 24}, "patch_size"),
        ({"stem": "cct", "patch_size": 8}, "patch_size"),
        ({"stem": "cct", "patch_size": 1}, "patch_size"),
        ({"pool": "attention"}, "pool"),
        ({"image_size": 36, "patch_size": 12, "stem": "conv"}, "patch_size"),
        ({"depth": 2.5}, "depth"),
        ({"colour": 3}, "colour"),
    ],
)
def test_invalid_config_raises_value_error_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        PRESETS["vit"].replace(**changes)


def test_the_shared_checks_give_the_configs_messages():
    """``vitlib.checks`` words every config's "positive" errors; the field's owner is in the name."""
    with pytest.raises(ValueError, match=r"^ViTConfig\.dim must be a positive integer; got 0$"):
        ViTConfig(dim=0)
    with pytest.raises(ValueError, match=r"^ViTConfig\.depth must be a positive integer; got True$"):
        ViTConfig(depth=True)
    with pytest.raises(ValueError, match=r"^steps_per_epoch must be a positive integer; got 2\.0$"):
        checks.positive_int("steps_per_epoch", 2.0)
    with pytest.raises(ValueError, match=r"^ScheduleConfig\.max_lr must be a number > 0; got 0$"):
        checks.positive_number("ScheduleConfig.max_lr", 0)
    with pytest.raises(ValueError, match=r"^ScheduleConfig\.min_lr must be a number >= 0; got -1$"):
        checks.positive_number("ScheduleConfig.min_lr", -1, allow_zero=True)
    with pytest.raises(ValueError, match=r"must be a number > 0; got False$"):
        checks.positive_number("x", False)
    checks.positive_int("x", 1)
    checks.positive_number("x", 0.5)
    checks.positive_number("x", 0, allow_zero=True)


def test_the_stem_registry_names_the_configs_stems_and_builds_every_model(monkeypatch):
    assert set(stems.STEM_BUILDERS) == set(config.STEMS)
    built = []
    monkeypatch.setitem(stems.STEM_BUILDERS, "conv", lambda *args: built.append(args) or PatchEmbedding(*args))
    model = ViT(ViTConfig.from_preset("vit_tiny", stem="conv"))
    assert built == [(3, 64, 4)] and type(model.stem) is PatchEmbedding


def test_a_stem_named_in_the_config_but_not_registered_fails_at_import(monkeypatch):
    """stems.py run afresh (as a separate module, so vitlib.stems itself stays as it is) against a
    config that names one stem more."""
    monkeypatch.setattr(config, "STEMS", (*config.STEMS, "linear"))
    spec = importlib.util.spec_from_file_location("vitlib._stems_probe", stems.__file__)
    with pytest.raises(RuntimeError, match=r"name different stems \(\['linear'\]\)"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_the_attention_registry_names_the_configs_attentions_and_each_builds_and_runs():
    assert set(attention.ATTENTION_BUILDERS) == set(config.ATTENTIONS)
    x = torch.randn(2, 17, 64)
    for name in config.ATTENTIONS:
        cfg = ViTConfig.from_preset("vit_tiny", attention=name)
        layer = attention.build_attention(cfg).eval()
        out, weights = layer(x, return_attention=True)
        assert out.shape == x.shape and weights.shape == (2, cfg.heads, 17, 17)
        assert torch.allclose(layer(x)[0], out, atol=1e-5)  # the SDPA path computes the same
        model = ViT(cfg).eval()
        assert all(type(block.attn) is type(layer) for block in model.blocks)
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, cfg.num_classes)
    # LSA is Attention with locality, MHSA without: the saved weights' names and shapes stay as they were.
    assert not attention.build_attention(ViTConfig(attention="mhsa")).locality
    assert attention.build_attention(ViTConfig(attention="lsa")).locality


def test_an_attention_named_in_the_config_but_not_registered_fails_at_import(monkeypatch):
    monkeypatch.setattr(config, "ATTENTIONS", (*config.ATTENTIONS, "local"))
    spec = importlib.util.spec_from_file_location("vitlib._attention_probe", attention.__file__)
    with pytest.raises(RuntimeError, match=r"name different attentions \(\['local'\]\)"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_invalid_choice_lists_the_allowed_values():
    with pytest.raises(ValueError, match="'patch', 'conv', 'spt', 'cct'"):
        ViTConfig(stem="linear")
    with pytest.raises(ValueError, match="'cls', 'mean', 'seq'"):
        ViTConfig(pool="max")


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match="slvit"):
        ViTConfig.from_preset("resnet")


@pytest.mark.parametrize("inference", [False, True])
def test_evaluating_switches_to_eval_without_autograd_and_restores_the_mode(inference):
    model = ViT(PRESETS["vit_tiny"]).train()
    with evaluating(model, inference=inference) as same:
        assert same is model and not model.training and not any(m.training for m in model.modules())
        assert not torch.is_grad_enabled() and torch.is_inference_mode_enabled() is inference
        assert not model(torch.randn(1, 3, 32, 32)).requires_grad
    assert model.training and all(m.training for m in model.modules()) and torch.is_grad_enabled()
    with pytest.raises(KeyError), evaluating(model, inference=inference):
        raise KeyError("the block fails")
    assert model.training and torch.is_grad_enabled()
    with evaluating(model.eval(), inference=inference):
        pass
    assert not model.training  # a model in eval mode stays there
