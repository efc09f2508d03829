"""Augmentation: per-image pipelines, CutMix / MixUp targets, the soft-target loss."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from vitlib.augment import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    AugmentConfig,
    BatchMixer,
    MixConfig,
    denormalize,
    eval_transform,
    normalize,
    soft_target_cross_entropy,
    train_transform,
)

K = 100


def constant_batch(b: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image ``i`` is the constant ``values[i]`` (all distinct); labels are distinct too."""
    values = torch.linspace(0.05, 0.95, b)
    images = values.view(b, 1, 1, 1).expand(b, 3, 32, 32).clone()
    labels = torch.randperm(K)[:b]
    return images, labels, values


def random_pil(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8))


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "field, value",
    [("prob", 1.5), ("prob", -0.1), ("cutmix_prob", 2.0), ("mixup_alpha", 0.0), ("cutmix_alpha", -1.0)],
)
def test_mix_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"MixConfig.{field}"):
        MixConfig(**{field: value})
    cfg = MixConfig()
    setattr(cfg, field, value)  # a mutated config is caught when the mixer is built
    with pytest.raises(ValueError, match=f"MixConfig.{field}"):
        BatchMixer(cfg, K)


@pytest.mark.parametrize(
    "field, value", [("crop_padding", -1), ("randaugment_ops", -2), ("randaugment_magnitude", 31)]
)
def test_augment_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"AugmentConfig.{field}"):
        AugmentConfig(**{field: value})


# --------------------------------------------------------------------------- per-image pipelines


def test_train_transform_steps_follow_the_config():
    kinds = [type(t) for t in train_transform(AugmentConfig()).transforms]
    assert kinds == [v2.ToImage, v2.RandomCrop, v2.RandomHorizontalFlip, v2.RandAugment, v2.ToDtype, v2.Normalize]
    plain = [type(t) for t in train_transform(None).transforms]
    assert plain == [v2.ToImage, v2.ToDtype, v2.Normalize]
    off = AugmentConfig(crop_padding=0, flip=False, randaugment=False)
    assert [type(t) for t in train_transform(off).transforms] == plain


def test_train_transform_output_and_unaugmented_equals_eval():
    image = random_pil()
    out = train_transform(AugmentConfig())(image)
    assert out.dtype == torch.float32 and out.shape == (3, 32, 32)
    torch.testing.assert_close(train_transform(None)(image), eval_transform()(image))
    # eval = scale to [0, 1], then (x - mean) / std per channel
    scaled = torch.from_numpy(np.array(image)).permute(2, 0, 1) / 255
    expected = (scaled - torch.tensor(CIFAR100_MEAN)[:, None, None]) / torch.tensor(CIFAR100_STD)[:, None, None]
    torch.testing.assert_close(eval_transform()(image), expected)


def test_randaugment_keeps_uint8_dtype_and_shape():
    randaugment = next(t for t in train_transform(AugmentConfig(randaugment_magnitude=30)).transforms
                       if isinstance(t, v2.RandAugment))  # fmt: skip
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(0)
    changed = 0
    for _ in range(30):
        out = randaugment(image)
        assert out.dtype == torch.uint8 and out.shape == image.shape
        changed += not torch.equal(out, image)
    assert changed > 0  # it does augment


def test_denormalize_inverts_normalize_and_clamps():
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(denormalize(normalize()(x)), x)
    assert denormalize(torch.full((1, 3, 2, 2), 100.0)).max() == 1.0
    assert denormalize(torch.full((3, 2, 2), -100.0)).min() == 0.0


# --------------------------------------------------------------------------- CutMix / MixUp


def mixed_batches(cutmix_prob: float, seed: int, n: int = 10):
    """``n`` mixed constant batches ``(mixed, target, labels, values)``; targets are distributions."""
    torch.manual_seed(seed)
    mixer = BatchMixer(MixConfig(prob=1.0, cutmix_prob=cutmix_prob), K)
    for _ in range(n):
        images, labels, values = constant_batch()
        mixed, target = mixer(images, labels)
        assert target.dtype == torch.float32 and target.shape == (8, K) and (target >= 0).all()
        torch.testing.assert_close(target.sum(1), torch.ones(8))
        yield mixed, target, labels, values


def test_cutmix_target_weight_is_the_pasted_area():
    partial = 0
    for mixed, target, labels, values in mixed_batches(cutmix_prob=1.0, seed=0):
        for i in range(8):
            pixels = mixed[i, 0]
            donors = [j for j in range(8) if j != i and (pixels == values[j]).any()]
            assert len(donors) <= 1  # one other image is pasted in
            own = (pixels == values[i]).float().mean()
            torch.testing.assert_close(target[i, labels[i]], own)
            if donors:
                j = donors[0]
                pasted = pixels == values[j]
                torch.testing.assert_close(target[i, labels[j]], pasted.float().mean())
                rows, cols = pasted.nonzero(as_tuple=True)  # the pasted region is one rectangle
                box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
                assert box == pasted.sum()
                partial += 0 < own < 1
            assert (mixed[i] == mixed[i, :1]).all()  # the same box in every channel
    assert partial > 0


