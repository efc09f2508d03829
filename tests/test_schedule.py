import math

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vitlib.schedule import SCHEDULES, ScheduleConfig, build_scheduler, lr_range_test, lr_trace

STEPS_PER_EPOCH = 5


def test_cyclic_traces_a_repeating_triangle():
    cfg = ScheduleConfig(name="cyclic", base_lr=1e-4, max_lr=1e-3, half_cycle_epochs=2.0)
    up = round(cfg.half_cycle_epochs * STEPS_PER_EPOCH)
    trace = lr_trace(cfg, STEPS_PER_EPOCH, max_epochs=10)  # 50 steps: 2.5 cycles
    assert len(trace) == 50
    assert trace[0] == pytest.approx(cfg.base_lr)
    assert trace[up] == pytest.approx(cfg.max_lr)
    assert trace[2 * up] == pytest.approx(cfg.base_lr)
    assert trace[up // 2] == pytest.approx((cfg.base_lr + cfg.max_lr) / 2)  # up is even
    # Linear: equal increments up, equal decrements down.
    assert torch.diff(torch.tensor(trace[: up + 1], dtype=torch.float64)).allclose(
        torch.full((up,), (cfg.max_lr - cfg.base_lr) / up, dtype=torch.float64)
    )
    assert trace[up : 2 * up + 1] == pytest.approx(trace[: up + 1][::-1])
    # The next cycle repeats the first.
    assert trace[2 * up : 4 * up] == pytest.approx(trace[: 2 * up])
    assert max(trace) == pytest.approx(cfg.max_lr) and min(trace) == pytest.approx(cfg.base_lr)


def test_cosine_warms_up_linearly_then_decays_to_min_lr():
    cfg = ScheduleConfig(name="cosine", max_lr=2e-3, min_lr=1e-5, warmup_epochs=2.0)
    warmup = round(cfg.warmup_epochs * STEPS_PER_EPOCH)
    trace = torch.tensor(lr_trace(cfg, STEPS_PER_EPOCH, max_epochs=8), dtype=torch.float64)
    assert len(trace) == 40
    assert trace[0] < cfg.max_lr / 100  # starts from ~0
    steps = torch.diff(trace[: warmup + 1])
    assert (steps > 0).all() and steps.allclose(steps.mean().expand_as(steps))
    assert trace[warmup].item() == pytest.approx(cfg.max_lr)
    assert trace.max().item() == pytest.approx(cfg.max_lr)
    assert (torch.diff(trace[warmup:]) <= 1e-15).all()
    assert trace[-1].item() == pytest.approx(cfg.min_lr)
    # Half-way through the decay the cosine sits half-way between max_lr and min_lr.
    decay = len(trace) - 1 - warmup
    if decay % 2 == 0:
        assert trace[warmup + decay // 2].item() == pytest.approx((cfg.max_lr + cfg.min_lr) / 2)


def test_cosine_without_warmup_starts_at_max_lr():
    trace = lr_trace(ScheduleConfig(name="cosine", warmup_epochs=0.0), STEPS_PER_EPOCH, max_epochs=3)
    assert trace[0] == pytest.approx(1e-3) and trace[-1] == pytest.approx(1e-5)


def test_constant_is_max_lr_throughout():
    trace = lr_trace(ScheduleConfig(name="constant", max_lr=3e-4), STEPS_PER_EPOCH, max_epochs=3)
    assert trace == pytest.approx([3e-4] * 15)


def test_build_scheduler_overrides_the_optimizer_lr():
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=0.5)
    build_scheduler(optimizer, ScheduleConfig(name="cyclic", base_lr=2e-4), STEPS_PER_EPOCH, max_epochs=4)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-4)
    # A second schedule on the same optimizer ignores the first one's bookkeeping.
    build_scheduler(optimizer, ScheduleConfig(name="constant", max_lr=7e-4), STEPS_PER_EPOCH, max_epochs=4)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(7e-4)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "step"}, "name"),
        ({"base_lr": 0.0}, "base_lr"),
        ({"max_lr": -1.0}, "max_lr"),
        ({"base_lr": 1e-2, "max_lr": 1e-3}, "base_lr"),
        ({"half_cycle_epochs": 0}, "half_cycle_epochs"),
        ({"warmup_epochs": -1.0}, "warmup_epochs"),
        ({"min_lr": 1.0}, "min_lr"),
        ({"max_lr": True}, "max_lr"),
    ],
)
def test_invalid_config_names_the_field(changes, field):
    with pytest.raises(ValueError, match=f"ScheduleConfig.{field}"):
        ScheduleConfig(**changes)


