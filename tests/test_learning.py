"""A learning test on real data: scikit-learn's bundled handwritten digits (1,797 real 8x8 scans).

Upsampled to 32x32 and three channels they look like tiny CIFAR images; a small ViT trained for a
short budget on the CPU must reach 90 % held-out accuracy with every stem. This catches what shape
tests cannot: a model that runs but does not learn (a broken mask, a detached parameter, a wrong
schedule, a mislabelled batch).
"""

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from vitlib.module import ViTModule
from vitlib.schedule import ScheduleConfig


def digits_as_images(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N, 1, 8, 8]
    images = F.interpolate(images, size=32, mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    images = (images - 0.5) / 0.5
    labels = torch.tensor(digits.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    test, train = order[:360], order[360:]
    return TensorDataset(images[train], labels[train]), TensorDataset(images[test], labels[test])


@pytest.mark.slow
@pytest.mark.parametrize("stem, attention", [("patch", "mhsa"), ("conv", "mhsa"), ("spt", "lsa")])
def test_small_vit_learns_digits(stem, attention):
    L.seed_everything(0)
    train, test = digits_as_images()
    epochs = 15
    module = ViTModule(
        preset="vit_tiny",
        # 8x8 patches: 16 tokens keep the test to seconds on two cores.
        overrides={"num_classes": 10, "stem": stem, "attention": attention, "patch_size": 8},
        schedule=ScheduleConfig(name="cosine", max_lr=3e-3, min_lr=1e-4, warmup_epochs=1),
        label_smoothing=0.0,
    )
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(train, batch_size=64, shuffle=True, drop_last=True))
    (result,) = trainer.test(module, DataLoader(test, batch_size=360), verbose=False)
    assert result["test/count"] == 360
    assert result["test/top1"] >= 0.90, f"{stem}/{attention}: held-out top-1 {result['test/top1']:.3f}"
