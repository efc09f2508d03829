"""vitlib.support.batched_augment against torchvision v2: every op, the pipeline's distribution, the loader.

All on the CPU. Tolerance found: on this CPU every op is bit-exact against torchvision (geometric
ops included, because the sampling grid is built the way torchvision builds it). The float blends
(Brightness, Color, Contrast, Sharpness) truncate a float to uint8, so a different rounding of the
same formula can move a pixel by one level: computing the blend as a separate multiply and add
instead of torchvision's fused one moves up to 1.6% of pixels (Color, M = 20). For those ops the
test allows |diff| <= 1 on at most 2% of pixels; every other op must be exact.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from einops import rearrange
from scipy.stats import ks_2samp
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from vitlib.augment import AugmentConfig
from vitlib.support.cifar import load_cifar100
from vitlib.support.batched_augment import (
    RANDAUGMENT_OPS,
    SIGNED_OPS,
    BatchAugment,
    BatchLoader,
    batch_augment,
    crop_flip,
    randaugment_magnitudes,
    randaugment_step,
)
from vitlib.support.seeding import derive_seed

ROUNDING_OPS = {"Brightness", "Color", "Contrast", "Sharpness"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The torchvision reference works image by image on 32x32 tensors: intra-op threads only
    add overhead (30x slower on a 2-core machine with another process running)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def synthetic_images(n: int, seed: int = 0) -> torch.Tensor:
    """Smooth random colour fields plus noise (natural-image-like histograms), with a constant
    image and a constant channel to exercise AutoContrast's and Equalize's flat cases."""
    g = torch.Generator().manual_seed(seed)
    smooth = nnf.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(32, 32), mode="bicubic").clamp(0, 1)
    low = torch.rand(n, 1, 1, 1, generator=g) * 0.5
    span = 0.2 + torch.rand(n, 1, 1, 1, generator=g) * 0.5
    noise = torch.rand(n, 3, 32, 32, generator=g) * 0.1
    images = ((low + span * smooth + noise) * 255).round().clamp(0, 255).to(torch.uint8)
    images[0] = 128
    images[1, 2] = 40
    return images


def reference_op(image: torch.Tensor, name: str, magnitude: float) -> torch.Tensor:
    """What torchvision v2 RandAugment does for op ``name`` at signed ``magnitude``, written with
    the public ``torchvision.transforms.v2.functional`` ops and RandAugment's arguments."""
    nearest = v2.InterpolationMode.NEAREST
    geometric = {
        "ShearX": dict(translate=[0, 0], shear=[math.degrees(math.atan(magnitude)), 0.0], center=[0, 0]),
        "ShearY": dict(translate=[0, 0], shear=[0.0, math.degrees(math.atan(magnitude))], center=[0, 0]),
        "TranslateX": dict(translate=[int(magnitude), 0], shear=[0.0, 0.0]),
        "TranslateY": dict(translate=[0, int(magnitude)], shear=[0.0, 0.0]),
    }
    if name in geometric:
        return F.affine(image, angle=0.0, scale=1.0, interpolation=nearest, fill=None, **geometric[name])
    ops = {
        "Identity": lambda: image,
        "Rotate": lambda: F.rotate(image, angle=magnitude, interpolation=nearest, fill=None),
        "Brightness": lambda: F.adjust_brightness(image, 1.0 + magnitude),
        "Color": lambda: F.adjust_saturation(image, 1.0 + magnitude),
        "Contrast": lambda: F.adjust_contrast(image, 1.0 + magnitude),
        "Sharpness": lambda: F.adjust_sharpness(image, 1.0 + magnitude),
        "Posterize": lambda: F.posterize(image, int(magnitude)),
        "Solarize": lambda: F.solarize(image, 255 * magnitude),
        "AutoContrast": lambda: F.autocontrast(image),
        "Equalize": lambda: F.equalize(image),
    }
    return ops[name]()


def test_op_table_matches_torchvision() -> None:
    space = v2.RandAugment._AUGMENTATION_SPACE  # torchvision's own table, the ground truth
    assert RANDAUGMENT_OPS == tuple(space)
    assert SIGNED_OPS == {name for name, (_, signed) in space.items() if signed}
    for magnitude in (0, 9, 10, 30):
        levels = randaugment_magnitudes(magnitude, 32, 24)
        for name, (magnitudes, _) in space.items():
            table = magnitudes(31, 32, 24)
            assert levels[name] == (0.0 if table is None else float(table[magnitude])), (name, magnitude)


