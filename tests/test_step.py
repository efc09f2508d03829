"""The training step's speed hygiene: no host syncs per step, torch.compile of every preset in one
graph, LR scaling with the batch size; on a GPU also the sync debugger and the fused SDPA kernels."""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

from vitlib.attention import Attention
from vitlib.cli import CONFIG_DIR, main
from vitlib.config import ViTConfig
from vitlib.data import CIFAR100DataModule
from vitlib.model import ViT
from vitlib.module import OptimizerConfig, ViTModule
from vitlib.schedule import ScheduleConfig
from vitlib.support import hardware
from vitlib.support.callbacks import ThroughputMonitor, bare_step_images_per_s

TINY = {"dim": 32, "depth": 2, "heads": 2}
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# Flash attention, and SDPA's fused kernels under bf16, need compute capability 8.0 (Ampere) or later.
AMPERE = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)

# Tensor functions that copy a device value to the host (or a host value to the device, which
# waits for the device's queue too): each one stalls the GPU's pipeline of queued kernels.
SYNCING = {"item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__",
           "nonzero", "unique", "bincount", "masked_select", "tensor", "as_tensor"}  # fmt: skip
# Draws made on the host by construction (CPU generator, CPU tensors): BatchMixer picks the mix
# with torch.rand(()), torchvision's CutMix/MixUp sample lambda and the box on the CPU.
HOST_DRAWS = (("vitlib/augment.py", "__call__"), ("torchvision/transforms/v2/_augment.py", "make_params"))


class SyncDetector(TorchFunctionMode):
    """Records every call of a SYNCING function, except the host-side draws above."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in SYNCING:
            stack = traceback.extract_stack()[:-1]
            if not any(f.filename.endswith(path) and f.name == fn for f in stack for path, fn in HOST_DRAWS):
                self.calls.append(f"{name} at " + " <- ".join(f"{f.filename}:{f.lineno}" for f in stack[-3:][::-1]))
        return func(*args, **(kwargs or {}))


class Window(L.Callback):
    """Runs a checker from the end of batch ``first`` to the end of batch ``last`` of the first
    epoch: data loading, mixing, forward, loss, metrics, backward and the optimizer step of every
    batch in between, but none of the work at epoch ends or at logging steps."""

    def __init__(self, checker, first: int, last: int) -> None:
        self.checker, self.first, self.last = checker, first, last

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx == self.first:
            self.checker.__enter__()
        elif batch_idx == self.last:
            self.checker.__exit__(None, None, None)


def fit_through_window(root, checker, accelerator: str) -> None:
    datamodule = CIFAR100DataModule(str(root), batch_size=32, download=False, verify_md5=False, pipeline="batched")
    module = ViTModule("vit_tiny", TINY, optimizer=OptimizerConfig(fused=True))
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=True,  # refreshed every step: it must not sync either
        log_every_n_steps=1000,
        limit_val_batches=0,
        callbacks=[Window(checker, first=2, last=12)],
    )
    trainer.fit(module, datamodule)


@pytest.fixture(autouse=True)
def the_gpu_augmentation_path(monkeypatch):
    """The device pipeline runs here on the CPU as a stand-in for a GPU; on the CPU its RandAugment
    gathers the samples of each op by default, a host sync by design (free there). These tests
    check the GPU's path, the sync-free masked one."""
    from vitlib.support.batched_augment import BatchAugment

    init = BatchAugment.__init__
    monkeypatch.setattr(BatchAugment, "__init__", lambda self, cfg, height=32, width=32, gather=None: init(self, cfg, height, width, False))


def test_training_steps_make_no_host_syncs(cifar_root):
    detector = SyncDetector()
    fit_through_window(cifar_root, detector, "cpu")
    assert detector.calls == []


def test_the_detector_sees_a_sync_in_the_step(cifar_root, monkeypatch):
    """Negative control: a Python-number metric update, as the step had before, is caught."""
    update = ViTModule._update

    def update_with_host_count(self, split, logits, labels, loss):
        update(self, split, logits, labels, loss)
        getattr(self, f"{split}_metrics")["count"].update(torch.tensor(float(labels.shape[0]), device=logits.device))

    monkeypatch.setattr(ViTModule, "_update", update_with_host_count)
    detector = SyncDetector()
    fit_through_window(cifar_root, detector, "cpu")
    assert len(detector.calls) == 10 and all(call.startswith("tensor at") for call in detector.calls)


@CUDA
def test_training_steps_make_no_host_syncs_on_a_gpu(cifar_root):
    class SyncDebugMode:
        def __enter__(self):
            torch.cuda.set_sync_debug_mode("error")

        def __exit__(self, *exc):
            torch.cuda.set_sync_debug_mode("default")

    fit_through_window(cifar_root, SyncDebugMode(), "gpu")


