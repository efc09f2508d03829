"""``python -m benchmarks.gpu_run``: the tiny mode runs every stage on a CPU (so the one-shot GPU run
cannot rot unnoticed), and the parts that keep the GPU run inside its time limit and its output
folder's size limit work."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from benchmarks import gpu_run as gpurun
from benchmarks.gpu_run import check_out, main, prepare, run_child, wheels_to_install

STAGES = ["setup", "bench", "train", "record", "test"]


def test_tiny_mode_runs_every_stage_and_writes_what_comes_back(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--tiny", "--out", str(out), "--work", str(tmp_path / "work")]) == 0

    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == STAGES
    assert all(s["status"] == "ok" for s in summary["stages"]), summary["stages"]
    assert summary["plan"]["epochs"] == 2 and summary["fit"]["epoch"] == 2  # the tiny cap, all done
    assert summary["test"]["split"] == "test" and summary["test"]["samples"] == gpurun.TINY.n_test
    assert 0 <= summary["test"]["top1"] <= summary["test"]["top5"] <= 1

    (bench_file,) = (out / "benchmarks").glob("cpu-*.json")
    bench = json.loads(bench_file.read_text())
    assert [r["name"] for r in bench["rows"]][0] == "vitlib-vit-fast" and bench["tiny"]
    record = json.loads((out / "results" / "tiny-synthetic-cpu.json").read_text())
    assert record["metrics"]["top1"] == summary["fit"]["top1"]
    assert record["dataset"] == summary["test"]["dataset"] and "quick mode" not in record["dataset"]
    if summary["commit"]:  # from git in a checkout, else from the commit --prepare wrote down
        assert record["commit"] == summary["commit"]
    assert check_out(out) == []

    lines = capsys.readouterr().out.rstrip().splitlines()
    assert lines[-6].split() == ["stage", "status", "s", "result"]
    assert [line.split()[0] for line in lines[-5:]] == STAGES
    assert (out / "gpurun.log").read_text().rstrip().endswith(lines[-1])


def test_a_stage_over_its_limit_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    script = ("import subprocess, sys, time; "
              f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(pid_file)!r}, 'w').write(str(p.pid)); print('started', flush=True); time.sleep(60)")  # fmt: skip
    lines = []
    rc, seconds = run_child([sys.executable, "-c", script], 5, lines.append)
    assert rc is None and seconds < 20
    assert "started" in lines and any("time limit" in line for line in lines)
    # Killed, though on a busy CPU it may take a moment to be scheduled and die.
    status = Path(f"/proc/{int(pid_file.read_text())}/status")
    for _ in range(50):
        if not status.exists() or "\tZ" in status.read_text().split("State:")[1].splitlines()[0]:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the grandchild survived: {status.read_text().splitlines()[:3]}")


def test_a_finished_child_reports_its_status():
    rc, _ = run_child([sys.executable, "-c", "raise SystemExit(3)"], 30, lambda line: None)
    assert rc == 3
    assert run_child([sys.executable, "-c", "pass"], 0, lambda line: None) == (None, 0.0)  # no time left


def test_check_out_names_what_would_not_come_back(tmp_path):
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "b" / "ok.json").write_text("{}")
    assert check_out(tmp_path) == []
    with open(tmp_path / "big.pt", "wb") as f:
        f.truncate(17 * 2**20)  # sparse: nothing is written
    (tmp_path / "a" / "b" / "c" / "deep.json").write_text("{}")
    (tmp_path / "bad name.txt").write_text("")
    for i in range(6):
        (tmp_path / f"f{i}").write_text("")
    problems = check_out(tmp_path)
    assert len(problems) == 4, problems
    assert problems[0] == "10 files: only 8 come back"
    assert any(p.startswith("big.pt: 17.0 MiB") for p in problems)
    assert any(p.startswith("a/b/c/deep.json: more than 2 folders") for p in problems)
    assert any(p.startswith("bad name.txt: a name") for p in problems)


def test_only_wheels_of_missing_packages_are_installed(tmp_path):
    for name in ("pytest-9.0.3-py3-none-any.whl", "surely_not_installed_here-1.0-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    todo, present = wheels_to_install(tmp_path)
    assert [w.name for w in todo] == ["surely_not_installed_here-1.0-py3-none-any.whl"]
    assert [p.split()[0] for p in present] == ["pytest"]


def test_prepare_copies_the_data_and_notes_the_commit(tmp_path):
    shared, carry = tmp_path / "shared", tmp_path / "carry"
    shared.mkdir()
    with pytest.raises(FileNotFoundError, match="lacks cifar100_q75.npz, build.py, meta: pass --shared"):
        prepare(shared, carry, wheels=False)
    for name in gpurun.DATA_FILES:
        (shared / name).write_text(name)
    done = prepare(shared, carry, wheels=False)
    assert sorted(os.listdir(carry / "cifar100-q75")) == sorted(gpurun.DATA_FILES)
    assert (carry / "cifar100-q75" / "build.py").read_text() == "build.py"
    assert (carry / "commit.txt").read_text().strip() == str(done["commit"])


def test_the_prepared_data_are_built_once_by_their_build_script(tmp_path, monkeypatch):
    prepared = tmp_path / "carry" / "cifar100-q75"
    prepared.mkdir(parents=True)
    for name in gpurun.DATA_FILES:
        (prepared / name).write_text("")
    # A stand-in for the shared build.py: the same command line, the same layout written.
    (prepared / "build.py").write_text(
        "import pathlib, sys\nfolder = pathlib.Path(sys.argv[1], 'cifar-100-python')\nfolder.mkdir(parents=True)\n"
        "for name in ('train', 'test', 'meta'):\n    (folder / name).write_text(name)\nprint('built')\n"
    )
    monkeypatch.setattr(gpurun, "CARRY", tmp_path / "carry")
    lines = []
    root, what = gpurun.build_data(gpurun.GPU, tmp_path / "work", lines.append)
    assert (root / "cifar-100-python" / "train").read_text() == "train" and "built" in lines
    assert what == "CIFAR-100 (JPEG q75 copy)"
    lines.clear()
    assert gpurun.build_data(gpurun.GPU, tmp_path / "work", lines.append)[0] == root  # a retry reuses it
    assert lines == [f"data: reusing {root}"]
    (prepared / "build.py").unlink()
    with pytest.raises(FileNotFoundError, match="lacks build.py: run `python -m benchmarks.gpu_run --prepare`"):
        gpurun.build_data(gpurun.GPU, tmp_path / "elsewhere", lines.append)


def test_the_prepared_wheels_are_installed_and_importable(tmp_path, monkeypatch):
    import zipfile

    # The smallest valid wheel: one module and its dist-info.
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    info = "gpurun_probe-1.0.dist-info"
    with zipfile.ZipFile(wheels / "gpurun_probe-1.0-py3-none-any.whl", "w") as whl:
        whl.writestr("gpurun_probe.py", "VALUE = 42\n")
        whl.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: gpurun-probe\nVersion: 1.0\n")
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{info}/RECORD", "")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "gpurun_probe", raising=False)
    installed = gpurun.install_wheels(wheels, tmp_path / "site", lambda line: None)
    assert installed == ["gpurun_probe"]
    import gpurun_probe

    assert gpurun_probe.VALUE == 42 and Path(gpurun_probe.__file__).parent == tmp_path / "site"