def test_mixup_target_weight_is_the_pixel_blend_weight():
    blended = 0
    for mixed, target, labels, values in mixed_batches(cutmix_prob=0.0, seed=1):
        for i in range(8):
            assert torch.allclose(mixed[i], mixed[i, 0, 0, 0])  # a uniform blend stays constant
            support = target[i].nonzero().flatten().tolist()
            others = [j for j in range(8) if j != i and labels[j] in support]
            lam = target[i, labels[i]]
            if not others:  # lam == 1: nothing mixed in
                torch.testing.assert_close(mixed[i, 0, 0, 0], values[i])
                continue
            (j,) = others
            recovered = (mixed[i, 0, 0, 0] - values[j]) / (values[i] - values[j])
            torch.testing.assert_close(recovered, lam, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(target[i, labels[j]], 1 - lam)
            blended += 0.01 < lam < 0.99
    assert blended > 0


def test_unmixed_batches_still_get_one_hot_float_targets():
    images, labels, _ = constant_batch()
    mixed, target = BatchMixer(MixConfig(prob=0.0), K)(images, labels)
    assert torch.equal(mixed, images)
    assert target.dtype == torch.float32
    torch.testing.assert_close(target, F.one_hot(labels, K).float())


def test_mix_probabilities_choose_between_none_cutmix_and_mixup():
    torch.manual_seed(2)
    mixer = BatchMixer(MixConfig(prob=0.5, cutmix_prob=0.5), K)
    kinds = {"none": 0, "cutmix": 0, "mixup": 0}
    for _ in range(60):
        images, labels, _ = constant_batch()
        mixed, target = mixer(images, labels)
        if torch.equal(target, F.one_hot(labels, K).float()) and torch.equal(mixed, images):
            kinds["none"] += 1
        elif all(torch.allclose(m, m.flatten()[0]) for m in mixed):
            kinds["mixup"] += 1
        else:
            kinds["cutmix"] += 1
    # Expected 30 / 15 / 15; these bounds fail only with negligible probability.
    assert 15 <= kinds["none"] <= 45 and kinds["cutmix"] >= 4 and kinds["mixup"] >= 4, kinds


# --------------------------------------------------------------------------- loss


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_soft_target_loss_matches_cross_entropy_for_int_labels(eps):
    torch.manual_seed(0)
    logits, labels = torch.randn(16, K), torch.randint(0, K, (16,))
    expected = F.cross_entropy(logits, labels, label_smoothing=eps)
    torch.testing.assert_close(soft_target_cross_entropy(logits, labels, eps), expected)
    one_hot = F.one_hot(labels, K).float()
    torch.testing.assert_close(soft_target_cross_entropy(logits, one_hot, eps), expected)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_soft_target_loss_on_distributions(eps):
    torch.manual_seed(0)
    logits, target = torch.randn(8, K), torch.rand(8, K).softmax(dim=1)
    smoothed = (1 - eps) * target + eps / K
    expected = -(smoothed * logits.log_softmax(dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(soft_target_cross_entropy(logits, target, eps), expected)
    # the loss is computed in float32 whatever the dtypes of the logits and the soft target
    torch.testing.assert_close(soft_target_cross_entropy(logits, target.half(), eps), expected, atol=1e-3, rtol=1e-3)


def test_soft_target_loss_upcasts_bf16_logits_instead_of_rounding_the_target():
    torch.manual_seed(0)
    logits, target = torch.randn(8, K), torch.rand(8, K).softmax(dim=1)
    loss = soft_target_cross_entropy(logits.bfloat16(), target, 0.1)
    assert loss.dtype == torch.float32
    expected = soft_target_cross_entropy(logits.bfloat16().float(), target, 0.1)  # the target kept in float32
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("config", [AugmentConfig(), MixConfig()], ids=lambda c: type(c).__name__)
def test_every_field_of_an_augmentation_shows_in_its_description(config: AugmentConfig | MixConfig) -> None:
    """The tables describe a run's augmentation by describe(): a field that changes nothing in it
    (a new one, say) would be left out of every table silently."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        other = (not value) if isinstance(value, bool) else value + 1 if isinstance(value, int) else value / 2
        changed = dataclasses.replace(config, **{field.name: other})
        assert changed.describe() != config.describe(), f"{type(config).__name__}.{field.name} does not show in describe()"
