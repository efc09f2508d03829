"""``python -m benchmarks.gpu_run``: the tiny mode runs every stage on a CPU (so the GPU run cannot rot
unnoticed); a stage over its time limit is killed whole; ``--bundle`` fails over ``--max-bundle-mib``;
a run refuses an incomplete bundle before it starts, takes its data and commit from it where nothing
else gives them, and installs its wheels. The bundle itself: tests/test_gpu_bundle.py."""

from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from pathlib import Path

import pytest

from benchmarks import gpu_run
from benchmarks.gpu_bundle import make_bundle, read_bundle
from benchmarks.gpu_run import Data, Problem, choose_data, main, run_child

STAGES = ["setup", "bench", "train", "record", "test"]


def test_tiny_mode_runs_every_stage_and_writes_its_results(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--tiny", "--out", str(out), "--work", str(tmp_path / "work")]) == 0

    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == STAGES
    assert all(s["status"] == "ok" for s in summary["stages"]), summary["stages"]
    assert summary["minutes"] == gpu_run.TINY.minutes and summary["seconds"] < gpu_run.TINY.minutes * 60
    assert summary["plan"]["epochs"] == 2 and summary["fit"]["epoch"] == 2  # the tiny cap, all done
    assert summary["test"]["split"] == "test" and summary["test"]["samples"] == gpu_run.TINY.n_test
    assert 0 <= summary["test"]["top1"] <= summary["test"]["top5"] <= 1

    (bench_file,) = (out / "benchmarks").glob("cpu-*.json")
    bench = json.loads(bench_file.read_text())
    assert [r["name"] for r in bench["rows"]][0] == "vitlib-vit-fast" and bench["tiny"]
    record = json.loads((out / "results" / "tiny-synthetic-cpu.json").read_text())
    assert record["metrics"]["top1"] == summary["fit"]["top1"]
    assert record["dataset"] == summary["test"]["dataset"] and "quick mode" not in record["dataset"]
    assert (out / "results" / "tiny-synthetic-cpu" / "model.safetensors").is_file()  # the weights
    if summary["commit"]:  # from git in a checkout
        assert record["commit"] == summary["commit"]

    lines = capsys.readouterr().out.rstrip().splitlines()
    assert lines[-6].split() == ["stage", "status", "s", "result"]
    assert [line.split()[0] for line in lines[-5:]] == STAGES
    assert (out / "gpu_run.log").read_text().rstrip().endswith(lines[-1])


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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tiny"], "--out DIR is required"),
        (["--out", "x", "--minutes", "1"], "--minutes 1 leaves no time to train: give at least 3.5"),
        (["--tiny", "--out", "x", "--minutes", "0"], "--minutes 0 leaves no time to train"),
        (["--bundle", "b", "--out", "x"], "run from it with --from-bundle BUNDLE --out DIR"),
        (["--out", "x", "--no-wheels"], "--no-wheels and --no-data go with --bundle"),
        (["--tiny", "--out", "x", "--data-source", "a", "--data-dir", "b"], "name two datasets: give one"),
    ],
)
def test_bad_options_fail_with_one_clear_error(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing ran


def test_a_bundle_over_max_bundle_mib_fails_naming_its_size_and_what_to_drop(tmp_path, q75_source, capsys):
    source, bundle = q75_source(tmp_path / "q75", npz_bytes=2 * 2**20), tmp_path / "bundle"
    argv = ["--bundle", str(bundle), "--data-source", str(source), "--no-wheels", "--max-bundle-mib", "1.5"]
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert f"the bundle {bundle} is 2.0 MiB, over --max-bundle-mib 1.5: drop the data (2.0 MiB: --no-data;" in err
    assert "or allow more. It has no bundle.json, so no run uses it." in err and "the wheels" not in err
    assert not (bundle / "bundle.json").exists()
    with pytest.raises(Problem, match="is no bundle: it has no bundle.json"):
        read_bundle(bundle)

    assert main([*argv[:-1], "3"]) == 0  # the same folder again, with room
    assert f"python -m benchmarks.gpu_run --from-bundle {bundle} --out DIR" in capsys.readouterr().out
    assert read_bundle(bundle)["data"]


def test_a_run_from_an_incomplete_bundle_fails_before_it_starts(tmp_path, q75_source, capsys):
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    make_bundle(bundle, q75_source(tmp_path / "q75"), wheels=False)
    (bundle / "data" / "build.py").unlink()
    (bundle / "data" / "meta").write_text("me")  # cut short by the copy
    with pytest.raises(SystemExit) as exit:
        main(["--tiny", "--from-bundle", str(bundle), "--out", str(out)])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert f"the bundle {bundle} is incomplete: no data/build.py, data/meta (2 of 4 bytes); copy it again" in err
    assert not out.exists()


def test_the_data_come_from_the_option_given_else_the_bundle_else_the_defaults(tmp_path, q75_source, monkeypatch):
    source, bundle = q75_source(tmp_path / "q75"), tmp_path / "bundle"
    make_bundle(bundle, source, wheels=False)
    monkeypatch.setattr(gpu_run, "DEFAULT_DATA_SOURCE", tmp_path / "absent")
    monkeypatch.setenv("VITLIB_DATA", str(tmp_path / "cifar"))
    assert choose_data(True, source, None, bundle, True) == Data("synthetic")
    assert choose_data(False, source, None, bundle, True) == Data("q75", source)
    assert choose_data(False, None, tmp_path / "mine", bundle, True) == Data("official", tmp_path / "mine")
    assert choose_data(False, None, None, bundle, True) == Data("q75", bundle / "data")
    assert choose_data(False, None, None, None) == Data("official", tmp_path / "cifar")
    monkeypatch.setattr(gpu_run, "DEFAULT_DATA_SOURCE", source)
    assert choose_data(False, None, None, None) == Data("q75", source)
    with pytest.raises(Problem, match=r"absent lacks cifar100_q75.npz, build.py, meta: --data-source is"):
        choose_data(False, tmp_path / "absent", None, None)


def test_the_q75_copy_is_built_once_by_its_build_script(tmp_path, q75_source):
    source = q75_source(tmp_path / "q75")
    lines = []
    root, what = gpu_run.build_data(Data("q75", source), gpu_run.GPU, tmp_path / "work", lines.append, 60)
    assert (root / "cifar-100-python" / "train").read_text() == "train" and "built" in lines
    assert what == "CIFAR-100 (JPEG q75 copy)"
    lines.clear()
    assert gpu_run.build_data(Data("q75", source), gpu_run.GPU, tmp_path / "work", lines.append, 60)[0] == root
    assert lines == [f"data: reusing {root}"]  # a later run reuses it
    (source / "build.py").write_text("raise SystemExit(4)")
    with pytest.raises(Problem, match=r"build.py failed \(exit status 4; output above\)"):
        gpu_run.build_data(Data("q75", source), gpu_run.GPU, tmp_path / "elsewhere", lines.append, 60)


def test_a_tree_without_git_takes_its_commit_from_the_bundle(tmp_path, monkeypatch):
    bundle = tmp_path / "bundle"
    make_bundle(bundle, None, wheels=False)
    manifest = {**read_bundle(bundle), "commit": "abc123"}
    args = argparse.Namespace(work=tmp_path / "work", from_bundle=bundle, minutes=2.5, out=tmp_path / "out")
    lines: list[str] = []

    def setup(commit):
        monkeypatch.setattr(gpu_run, "tree_commit", lambda folder: commit)
        run = gpu_run.Run(args, gpu_run.TINY, Data("synthetic"), manifest, lines.append, [])
        run.setup()
        return run

    assert setup(None).commit == "abc123"
    assert setup("def456").commit == "def456"  # the tree at hand, when git knows it
    assert "note: the bundle was made at abc123; this tree is at def456" in lines


def test_the_bundled_wheels_are_installed_and_importable(tmp_path, monkeypatch):
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
    installed = gpu_run.install_wheels(wheels, tmp_path / "site", lambda line: None)
    assert installed == ["gpurun_probe"]
    import gpurun_probe

    assert gpurun_probe.VALUE == 42 and Path(gpurun_probe.__file__).parent == tmp_path / "site"