def test_reference_op_is_randaugments_own_dispatch() -> None:
    """Guards reference_op against misreading torchvision: it must equal the private method
    RandAugment itself calls."""
    augment, image = v2.RandAugment(), synthetic_images(3)[2]
    levels = randaugment_magnitudes(12, 32, 32)
    for name in RANDAUGMENT_OPS:
        for sign in (1, -1) if name in SIGNED_OPS else (1,):
            expected = augment._apply_image_or_video_transform(
                image, name, sign * levels[name], interpolation=augment.interpolation, fill=augment._fill
            )
            assert torch.equal(reference_op(image, name, sign * levels[name]), expected), name


def assert_op_matches_torchvision(images: torch.Tensor, name: str, magnitude: int, gather: bool = False) -> None:
    batch = images.shape[0]
    negate = torch.arange(batch) % 2 == 1  # both signs in one batch
    levels = randaugment_magnitudes(magnitude, 32, 32)
    ours = randaugment_step(images, torch.full((batch,), RANDAUGMENT_OPS.index(name)), negate, levels, gather)
    signs = torch.where(negate, -1.0, 1.0) if name in SIGNED_OPS else torch.ones(batch)
    expected = torch.stack([reference_op(im, name, float(s) * levels[name]) for im, s in zip(images, signs)])
    diff = (ours.int() - expected.int()).abs()
    if name in ROUNDING_OPS:
        assert diff.max() <= 1 and (diff > 0).float().mean() <= 0.02, (name, magnitude, diff.max())
    else:
        assert torch.equal(ours, expected), (name, magnitude, (diff > 0).float().mean())


@pytest.mark.parametrize("gather", [False, True], ids=["masked", "gathered"])
@pytest.mark.parametrize("name", RANDAUGMENT_OPS)
def test_each_op_matches_torchvision(name: str, gather: bool) -> None:
    images = synthetic_images(12, seed=1)
    for magnitude in (0, 9, 10, 20, 30):
        assert_op_matches_torchvision(images, name, magnitude, gather)


def test_each_op_matches_torchvision_on_real_images(mini_root) -> None:
    images = torch.from_numpy(load_cifar100(mini_root, True, download=False, verify_md5=False).data[:32])
    images = rearrange(images, "b h w c -> b c h w")
    for name in RANDAUGMENT_OPS:
        for magnitude in (9, 30):
            assert_op_matches_torchvision(images, name, magnitude)


def test_ops_are_independent_per_sample() -> None:
    """A mixed batch (every op, both signs) equals each sample run alone."""
    images = synthetic_images(28, seed=2)
    op_index = torch.arange(28) % len(RANDAUGMENT_OPS)
    negate = torch.arange(28) >= 14
    levels = randaugment_magnitudes(9, 32, 32)
    mixed = randaugment_step(images, op_index, negate, levels, gather=False)
    alone = [randaugment_step(images[i : i + 1], op_index[i : i + 1], negate[i : i + 1], levels, gather=False) for i in range(28)]
    assert torch.equal(mixed, torch.cat(alone))


def test_gathered_and_masked_steps_give_the_same_pixels() -> None:
    """The CPU's gathered path (each op on the samples that drew it) and the sync-free masked path
    agree exactly on a batch with every op, both signs and a magnitude per step; the CPU default
    is the gathered one."""
    images = synthetic_images(64, seed=9)
    g = torch.Generator().manual_seed(3)
    for magnitude in (9, 27):
        levels = randaugment_magnitudes(magnitude, 32, 32)
        op_index = torch.randint(0, len(RANDAUGMENT_OPS), (64,), generator=g)
        negate = torch.rand(64, generator=g) < 0.5
        masked = randaugment_step(images, op_index, negate, levels, gather=False)
        gathered = randaugment_step(images, op_index, negate, levels, gather=True)
        assert not torch.equal(masked, images)
        assert torch.equal(gathered, masked)
        assert torch.equal(randaugment_step(images, op_index, negate, levels), gathered)


