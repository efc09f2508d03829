"""Per-sample training augmentation of a whole batch of uint8 images on their own device.

Why this module exists: torchvision's per-image transforms run in CPU workers; the default recipe
costs about 0.6 ms per CIFAR image on one core of a 2-core AMD EPYC (measured 2026-12-02), so 2
cores (as on Colab) give a few thousand images per second, far below what one GPU trains at. Here
the training set stays on the device as uint8 and every batch is augmented at once. Each sample still gets its own random crop, flip and RandAugment
operations, drawn from the same distribution as torchvision v2's
``Compose([RandomCrop(32, padding=p), RandomHorizontalFlip(), RandAugment(N, M)])``: the same op
set, magnitudes, random signs, nearest interpolation and zero fill (``tests/test_batched_augment.py``
checks every op against ``torchvision.transforms.v2.functional`` and the whole pipeline's
distribution against torchvision's).

Sync-free on a GPU: random draws are tensors, every op is evaluated for the whole batch and kept
only for the samples that drew it (``torch.where``). Gathering just those samples would need their
count on the host (a device sync) and would give data-dependent shapes; on 32x32 images the extra
element-wise work is cheap there, and the function stays one fixed graph for torch.compile and
CUDA graphs. On the CPU, where a sync costs nothing and the extra work is the training budget,
each op runs only on the samples that drew it (``randaugment_step``'s ``gather``): same pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
import torchvision.transforms.v2.functional as F
from einops import rearrange
from torch import Tensor

from ..augment import AugmentConfig
from .seeding import derive_seed

__all__ = [
    "RANDAUGMENT_OPS",
    "SIGNED_OPS",
    "AugmentDraws",
    "BatchAugment",
    "BatchLoader",
    "batch_augment",
    "crop_flip",
    "randaugment_magnitudes",
    "randaugment_step",
]

# torchvision v2 RandAugment's op set, in its order (a uniform draw over this tuple).
RANDAUGMENT_OPS = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
    "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
)  # fmt: skip
# Ops whose magnitude gets a random sign.
SIGNED_OPS = frozenset(
    {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast", "Sharpness"}
)
NUM_MAGNITUDE_BINS = 31  # torchvision's default num_magnitude_bins


def randaugment_magnitudes(magnitude: int, height: int, width: int) -> dict[str, float]:
    """Unsigned magnitude of every op at bin ``magnitude`` of 31, exactly as torchvision v2
    RandAugment computes it (float32 ``linspace``: the rounding matters, e.g. Solarize's threshold
    at bin 10 lands on 170 only in float32). Ops without a magnitude get 0."""
    if isinstance(magnitude, bool) or not isinstance(magnitude, int) or not 0 <= magnitude < NUM_MAGNITUDE_BINS:
        raise ValueError(
            f"AugmentConfig.randaugment_magnitude must be an integer in [0, {NUM_MAGNITUDE_BINS - 1}]; got {magnitude!r}"
        )

    def level(end: float, start: float = 0.0) -> float:
        return float(torch.linspace(start, end, NUM_MAGNITUDE_BINS)[magnitude])

    posterize_bits = (8 - torch.arange(NUM_MAGNITUDE_BINS) / ((NUM_MAGNITUDE_BINS - 1) / 4)).round().int()
    return {
        "Identity": 0.0,
        "ShearX": level(0.3),
        "ShearY": level(0.3),
        "TranslateX": level(150.0 / 331.0 * width),
        "TranslateY": level(150.0 / 331.0 * height),
        "Rotate": level(30.0),
        "Brightness": level(0.9),
        "Color": level(0.9),
        "Contrast": level(0.9),
        "Sharpness": level(0.9),
        "Posterize": float(posterize_bits[magnitude]),
        "Solarize": level(0.0, start=1.0),
        "AutoContrast": 0.0,
        "Equalize": 0.0,
    }


# ----------------------------------------------------------------------------------------------
# Geometric ops. Each builds per-sample 2x3 matrices mapping an output pixel to the input pixel it
# samples, in pixel units with the origin at the image centre (torchvision's convention); one
# grid_sample then warps the whole batch.


def _affine_rows(a: Tensor, b: Tensor, c: Tensor, d: Tensor, e: Tensor, f: Tensor) -> Tensor:
    """Stack per-sample entries into [B, 2, 3] matrices [[a, b, c], [d, e, f]]."""
    return rearrange(torch.stack([a, b, c, d, e, f], dim=-1), "b (row col) -> b row col", row=2)


def shear_x_matrix(shear: Tensor, height: int, width: int) -> Tensor:
    """RandAugment's ShearX: ``F.affine(shear=[degrees(atan(s)), 0], center=[0, 0])``, a shear about
    the top-left corner, so rows shift by ``s * (y + height / 2)``."""
    one, zero = torch.ones_like(shear), torch.zeros_like(shear)
    return _affine_rows(one, shear, shear * (height / 2), zero, one, zero)


def shear_y_matrix(shear: Tensor, height: int, width: int) -> Tensor:
    """RandAugment's ShearY: ``F.affine(shear=[0, degrees(atan(s))], center=[0, 0])``."""
    one, zero = torch.ones_like(shear), torch.zeros_like(shear)
    return _affine_rows(one, zero, zero, shear, one, shear * (width / 2))


