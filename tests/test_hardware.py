"""The fast path chosen from the hardware, with the capabilities of typical machines given by hand."""


import pytest
import torch

from vitlib.support import hardware
from vitlib.support.hardware import Capabilities, choose

T4 = Capabilities("Tesla T4", (7, 5), 2)
V100 = Capabilities("Tesla V100-SXM2-16GB", (7, 0), 8)
A100 = Capabilities("NVIDIA A100-SXM4-40GB", (8, 0), 12)
CPU = Capabilities(cpu_threads=2)


@pytest.mark.parametrize("caps, precision", [(T4, "16-mixed"), (V100, "16-mixed"), (A100, "bf16-mixed"), (CPU, "32-true")])
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