@pytest.mark.parametrize("preset", ["vit", "conv_vit", "slvit"])
def test_every_preset_compiles_into_one_graph(preset):
    """fullgraph=True fails on any graph break (LSA's mask and temperature, SPT, the stems);
    the compiled model computes what the eager one does, gradients included."""
    torch.manual_seed(0)
    model = ViT(ViTConfig.from_preset(preset, **TINY, drop_path=0.0))
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    images = torch.randn(4, 3, 32, 32)
    grads = []
    for run in (model, compiled):
        model.zero_grad()
        out = run(images)
        out.square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        if run is model:
            expected = out.detach()
    torch.testing.assert_close(out.detach(), expected)
    for eager, traced in zip(*grads):
        torch.testing.assert_close(traced, eager)


def test_compile_option_compiles_in_place_and_keeps_parameter_names():
    module = ViTModule("vit_tiny", TINY, compile=True)
    names = list(module.state_dict())
    module.configure_model()
    assert module.model._compiled_call_impl is not None
    assert list(module.state_dict()) == names  # checkpoints stay loadable by an eager model


def test_compile_takes_a_torch_compile_mode(monkeypatch):
    modes = []
    monkeypatch.setattr(ViT, "compile", lambda self, **kwargs: modes.append(kwargs["mode"]))
    for compile in (True, "max-autotune"):
        ViTModule("vit_tiny", TINY, compile=compile).configure_model()
    assert modes == [None, "max-autotune"]
    with pytest.raises(ValueError, match="compile must be true, false, 'auto' or a torch.compile mode"):
        ViTModule("vit_tiny", TINY, compile="fastest")


def test_compile_auto_follows_the_decision(monkeypatch):
    compiled = []
    monkeypatch.setattr(ViT, "compile", lambda self, **kwargs: compiled.append(kwargs["mode"]))
    module = ViTModule("vit_tiny", TINY)  # compile: "auto" by default
    module.configure_model()  # on the CPU: never
    assert compiled == [] and module.compiled == "eager"
    monkeypatch.setattr(hardware, "compile_wins", lambda device: True)  # a GPU of COMPILE_MEASURED
    module.configure_model()
    assert compiled == [None] and module.compiled == "compiled"