def translate_x_matrix(shift: Tensor, height: int, width: int) -> Tensor:
    """RandAugment's TranslateX: ``F.affine(translate=[int(shift), 0])`` (truncated to whole pixels)."""
    one, zero = torch.ones_like(shift), torch.zeros_like(shift)
    return _affine_rows(one, zero, -shift.trunc(), zero, one, zero)


def translate_y_matrix(shift: Tensor, height: int, width: int) -> Tensor:
    """RandAugment's TranslateY: ``F.affine(translate=[0, int(shift)])``."""
    one, zero = torch.ones_like(shift), torch.zeros_like(shift)
    return _affine_rows(one, zero, zero, zero, one, -shift.trunc())


def rotate_matrix(degrees: Tensor, height: int, width: int) -> Tensor:
    """RandAugment's Rotate: ``F.rotate(angle=degrees)`` about the image centre (counter-clockwise)."""
    radians = torch.deg2rad(degrees)
    cos, sin, zero = radians.cos(), radians.sin(), torch.zeros_like(radians)
    return _affine_rows(cos, -sin, zero, sin, cos, zero)


def warp(images: Tensor, matrices: Tensor) -> Tensor:
    """Warp sample i by ``matrices[i]`` with nearest interpolation and zero fill, like
    torchvision's ``F.affine``/``F.rotate`` on a uint8 tensor with ``fill=None``."""
    batch, _, height, width = images.shape
    # The grid is built as torchvision builds it (pixel-centred base grid times the matrix, then
    # scaled to [-1, 1]), not with F.affine_grid: nearest sampling has exact ties (ShearX at
    # magnitude 20 shifts rows by 0.2 * (y + 0.5)), and affine_grid's different rounding breaks
    # them the other way on ~0.6% of pixels. Python-scalar scaling: a constant tensor would be a
    # host-to-device copy, which syncs.
    xs = torch.linspace((1 - width) / 2, (width - 1) / 2, width, device=images.device)
    ys = torch.linspace((1 - height) / 2, (height - 1) / 2, height, device=images.device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    base = rearrange(torch.stack([x, y, torch.ones_like(x)], dim=-1), "h w k -> (h w) k")
    a, b, c, d, e, f = rearrange(matrices, "b row col -> (row col) b")
    half_w, half_h = width / 2, height / 2
    theta = _affine_rows(a / half_w, b / half_w, c / half_w, d / half_h, e / half_h, f / half_h)
    grid = rearrange(base @ theta.transpose(1, 2), "b (h w) xy -> b h w xy", h=height)
    warped = nnf.grid_sample(images.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return warped.round().to(torch.uint8)


GEOMETRIC_OPS: dict[str, Callable[[Tensor, int, int], Tensor]] = {
    "ShearX": shear_x_matrix,
    "ShearY": shear_y_matrix,
    "TranslateX": translate_x_matrix,
    "TranslateY": translate_y_matrix,
    "Rotate": rotate_matrix,
}

# ----------------------------------------------------------------------------------------------
# Colour ops. ``amount`` is the per-sample signed magnitude [B]; the blend factor is 1 + amount.


def _per_sample(values: Tensor) -> Tensor:
    return rearrange(values, "b -> b 1 1 1")


def _blend(images: Tensor, degenerate: Tensor, amount: Tensor) -> Tensor:
    """torchvision's blend ``image * r + degenerate * (1 - r)`` with r = 1 + amount, clamped and
    truncated to uint8 as torchvision does."""
    # addcmul reproduces torchvision's ``add_(degenerate, alpha=1 - r)`` bit for bit on the CPU; a
    # separate multiply and add rounds differently and moves up to ~1.6% of pixels by one level.
    mixed = torch.addcmul(images.float() * _per_sample(1.0 + amount), degenerate, _per_sample(-amount))
    return mixed.clamp(0, 255).to(torch.uint8)


def brightness(images: Tensor, amount: Tensor) -> Tensor:
    """RandAugment's Brightness: ``F.adjust_brightness(factor=1 + amount)``."""
    return (images.float() * _per_sample(1.0 + amount)).clamp(0, 255).to(torch.uint8)


def color(images: Tensor, amount: Tensor) -> Tensor:
    """RandAugment's Color: ``F.adjust_saturation(factor=1 + amount)``, a blend with the grey image."""
    return _blend(images, F.rgb_to_grayscale_image(images).float(), amount)


def contrast(images: Tensor, amount: Tensor) -> Tensor:
    """RandAugment's Contrast: ``F.adjust_contrast(factor=1 + amount)``, a blend with the mean grey."""
    mean = F.rgb_to_grayscale_image(images).float().mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(images, mean, amount)


def sharpness(images: Tensor, amount: Tensor) -> Tensor:
    """RandAugment's Sharpness: ``F.adjust_sharpness(factor=1 + amount)``: blend the interior with a
    3x3 smoothed image (centre weight 5/13, the rest 1/13), the 1-pixel border unchanged."""
    channels = images.shape[1]
    kernel = torch.full((channels, 1, 3, 3), 1.0 / 13.0, device=images.device)
    kernel[:, :, 1, 1] = 5.0 / 13.0
    x = images.float()
    blurred = nnf.conv2d(x, kernel, groups=channels).round()
    # torchvision's form x + (1 - r) * (blurred - x): the border (difference 0) stays exact.
    difference = nnf.pad(blurred - x[..., 1:-1, 1:-1], (1, 1, 1, 1))
    return (x + _per_sample(-amount) * difference).clamp(0, 255).to(torch.uint8)


def posterize(images: Tensor, bits: int) -> Tensor:
    """RandAugment's Posterize: keep the top ``bits`` bits (``F.posterize``, already batched)."""
    return F.posterize_image(images, bits=bits)


def solarize(images: Tensor, level: float) -> Tensor:
    """RandAugment's Solarize: invert pixels >= ``255 * level`` (``F.solarize``, already batched)."""
    return F.solarize_image(images, threshold=255 * level)


def autocontrast(images: Tensor) -> Tensor:
    """RandAugment's AutoContrast: stretch each channel of each sample to [0, 255], as
    ``F.autocontrast``. Own version because torchvision's resets flat channels by assigning through
    a boolean mask (an index_put, sync-free on CUDA only via a PyTorch fast path that could not be
    checked without a GPU); ``torch.where`` is sync-free by construction. Same arithmetic."""
    x = images.float()
    low, high = x.amin(dim=(-2, -1), keepdim=True), x.amax(dim=(-2, -1), keepdim=True)
    flat = high == low  # a constant channel is left unchanged
    scale = torch.where(flat, 1.0, (high - low) * (1.0 / 255.0))
    low = torch.where(flat, 0.0, low)
    return ((x - low) / scale).clamp(0, 255).to(torch.uint8)


def equalize(images: Tensor) -> Tensor:
    """RandAugment's Equalize: ``F.equalize``, which is already batched and sync-free (one
    ``scatter_add`` histogram per sample and channel, PIL's lookup table)."""
    return F.equalize_image(images)


# ----------------------------------------------------------------------------------------------
# The pipeline.


def _check_images(images: Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"expected uint8 RGB images shaped [B, 3, H, W]; got {images.dtype} {tuple(images.shape)}: "
            "convert with images.to(torch.uint8) and put channels second"
        )


def crop_flip(images: Tensor, top: Tensor, left: Tensor, flip: Tensor, padding: int) -> Tensor:
    """``F.crop(F.pad(image, padding), top, left, H, W)`` per sample, then ``F.horizontal_flip``
    where ``flip``: one gather from the zero-padded batch."""
    batch, _, height, width = images.shape
    padded = nnf.pad(images, (padding,) * 4)
    rows = top[:, None] + torch.arange(height, device=images.device)
    cols = left[:, None] + torch.arange(width, device=images.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    samples = torch.arange(batch, device=images.device)
    # Advanced indices around a slice put their dims first: [B, H, W, C].
    out = padded[samples[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return rearrange(out, "b h w c -> b c h w").contiguous()


def _signed_amounts(negate: Tensor, levels: dict[str, float]) -> dict[str, Tensor | float]:
    sign = 1.0 - 2.0 * negate.to(torch.float32)
    return {name: sign * level if name in SIGNED_OPS else level for name, level in levels.items()}


# The colour ops as (images, amount) -> images; amount is a per-sample tensor for signed ops, the
# level (a Python number) for the others.
COLOUR_OPS: dict[str, Callable[[Tensor, Tensor | float], Tensor]] = {
    "Brightness": brightness,
    "Color": color,
    "Contrast": contrast,
    "Sharpness": sharpness,
    "Posterize": lambda images, bits: posterize(images, int(bits)),
    "Solarize": solarize,
    "AutoContrast": lambda images, _: autocontrast(images),
    "Equalize": lambda images, _: equalize(images),
}


def _apply_op(name: str, images: Tensor, amount: Tensor | float) -> Tensor:
    if name in GEOMETRIC_OPS:
        return warp(images, GEOMETRIC_OPS[name](amount, images.shape[2], images.shape[3]))
    return COLOUR_OPS[name](images, amount)


def randaugment_step(
    images: Tensor, op_index: Tensor, negate: Tensor, levels: dict[str, float], gather: bool | None = None
) -> Tensor:
    """One RandAugment step: sample i gets op ``RANDAUGMENT_OPS[op_index[i]]`` at the magnitude
    ``levels[op]`` (from ``randaugment_magnitudes``), negated where ``negate[i]`` for signed ops.

    Two ways to the same pixels. Masked (``gather=False``, the default on a GPU): every op runs on
    the whole batch and ``torch.where`` keeps it for the samples that drew it, sync-free and one
    fixed graph. Gathered (``gather=True``, the default on the CPU): each op runs only on the
    samples that drew it, about a thirteenth of the work; it needs the count of those samples on
    the host, a sync that costs nothing on the CPU (measured there: about 8x faster a batch of
    128, which keeps RandAugment from eating the training budget of a CPU run).
    """
    gather = images.device.type == "cpu" if gather is None else gather
    amount = _signed_amounts(negate, levels)
    if gather:
        out = images.clone()
        for op, name in enumerate(RANDAUGMENT_OPS):
            chosen = (op_index == op).nonzero().squeeze(1)
            if name == "Identity" or chosen.numel() == 0:
                continue
            value = amount[name]
            out[chosen] = _apply_op(name, images[chosen], value[chosen] if isinstance(value, Tensor) else value)
        return out

    def drew(name: str) -> Tensor:
        return op_index == RANDAUGMENT_OPS.index(name)

    # All geometric ops in one warp: each sample's matrix is that of the op it drew.
    _, _, height, width = images.shape
    identity = torch.eye(2, 3, device=images.device).expand(images.shape[0], 2, 3)
    matrices, geometric = identity, torch.zeros_like(op_index, dtype=torch.bool)
    for name, matrix in GEOMETRIC_OPS.items():
        matrices = torch.where(rearrange(drew(name), "b -> b 1 1"), matrix(amount[name], height, width), matrices)
        geometric = geometric | drew(name)
    out = torch.where(_per_sample(geometric), warp(images, matrices), images)
    for name, op in COLOUR_OPS.items():
        out = torch.where(_per_sample(drew(name)), op(images, amount[name]), out)
    return out


@dataclass(frozen=True)
class AugmentDraws:
    """Every random choice for one batch of B samples (tensors on the batch's device)."""

    top: Tensor  # [B] crop offset into the padded image
    left: Tensor  # [B]
    flip: Tensor  # [B] bool
    op_index: Tensor  # [randaugment_ops, B] index into RANDAUGMENT_OPS
    negate: Tensor  # [randaugment_ops, B] bool: negate a signed op's magnitude


class BatchAugment:
    """``AugmentConfig`` applied per sample to uint8 batches [B, 3, height, width].

    The random draws (``draw``) are separate from the deterministic transform (``apply``) so that
    ``apply`` can be compiled or captured in a CUDA graph: torch.compile does not take an explicit
    ``torch.Generator``, and the magnitudes are computed here, once, as Python constants.
    """

    def __init__(self, cfg: AugmentConfig, height: int = 32, width: int = 32, gather: bool | None = None) -> None:
        self.cfg = cfg
        self.gather = gather  # see randaugment_step; None: by the images' device
        self.levels = randaugment_magnitudes(cfg.randaugment_magnitude, height, width)
        self.num_ops = cfg.randaugment_ops if cfg.randaugment else 0

    def draw(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> AugmentDraws:
        """Draw as torchvision does: crop offsets uniform in [0, 2 * padding], flip with p = 0.5, and
        per step an op uniform over RANDAUGMENT_OPS with its magnitude negated when rand <= 0.5."""
        steps = (self.num_ops, batch)
        span = 2 * self.cfg.crop_padding + 1
        flip = torch.rand(batch, generator=generator, device=device) < 0.5
        return AugmentDraws(
            top=torch.randint(0, span, (batch,), generator=generator, device=device),
            left=torch.randint(0, span, (batch,), generator=generator, device=device),
            flip=flip & self.cfg.flip,
            op_index=torch.randint(0, len(RANDAUGMENT_OPS), steps, generator=generator, device=device),
            negate=torch.rand(steps, generator=generator, device=device) <= 0.5,
        )

    def apply(self, images: Tensor, draws: AugmentDraws) -> Tensor:
        """Crop + flip, then the RandAugment steps, as ``draws`` says. No host syncs unless gathered."""
        _check_images(images)
        out = crop_flip(images, draws.top, draws.left, draws.flip, self.cfg.crop_padding)
        for op_index, negate in zip(draws.op_index, draws.negate):
            out = randaugment_step(out, op_index, negate, self.levels, self.gather)
        return out

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.apply(images, self.draw(images.shape[0], images.device, generator))


def batch_augment(images: Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> Tensor:
    """Augment every sample of a uint8 batch [B, 3, H, W] independently, on its device: random
    crop of the zero-padded image, horizontal flip (p = 0.5), then ``cfg.randaugment_ops``
    RandAugment ops each drawn uniformly from ``RANDAUGMENT_OPS`` (with a random sign where
    signed). ``generator`` must live on the images' device; None uses the global one."""
    _check_images(images)
    return BatchAugment(cfg, images.shape[2], images.shape[3])(images, generator)


class BatchLoader:
    """Batches from a dataset held on one device: uint8 images [N, 3, H, W] and int64 labels [N].

    Each epoch draws a permutation (and all augmentation randomness) from a generator seeded by
    (seed, epoch), so ``set_epoch(e)`` reproduces epoch e exactly, e.g. when resuming. Iterating
    without ``set_epoch`` moves on to the next epoch by itself. Yields ``(images, labels)`` with
    images augmented in uint8, then converted to float32 and normalised by ``mean``/``std`` (in
    the [0, 1] scale), all on the data's device.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        augment: AugmentConfig | None,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
    ) -> None:
        _check_images(images)
        if labels.shape != (images.shape[0],) or labels.dtype != torch.int64 or labels.device != images.device:
            raise ValueError(
                f"labels must be int64 [N] on the images' device ({images.device}, N={images.shape[0]}); "
                f"got {labels.dtype} {tuple(labels.shape)} on {labels.device}"
            )
        if batch_size <= 0 or (drop_last and batch_size > images.shape[0]):
            raise ValueError(f"batch_size must be in [1, {images.shape[0]}] (the dataset size); got {batch_size}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values, std positive; got mean={mean}, std={std}")
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.augment = None if augment is None else BatchAugment(augment, images.shape[2], images.shape[3])
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.epoch = 0
        # Normalise as one multiply-add: (x / 255 - mean) / std.
        std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1) / std_t

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _generator(self, epoch: int) -> torch.Generator:
        # The CPU path's EpochSampler seeds its epochs the same way (derive_seed says why not seed + epoch).
        return torch.Generator(device=self.images.device).manual_seed(derive_seed(self.seed, epoch))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        generator = self._generator(epoch)
        n, device = self.images.shape[0], self.images.device
        if self.shuffle:
            order = torch.randperm(n, generator=generator, device=device)
        else:
            order = torch.arange(n, device=device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            images = self.images[index]
            if self.augment is not None:
                images = self.augment(images, generator)
            yield images.float() * self._scale + self._shift, self.labels[index]