def test_build_scheduler_rejects_impossible_lengths():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="warmup_epochs"):
        build_scheduler(optimizer, ScheduleConfig(name="cosine", warmup_epochs=5.0), STEPS_PER_EPOCH, max_epochs=5)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        build_scheduler(optimizer, ScheduleConfig(), 0, max_epochs=5)


@pytest.mark.parametrize("name", ["cyclic", "cosine", "constant"])
def test_one_step_runs_work(name):
    # fast_dev_run: one epoch of one step.
    cfg = ScheduleConfig(name=name, half_cycle_epochs=0.3, warmup_epochs=0.4)
    trace = lr_trace(cfg, steps_per_epoch=1, max_epochs=1)
    assert len(trace) == 1 and cfg.base_lr <= trace[0] <= cfg.max_lr


class _TinyClassifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        # lr_find replaces this scheduler with its own.
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        scheduler = build_scheduler(optimizer, ScheduleConfig(), steps_per_epoch=4, max_epochs=10)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class _TinyData(pl.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(64, 8, generator=generator)
        self.dataset = TensorDataset(x, x[:, :3].argmax(dim=1))  # a learnable rule

    def train_dataloader(self):
        return DataLoader(self.dataset, batch_size=16, shuffle=True)


def test_lr_range_test_sweeps_increasing_lrs_and_restores_the_weights():
    torch.manual_seed(0)
    module = _TinyClassifier()
    before = [p.detach().clone() for p in module.parameters()]
    lrs, losses, suggestion = lr_range_test(
        module, _TinyData(), min_lr=1e-5, max_lr=10.0, num_steps=30, accelerator="cpu", devices=1
    )
    assert 2 <= len(lrs) == len(losses) <= 30
    assert all(a < b for a, b in zip(lrs, lrs[1:]))
    assert lrs[0] == pytest.approx(1e-5) and lrs[-1] <= 10.0 * (1 + 1e-9)
    # Early stopping ends the lists at divergence, so the recorded losses are finite.
    assert all(math.isfinite(loss) for loss in losses)
    assert suggestion is None or lrs[0] <= suggestion <= lrs[-1]
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_lr_range_test_runs_all_steps_without_early_stop(capfd):
    torch.manual_seed(0)
    lrs, losses, suggestion = lr_range_test(
        _TinyClassifier(), _TinyData(), min_lr=1e-4, max_lr=1e-1, num_steps=20, early_stop_threshold=None,
        accelerator="cpu", devices=1,
    )
    # Lightning's own lr_find progress bar stays silent (in a notebook it printed a line a step).
    assert "Finding best initial lr" not in capfd.readouterr().err
    assert len(lrs) == len(losses) == 20
    assert lrs[-1] == pytest.approx(1e-1)
    assert suggestion is not None and 1e-4 <= suggestion <= 1e-1


class _ConstantLoss(_TinyClassifier):
    def training_step(self, batch, batch_idx):
        return 2.5 + 0.0 * self.net(batch[0]).sum()  # the same loss at every step


def test_lr_range_test_losses_are_unbiased_from_the_first_step():
    # A constant loss must read as that constant everywhere: Lightning's own bias correction is one
    # step off and reports about half of it at the first step.
    _, losses, _ = lr_range_test(
        _ConstantLoss(), _TinyData(), num_steps=10, early_stop_threshold=None, accelerator="cpu", devices=1
    )
    assert losses == pytest.approx([2.5] * 10, rel=1e-6)


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule_describes_itself_and_fits_other_lengths_ending_at_its_lowest_rate(name: str) -> None:
    """What the tables, time budgets and studies ask of a schedule: its description names its
    numbers, and fitted over any number of epochs in whole cycles it ends at its lowest rate."""
    cfg = ScheduleConfig(name, base_lr=2e-4, max_lr=3e-3, half_cycle_epochs=12.5, warmup_epochs=2, min_lr=1e-5)
    assert "0.003" in cfg.describe() and cfg.describe() not in {ScheduleConfig(other).describe() for other in SCHEDULES if other != name}
    for epochs, cycles in ((30, 2), (7, 1), (12, 3)):
        fitted = cfg.fitted(epochs, cycles)
        assert fitted.cycles(epochs) == (cycles if name == "cyclic" else 1)
        assert dict(fitted.options()).get("model.schedule.half_cycle_epochs", fitted.half_cycle_epochs) == fitted.half_cycle_epochs
        trace = lr_trace(fitted, steps_per_epoch=100, max_epochs=epochs)
        later = trace[len(trace) // 2 :]  # after any warm-up (which starts from ~0)
        assert trace[-1] <= min(later) + 0.02 * (max(trace) - min(later)), (epochs, cycles)
    assert (cfg.cycle_epochs is None) == (name != "cyclic")
