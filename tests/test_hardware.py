"""The fast path chosen from the hardware, with the capabilities of typical machines given by hand:
the decision itself, and what the CLI makes of every packaged config and of a precision flag."""

import pytest
import torch
import yaml

from vitlib.cli import CONFIG_DIR, ViTCLI, packaged_configs
from vitlib.lab.results.baseline import ResNetModule
from vitlib.module import ViTModule
from vitlib.support import hardware
from vitlib.support.hardware import Capabilities, choose, decide_precision
from vitlib.support.loss_check import precision_advice

T4 = Capabilities("Tesla T4", (7, 5), 2)
V100 = Capabilities("Tesla V100-SXM2-16GB", (7, 0), 8)
A100 = Capabilities("NVIDIA A100-SXM4-40GB", (8, 0), 12)
H100 = Capabilities("NVIDIA H100 80GB HBM3", (9, 0), 16)
CPU = Capabilities(cpu_threads=2)
MACHINES = {"T4": T4, "V100": V100, "A100": A100, "H100": H100, "CPU": CPU}
CHOSEN = {"T4": "16-mixed", "V100": "16-mixed", "A100": "bf16-mixed", "H100": "bf16-mixed", "CPU": "32-true"}


@pytest.mark.parametrize("caps, precision", [(MACHINES[name], precision) for name, precision in CHOSEN.items()])
def test_precision_follows_the_hardware(caps, precision):
    path = choose(caps)
    assert path.precision == precision
    assert path.accelerator == ("cpu" if caps.gpu is None else "gpu")
    assert path.trainer_kwargs() == {"accelerator": path.accelerator, "precision": precision}


def test_describe_names_the_machine_and_every_choice():
    text = choose(T4).describe()
    assert "Tesla T4" in text and "7.5" in text and "float16" in text and "eager" in text
    assert "CPU (2 threads): float32" in choose(CPU).describe()


def test_compile_only_on_a_gpu_family_measured_to_gain(monkeypatch):
    assert not choose(A100).compile  # nothing measured: eager everywhere
    monkeypatch.setattr(hardware, "COMPILE_MEASURED", ("A100",))
    assert choose(A100).compile and "measured faster" in choose(A100).describe()
    assert not choose(T4).compile and not choose(CPU).compile


def test_detect_on_this_machine_matches_torch():
    caps = Capabilities.detect()

    assert (caps.gpu is not None) == torch.cuda.is_available()
    assert choose(caps).channels_last is False


@pytest.mark.parametrize("machine", MACHINES)
def test_a_run_that_names_no_precision_gets_the_chosen_one_silently(machine):
    assert decide_precision(None, MACHINES[machine]) == (CHOSEN[machine], None)


@pytest.mark.parametrize("asked", ["bf16-mixed", "bf16", "bf16-true"])
@pytest.mark.parametrize("machine", ["T4", "V100"])
def test_bf16_below_compute_capability_8_runs_in_float16_and_says_why(machine, asked):
    precision, why = decide_precision(asked, MACHINES[machine])
    caps = MACHINES[machine]
    assert precision == "16-mixed"
    assert why == (
        f"{caps.gpu} (compute capability {caps.compute_capability[0]}.{caps.compute_capability[1]}) has no native bf16 "
        f"(torch would emulate it: no tensor cores, attention on its math kernel): running in 16-mixed (float16 "
        f"autocast with loss scaling) instead of {asked}"
    )


@pytest.mark.parametrize(
    "machine, asked, expected",
    [("A100", "bf16-mixed", "bf16-mixed"), ("H100", "bf16-true", "bf16-true"), ("T4", "16-mixed", "16-mixed"),
     ("T4", "32-true", "32-true"), ("A100", "16-mixed", "16-mixed"), ("CPU", "32-true", "32-true"), ("T4", 32, "32")],
)  # fmt: skip
def test_a_precision_the_machine_runs_natively_is_kept(machine, asked, expected):
    assert decide_precision(asked, MACHINES[machine]) == (expected, None)


