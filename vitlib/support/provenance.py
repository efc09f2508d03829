"""Where a result came from: the checkout and its commit, and the machine, for results files."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

import torch


def repository_root(start: str | Path | None = None) -> Path | None:
    """The checkout that holds the book (a folder with ``_toc.yml`` and ``vitlib/``), searching
    upwards from ``start`` (default: the working directory); ``None`` outside one (e.g. on Colab)."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file() and (folder / "vitlib" / "__init__.py").is_file():
            return folder
    return None


def commit_and_dirty(folder: Path) -> tuple[str | None, bool | None]:
    """The checked-out commit of ``folder`` and whether tracked files have uncommitted changes;
    ``(None, None)`` outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, bool(dirty)


def tree_commit(folder: Path) -> str | None:
    """The checked-out commit of ``folder``, with ``-dirty`` when tracked files have uncommitted
    changes; ``None`` outside a git checkout."""
    commit, dirty = commit_and_dirty(folder)
    return commit + ("-dirty" if dirty else "") if commit else None


def git_commit(folder: Path) -> str:
    """:func:`tree_commit`, and ``"unknown (not a git checkout)"`` outside one (results files always name a commit)."""
    return tree_commit(folder) or "unknown (not a git checkout)"


def gpu_name(device: torch.device | int | None = None) -> str | None:
    """The name of the GPU ``device`` (default: the current one); ``None`` on a CPU."""
    if isinstance(device, torch.device) and device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(device)


def this_machine(detail: bool = False) -> str:
    """One line on this machine's hardware: its GPUs (count and name), else its CPU.

    ``detail``: the line a benchmark records, the current GPU's name, memory, SMs, CUDA and cuDNN
    versions, then the host's CPU and its logical CPUs (the CPU alone without a GPU)."""
    gpu = torch.cuda.is_available()
    if detail:
        host = f"{cpu_name()}, {os.cpu_count()} logical CPUs"
        if not gpu:
            return host
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return (f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs, "
                f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; host {host}")  # fmt: skip
    if gpu:
        names = [gpu_name(i) for i in range(torch.cuda.device_count())]
        return f"{len(names)} x {names[0]}" if len(set(names)) == 1 else ", ".join(names)
    return f"CPU: {cpu_name()}, {os.cpu_count()} cores, no GPU"


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def slug(text: str) -> str:
    """``text`` for a file name: lower case, every run of other characters than a-z and 0-9 one
    ``-``, none at the ends (``"NVIDIA A100-SXM4-40GB"`` -> ``"nvidia-a100-sxm4-40gb"``)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