def test_crop_flip_matches_torchvision() -> None:
    images, padding = synthetic_images(16, seed=3), 4
    g = torch.Generator().manual_seed(0)
    top, left = torch.randint(0, 2 * padding + 1, (2, 16), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    ours = crop_flip(images, top, left, flip, padding)
    for i in range(16):
        expected = F.crop(F.pad(images[i], [padding]), int(top[i]), int(left[i]), 32, 32)
        expected = F.horizontal_flip(expected) if flip[i] else expected
        assert torch.equal(ours[i], expected), i


def test_batch_augment_off_is_identity_and_seeded_is_reproducible() -> None:
    images = synthetic_images(8, seed=4)
    off = AugmentConfig(crop_padding=0, flip=False, randaugment=False)
    assert torch.equal(batch_augment(images, off), images)
    cfg = AugmentConfig()
    first = batch_augment(images, cfg, torch.Generator().manual_seed(5))
    assert torch.equal(first, batch_augment(images, cfg, torch.Generator().manual_seed(5)))
    assert not torch.equal(first, batch_augment(images, cfg, torch.Generator().manual_seed(6)))
    same = batch_augment(images[:1].expand(8, -1, -1, -1), cfg, torch.Generator().manual_seed(5))
    assert len({bytes(s.numpy()) for s in same}) > 4  # each sample draws its own augmentation


# Every AugmentConfig field, with a value other than its default that must change the GPU path's
# output for the same seed; a field the GPU path cannot honour by design goes in REFUSED instead,
# with a value it must reject (none today).
CHANGED = {"crop_padding": 2, "flip": False, "randaugment": False, "randaugment_ops": 1, "randaugment_magnitude": 20}
REFUSED: dict[str, object] = {}


def test_every_augment_config_field_changes_the_gpu_path_or_is_refused() -> None:
    names = {field.name for field in dataclasses.fields(AugmentConfig)}
    assert names == CHANGED.keys() | REFUSED.keys(), "list each AugmentConfig field in CHANGED or REFUSED"
    images = synthetic_images(16, seed=3)
    default = batch_augment(images, AugmentConfig(), torch.Generator().manual_seed(0))
    for name, value in CHANGED.items():
        changed = batch_augment(images, AugmentConfig(**{name: value}), torch.Generator().manual_seed(0))
        assert not torch.equal(changed, default), f"AugmentConfig.{name}={value!r} is ignored by the GPU path"
    for name, value in REFUSED.items():
        with pytest.raises(ValueError, match=name):
            BatchAugment(AugmentConfig(**{name: value}))


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        batch_augment(torch.zeros(2, 3, 32, 32), AugmentConfig())
    with pytest.raises(ValueError, match="randaugment_magnitude"):
        randaugment_magnitudes(31, 32, 32)


def test_apply_compiles_into_one_graph() -> None:
    """fullgraph=True fails on any graph break: .item(), Python branching on tensor values or
    data-dependent shapes (boolean-mask selection), the usual host syncs. (The other kind, copying a
    constant tensor from the CPU to the GPU, is absent from apply() by construction.)"""
    augment = BatchAugment(AugmentConfig(), gather=False)  # the GPU's path, here on the CPU
    images = synthetic_images(6, seed=7)
    draws = augment.draw(6, images.device, torch.Generator().manual_seed(0))
    compiled = torch.compile(augment.apply, fullgraph=True, backend="eager")
    assert torch.equal(compiled(images, draws), augment.apply(images, draws))


# --- The whole pipeline's distribution against torchvision's --------------------------------

SAMPLES = 400  # per source image and pipeline: KS tests at this size tell magnitude 9 from 20


def summary_statistics(augmented: torch.Tensor) -> np.ndarray:
    """Per augmented image: mean intensity, per-channel std, fraction of black (fill) pixels."""
    x = augmented.float()
    black = (augmented == 0).all(dim=1).float().mean(dim=(1, 2))
    return torch.cat([x.mean(dim=(1, 2, 3))[:, None], x.std(dim=(2, 3)), black[:, None]], dim=1).numpy()


def reference_samples(image: torch.Tensor, transform: v2.Transform) -> torch.Tensor:
    return torch.stack([transform(image) for _ in range(SAMPLES)])


def min_ks_pvalue(ours: list[np.ndarray], theirs: list[np.ndarray]) -> float:
    return min(ks_2samp(a[:, j], b[:, j]).pvalue for a, b in zip(ours, theirs) for j in range(a.shape[1]))


@pytest.fixture(scope="module")
def our_statistics() -> list[np.ndarray]:
    g = torch.Generator().manual_seed(11)
    return [
        summary_statistics(batch_augment(image.expand(SAMPLES, -1, -1, -1), AugmentConfig(), g))
        for image in synthetic_images(3, seed=8)
    ]


@pytest.mark.parametrize(("magnitude", "same"), [(9, True), (20, False)], ids=["torchvision", "negative-magnitude-20"])
def test_pipeline_distribution_matches_torchvision(our_statistics, magnitude: int, same: bool) -> None:
    """Our default pipeline against torchvision's with M = 9 (must agree) and with M = 20 (must be
    told apart: the negative control proves the test can fail). 15 KS tests (3 images x 5
    statistics); p > 1e-4 for all when equal, some p < 1e-6 when not. Observed over 6 seeds:
    min p 0.01-0.13 for the same pipeline, <= 2e-10 for M = 20 (M = 14 already gives 3e-6-6e-4)."""
    torch.manual_seed(12)  # torchvision draws from the global generator
    reference = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), v2.RandAugment(2, magnitude)])
    theirs = [summary_statistics(reference_samples(image, reference)) for image in synthetic_images(3, seed=8)]
    p = min_ks_pvalue(our_statistics, theirs)
    assert p > 1e-4 if same else p < 1e-6, p