@pytest.mark.parametrize("asked", ["bf16-mixed", "16-mixed", "16"])
def test_half_precision_on_a_cpu_runs_in_float32(asked):
    assert decide_precision(asked, CPU) == ("32-true", f"no GPU: running in float32 instead of {asked}")


def _config_through_the_cli(monkeypatch, machine: str, name: str, *flags: str):
    """The config the CLI would build the run from on ``machine`` (nothing is instantiated)."""
    monkeypatch.setattr(Capabilities, "detect", classmethod(lambda cls: MACHINES[machine]))
    monkeypatch.setattr(ViTCLI, "instantiate_classes", lambda self: None)
    model_class = ResNetModule if name == "cpu_resnet" else ViTModule  # the baseline's entry point
    return ViTCLI(args=["--config", str(CONFIG_DIR / f"{name}.yaml"), *flags], run=False, model_class=model_class).config


@pytest.mark.parametrize("name", packaged_configs())
@pytest.mark.parametrize("machine", MACHINES)
def test_every_packaged_config_leaves_precision_and_compile_to_the_decision(monkeypatch, capsys, machine, name):
    raw = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    assert "precision" not in raw.get("trainer", {}), "the decision picks the precision: no config names one"
    assert raw["model"].get("compile", "auto") == "auto", "compile only where measured to win: model.compile auto"
    config = _config_through_the_cli(monkeypatch, machine, name)
    on_cpu = raw["trainer"].get("accelerator") == "cpu"  # the CPU recipes train on the CPU anywhere
    assert config["trainer.precision"] == ("32-true" if on_cpu else CHOSEN[machine])
    assert config["model.compile"] == "auto"
    assert "instead of" not in capsys.readouterr().err  # nothing was asked that the machine lacks: no line


@pytest.mark.parametrize("machine", MACHINES)
def test_a_bf16_flag_on_the_command_line_follows_the_same_rule(monkeypatch, capsys, machine):
    config = _config_through_the_cli(monkeypatch, machine, "reference", "--trainer.precision", "bf16-mixed")
    expected, why = decide_precision("bf16-mixed", MACHINES[machine])
    assert config["trainer.precision"] == expected
    err = capsys.readouterr().err
    assert (why in err.splitlines()) if why else "instead of" not in err
    assert (why is not None) == (machine in ("T4", "V100", "CPU"))


def test_the_cli_asks_the_cpu_for_a_run_on_the_cpu(monkeypatch):
    config = _config_through_the_cli(monkeypatch, "A100", "reference", "--trainer.accelerator", "cpu")
    assert config["trainer.precision"] == "32-true"


def test_compile_auto_compiles_only_on_a_measured_gpu(monkeypatch):
    monkeypatch.setattr(Capabilities, "detect", classmethod(lambda cls: A100))
    assert not hardware.compile_wins(torch.device("cuda"))
    monkeypatch.setattr(hardware, "COMPILE_MEASURED", ("A100",))
    assert hardware.compile_wins(torch.device("cuda")) and not hardware.compile_wins(torch.device("cpu"))


@pytest.mark.parametrize(
    "precision, machine, advice",
    [("16-mixed", "A100", "bf16-mixed instead of 16-mixed"), ("16-mixed", "H100", "bf16-mixed instead of 16-mixed"),
     ("16-mixed", "T4", "32-true instead of 16-mixed, or keep 16-mixed with gradient clipping"),
     ("16-mixed", "V100", "32-true instead of 16-mixed, or keep 16-mixed with gradient clipping")],
)  # fmt: skip
def test_the_nan_advice_recommends_bf16_only_where_it_is_native(precision, machine, advice):
    text = precision_advice(precision, MACHINES[machine])
    assert advice in text
    assert ("bf16" in text.replace("no native bf16", "")) == MACHINES[machine].bf16_native


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_no_precision_advice_for_a_run_not_in_float16(precision):
    assert precision_advice(precision, A100) == precision_advice(precision, T4) == ""
