"""The LightningModule: metrics against a hand count, optimizer groups, checkpoint hyperparameters."""

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from vitlib.module import ViTModule
from vitlib.schedule import ScheduleConfig


class FixedLogits(ViTModule):
    """Returns prescribed logits, so the metrics can be checked against a count by hand."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__(preset="vit_tiny", overrides={"num_classes": logits.shape[1]})
        self.fixed = logits

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        index = images[:, 0, 0, 0].long()  # each image carries its row number
        return self.fixed[index]


def test_top1_top5_and_loss_match_a_hand_count():
    torch.manual_seed(0)
    n, k = 40, 10
    logits = torch.randn(n, k)
    labels = torch.randint(0, k, (n,))
    ranks = (logits > logits.gather(1, labels[:, None])).sum(1)  # how many classes beat the label
    images = torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 3, 32, 32).contiguous()
    module = FixedLogits(logits)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    # Uneven batches (16, 16, 8): an average of per-batch accuracies would differ from the count.
    (result,) = trainer.test(module, DataLoader(TensorDataset(images, labels), batch_size=16), verbose=False)
    assert result["test/top1"] == (ranks == 0).float().mean().item()
    assert result["test/top5"] == (ranks < 5).float().mean().item()
    assert abs(result["test/loss"] - torch.nn.functional.cross_entropy(logits, labels).item()) < 1e-5
    assert result["test/count"] == n


def test_adamw_leaves_norms_biases_and_embeddings_undecayed():
    module = ViTModule(preset="slvit", overrides={"depth": 2})
    decay, no_decay = module.parameter_groups()
    assert "weight_decay" not in decay and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in module.model.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} == module.model.no_weight_decay()
    assert all(p.ndim >= 2 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(module.model.parameters()))


def test_hyperparameters_are_plain_values_and_rebuild_the_module():
    module = ViTModule(preset="slvit", overrides={"depth": 2}, schedule=ScheduleConfig(max_lr=5e-4))
    hparams = dict(module.hparams)
    assert isinstance(hparams["schedule"], dict) and isinstance(hparams["optimizer"], dict)
    rebuilt = ViTModule(**hparams)
    assert rebuilt.config == module.config and rebuilt.schedule_config.max_lr == 5e-4