class FailsBackward(torch.autograd.Function):
    """Passes its input through; its backward raises, as a backward graph that fails to compile does."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("backward compile failed: no C compiler")


def failing_compile(where: str):
    """A stand-in for torch.compile whose compiled model fails at its first call, in ``where``."""

    def compile(fn, *args, **kwargs):
        def compiled(*a, **k):
            if where == "forward":
                raise RuntimeError("BackendCompilerFailed: no C compiler\nmore lines")
            return FailsBackward.apply(fn(*a, **k))

        return compiled

    return compile


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_a_compile_that_fails_in_the_first_step_trains_eagerly(cifar_root, monkeypatch, capsys, where):
    monkeypatch.setattr(torch, "compile", failing_compile(where))
    datamodule = CIFAR100DataModule(str(cifar_root), batch_size=16, download=False, verify_md5=False, num_workers=0)
    module = ViTModule("vit_tiny", TINY, compile=True)
    trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False, limit_val_batches=0,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule)
    lines = [line for line in capsys.readouterr().err.splitlines() if "torch.compile failed" in line]
    assert len(lines) == 1 and lines[0].endswith("training eagerly instead") and f"first step's {where}" in lines[0]
    assert module.compiled == f"eager (torch.compile failed in the first step's {where})"
    assert trainer.global_step == 3 and module.model._compiled_call_impl is None
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_the_run_records_say_what_ran_after_a_failed_compile(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch, "compile", failing_compile("forward"))
    main(["fit", "--config", str(CONFIG_DIR / "quick.yaml"), "--model.compile", "true", "--trainer.max_epochs", "1",
          "--data.quick", "true", "--data.quick_train_size", "64", "--data.quick_test_size", "32", "--data.batch_size", "32",
          "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"])  # fmt: skip
    metrics = json.loads(Path("runs/vitlib/version_0/metrics.json").read_text())
    assert metrics["ran"]["compile"] == "eager (torch.compile failed in the first step's forward)"
    assert metrics["ran"]["precision"] == "32-true"
    assert metrics["ran"]["float32_matmul_precision"] == torch.get_float32_matmul_precision()
    assert metrics["throughput"]["bare_step_compiled"] is False  # the bare step ran as training did: eagerly


def test_no_fused_adamw_where_float16_loss_scaling_meets_gradient_clipping():
    module = ViTModule("vit_tiny", TINY)
    scaled = SimpleNamespace(scaler=object())  # 16-mixed's plugin holds a GradScaler
    module._trainer = SimpleNamespace(precision_plugin=scaled, gradient_clip_val=1.0)
    assert module.fused_adamw() is False
    module.optimizer_config.fused = True
    with pytest.raises(ValueError, match="fused true cannot train with gradient clipping under 16-mixed"):
        module.fused_adamw()
    module._trainer = SimpleNamespace(precision_plugin=scaled, gradient_clip_val=None)
    assert module.fused_adamw() is True  # no clipping: as asked
    module._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(), gradient_clip_val=1.0)  # bf16: no scaler
    assert module.fused_adamw() is True


def test_the_bare_step_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = ViT(ViTConfig.from_preset("vit_tiny", **TINY)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert bare_step_images_per_s(model, torch.randn(4, 3, 32, 32), torch.randint(0, 100, (4,)), steps=1, warmup=1) > 0
    assert not model.training and all(p.grad is None for p in model.parameters())
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name])


def test_the_bare_step_runs_in_the_precision_and_compile_training_used(cifar_root, monkeypatch):
    """bf16-mixed on the CPU (CPU autocast), the model "compiled" by a stand-in that counts its calls."""
    calls = []

    def counting_compile(fn, *args, **kwargs):
        def compiled(*a, **k):
            out = fn(*a, **k)
            calls.append(out.dtype)
            return out

        return compiled

    monkeypatch.setattr(torch, "compile", counting_compile)
    datamodule = CIFAR100DataModule(str(cifar_root), batch_size=16, download=False, verify_md5=False, num_workers=0)
    module = ViTModule("vit_tiny", TINY, compile=True)
    monitor = ThroughputMonitor(bare_steps=2)
    trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", max_steps=2, logger=False, enable_checkpointing=False,
                        limit_val_batches=0, enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor])  # fmt: skip
    trainer.fit(module, datamodule)
    summary = monitor.summary()
    assert summary["bare_step_images_per_s"] > 0
    assert summary["bare_step_precision"] == "bf16-mixed" and summary["bare_step_compiled"] is True
    assert summary["float32_matmul_precision"] == torch.get_float32_matmul_precision()
    # 2 training steps, then 3 warm-up + 2 timed bare steps, all through the compiled call, under autocast
    assert calls == [torch.bfloat16] * 7


def test_lr_factor_rules_and_errors():
    assert OptimizerConfig(lr_scaling="linear", reference_batch_size=256).lr_factor(1024) == 4.0
    assert OptimizerConfig(lr_scaling="sqrt", reference_batch_size=256).lr_factor(1024) == 2.0
    assert OptimizerConfig().lr_factor(1024) == 1.0  # "none" by default: configs mean what they say
    with pytest.raises(ValueError, match="OptimizerConfig.lr_scaling must be one of 'none', 'linear', 'sqrt'"):
        OptimizerConfig(lr_scaling="square")
    with pytest.raises(ValueError, match="reference_batch_size must be a positive integer"):
        OptimizerConfig(reference_batch_size=0)


@pytest.mark.parametrize("rule, factor", [("linear", 4.0), ("sqrt", 2.0), ("none", 1.0)])
def test_learning_rates_scale_with_the_global_batch(cifar_root, rule, factor):
    """Global batch = batch_size x processes x accumulation: 16 x 1 x 4 = 64 = 4 x the reference 16."""
    schedule = ScheduleConfig(name="cyclic", base_lr=1e-4, max_lr=1e-3)
    module = ViTModule("vit_tiny", TINY, schedule=schedule, optimizer=OptimizerConfig(lr_scaling=rule, reference_batch_size=16))
    datamodule = CIFAR100DataModule(str(cifar_root), batch_size=16, download=False, verify_md5=False, num_workers=0)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, accumulate_grad_batches=4, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(module, datamodule)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.max_lrs == pytest.approx([1e-3 * factor] * 2)
    assert scheduler.base_lrs == pytest.approx([1e-4 * factor] * 2)


@CUDA
@pytest.mark.parametrize("locality", [False, True])
def test_attention_runs_on_fused_sdpa_kernels(locality):
    """MHSA on flash attention; LSA (a diagonal mask) on the memory-efficient kernel, each in the
    autocast dtype the machine trains in (bf16 from compute capability 8.0, float16 below it, where
    flash attention does not exist). Restricting SDPA to these kernels makes it raise instead of
    falling back to the unfused math path."""
    if not locality and not AMPERE:
        pytest.skip("flash attention needs compute capability 8.0")
    attention = Attention(192, 12, locality=locality).cuda()
    x = torch.randn(256, 65, 192, device="cuda", requires_grad=True)
    kernels = [SDPBackend.EFFICIENT_ATTENTION] if locality else [SDPBackend.FLASH_ATTENTION]
    dtype = torch.bfloat16 if AMPERE else torch.float16
    with sdpa_kernel(kernels), torch.autocast("cuda", dtype=dtype):
        out, _ = attention(x)
        out.float().square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