def marked_image() -> torch.Tensor:
    """Red = column, green = row (8 levels apart), blue = 255: a crop's offset and flip can be
    read back from the output's centre pixels."""
    rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    return torch.stack([8 * cols + 4, 8 * rows + 4, torch.full_like(rows, 255)]).to(torch.uint8)


def recover_crop_flip(augmented: torch.Tensor, padding: int) -> np.ndarray:
    """[top, left, flipped] per image, from pixels (16, 16) and (16, 17), which always come from
    inside the source image for padding < 16."""
    red, green = augmented[:, 0, 16].long(), augmented[:, 1, 16, 16].long()
    flipped = red[:, 17] < red[:, 16]
    column = (red[:, 16] - 4) // 8
    left = column - torch.where(flipped, 15, 16) + padding
    top = (green - 4) // 8 - 16 + padding
    return torch.stack([top, left, flipped.long()], dim=1).numpy()


@pytest.mark.parametrize(("flip_p", "same"), [(0.5, True), (0.25, False)], ids=["torchvision", "negative-flip-0.25"])
def test_crop_offsets_and_flip_rate_match_torchvision(flip_p: float, same: bool) -> None:
    padding, samples = 4, 2000
    image = marked_image()
    cfg = AugmentConfig(crop_padding=padding, randaugment=False)
    augmented = batch_augment(image.expand(samples, -1, -1, -1), cfg, torch.Generator().manual_seed(13))
    ours = recover_crop_flip(augmented, padding)
    torch.manual_seed(14)
    reference = v2.Compose([v2.RandomCrop(32, padding=padding), v2.RandomHorizontalFlip(flip_p)])
    theirs = recover_crop_flip(torch.stack([reference(image) for _ in range(samples)]), padding)
    assert set(np.unique(ours[:, :2])) == set(range(2 * padding + 1))  # offsets span [0, 2p]
    p = min(ks_2samp(ours[:, j], theirs[:, j]).pvalue for j in range(3))
    assert p > 1e-4 if same else p < 1e-6, p


# --- BatchLoader --------------------------------------------------------------------------------

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def make_loader(n: int = 50, augment: AugmentConfig | None = None, **kwargs) -> BatchLoader:
    # label i marks sample i, so batches say which samples they hold
    return BatchLoader(synthetic_images(n, seed=9), torch.arange(n), 16, augment, MEAN, STD, **kwargs)


def epoch_labels(loader: BatchLoader) -> torch.Tensor:
    return torch.cat([labels for _, labels in loader])


def test_loader_batches_and_normalisation_without_augmentation() -> None:
    loader = make_loader()
    batches = list(loader)
    assert len(batches) == len(loader) == 3  # 50 // 16, the last partial batch dropped
    for images, labels in batches:
        assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.int64
        mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
        torch.testing.assert_close(images * std + mean, loader.images[labels].float() / 255)


def test_loader_visits_every_sample_once_per_epoch() -> None:
    loader = make_loader(drop_last=False)
    assert len(loader) == 4
    assert torch.equal(epoch_labels(loader).sort().values, torch.arange(50))
    assert torch.equal(epoch_labels(make_loader(shuffle=False, drop_last=False)), torch.arange(50))
    dropped = epoch_labels(make_loader())
    assert len(dropped) == 48 and len(set(dropped.tolist())) == 48


def test_loader_order_depends_on_seed_and_epoch_only() -> None:
    loader, again = make_loader(augment=AugmentConfig()), make_loader(augment=AugmentConfig())
    first, second = epoch_labels(loader), epoch_labels(loader)  # iterating moves to the next epoch
    assert not torch.equal(first, second)
    again.set_epoch(1)
    assert torch.equal(epoch_labels(again), second)
    again.set_epoch(0)
    images, labels = next(iter(again))
    loader.set_epoch(0)
    expected_images, expected_labels = next(iter(loader))
    assert torch.equal(labels, expected_labels) and torch.equal(images, expected_images)  # augmentation too
    assert not torch.equal(epoch_labels(make_loader(seed=1)), first)


def test_loader_seeds_each_epoch_as_the_cpu_path_does() -> None:
    loader = make_loader(seed=3)
    loader.set_epoch(1)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(derive_seed(3, 1)))
    assert torch.equal(epoch_labels(loader), order[:48])


def test_loader_augments_in_uint8_then_normalises() -> None:
    loader = make_loader(augment=AugmentConfig())
    images, labels = next(iter(loader))
    restored = images * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)
    levels = restored * 255
    torch.testing.assert_close(levels, levels.round(), atol=1e-3, rtol=0)  # whole uint8 levels
    assert not torch.equal(levels.round().to(torch.uint8), loader.images[labels])


def test_loader_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError, match="labels"):
        BatchLoader(synthetic_images(4), torch.arange(3), 2, None, MEAN, STD)
