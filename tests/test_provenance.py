"""Where a result came from: the commit (and whether the tree differs from it) and the machine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import torch

from vitlib.support.provenance import commit_and_dirty, cpu_name, git_commit, gpu_name, slug, this_machine, tree_commit


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=True).stdout.strip()


def test_the_commit_and_whether_tracked_files_differ(tmp_path: Path) -> None:
    assert commit_and_dirty(tmp_path) == (None, None)
    assert git_commit(tmp_path) == "unknown (not a git checkout)" and tree_commit(tmp_path) is None
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("a")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a")
    head = _git(tmp_path, "rev-parse", "HEAD")
    (tmp_path / "untracked.txt").write_text("not part of the commit")
    assert commit_and_dirty(tmp_path) == (head, False) and git_commit(tmp_path) == head
    (tmp_path / "a.txt").write_text("changed")
    assert commit_and_dirty(tmp_path) == (head, True) and git_commit(tmp_path) == f"{head}-dirty" == tree_commit(tmp_path)


def test_a_cpu_has_no_gpu_name() -> None:
    assert gpu_name(torch.device("cpu")) is None
    if not torch.cuda.is_available():
        assert gpu_name() is None and this_machine().startswith("CPU: ") and this_machine().endswith("no GPU")
        assert this_machine(detail=True) == f"{cpu_name()}, {os.cpu_count()} logical CPUs"


def test_a_slug_names_a_file() -> None:
    assert slug("NVIDIA A100-SXM4-40GB") == "nvidia-a100-sxm4-40gb"
    assert slug("  Tesla T4 (PCIe)  ") == "tesla-t4-pcie" and slug("cpu") == "cpu"
