"""``python -m benchmarks.gpu_run``: the tiny mode runs every stage on a CPU (so the GPU run cannot rot
unnoticed); a stage over its time limit is killed whole; a bundle packs the wheels, the data and the
commit, fails over ``--max-bundle-mib``, and a run refuses an incomplete one before it starts."""

from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from pathlib import Path

import pytest

from benchmarks import gpu_run
from benchmarks.gpu_run import Data, Problem, choose_data, main, make_bundle, read_bundle, run_child, wheels_to_install

STAGES = ["setup", "bench", "train", "record", "test"]
# A stand-in for the q75 copy's build.py: the same command line, the same layout written.
BUILD_PY = (
    "import pathlib, sys\nfolder = pathlib.Path(sys.argv[1], 'cifar-100-python')\nfolder.mkdir(parents=True)\n"
    "for name in ('train', 'test', 'meta'):\n    (folder / name).write_text(name)\nprint('built')\n"
)


def data_source(folder: Path, npz_bytes: int = 100) -> Path:
    folder.mkdir(parents=True)
    with open(folder / "cifar100_q75.npz", "wb") as f:
        f.truncate(npz_bytes)  # sparse: nothing is written
    (folder / "build.py").write_text(BUILD_PY)
    (folder / "meta").write_text("meta")
    return folder


def fake_fetch(spec: str, folder: Path) -> None:
    """What ``pip download`` leaves: one wheel named after the package and version."""
    name, version = spec.split("==")
    (folder / f"{gpu_run.wheel_name(name)}-{version}-py3-none-any.whl").write_bytes(b"wheel")


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


def test_only_wheels_of_missing_packages_are_installed(tmp_path):
    for name in ("pytest-9.0.3-py3-none-any.whl", "surely_not_installed_here-1.0-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    todo, present = wheels_to_install(tmp_path)
    assert [w.name for w in todo] == ["surely_not_installed_here-1.0-py3-none-any.whl"]
    assert [p.split()[0] for p in present] == ["pytest"]


def test_a_bundle_holds_the_wheels_the_data_and_the_commit(tmp_path, monkeypatch):
    source, bundle = data_source(tmp_path / "q75"), tmp_path / "bundle"
    monkeypatch.setattr(gpu_run, "fetch_wheel", fake_fetch)
    (bundle / "wheels").mkdir(parents=True)
    (bundle / "wheels" / "jsonargparse-0.1-py3-none-any.whl").write_bytes(b"old")  # another version: replaced

    manifest = make_bundle(bundle, source)
    wheels = sorted(p.name.split("-")[0] for p in (bundle / "wheels").iterdir())
    assert wheels == sorted(gpu_run.wheel_name(p) for p in gpu_run.BUNDLED_PACKAGES) == sorted(manifest["packages"])
    assert not (bundle / "wheels" / "jsonargparse-0.1-py3-none-any.whl").exists()
    for name in gpu_run.DATA_FILES:
        assert (bundle / "data" / name).read_bytes() == (source / name).read_bytes()
    assert manifest["data"] and manifest["commit"] == gpu_run.code_commit()
    assert read_bundle(bundle) == {k: v for k, v in manifest.items() if k != "mib"}
    listed = {f"data/{name}" for name in gpu_run.DATA_FILES} | {f"wheels/{p.name}" for p in (bundle / "wheels").iterdir()}
    assert set(manifest["files"]) == listed

    # Made again without wheels or data, it holds neither (nor lists them).
    again = make_bundle(bundle, None, wheels=False)
    assert again["files"] == {} and again["packages"] == [] and not again["data"]
    assert sorted(p.name for p in bundle.iterdir()) == ["bundle.json"]


def test_bundling_names_what_is_missing_or_in_the_way(tmp_path):
    (tmp_path / "q75").mkdir()
    (tmp_path / "q75" / "meta").write_text("")
    with pytest.raises(Problem, match=r"q75 lacks cifar100_q75.npz, build.py: --data-source is the folder"):
        make_bundle(tmp_path / "bundle", tmp_path / "q75", wheels=False)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("")
    with pytest.raises(Problem, match="holds thesis.tex, which no bundle does: give a new or empty folder"):
        make_bundle(tmp_path / "notes", None, wheels=False)
    assert (tmp_path / "notes" / "thesis.tex").exists()


def test_a_bundle_over_max_bundle_mib_fails_naming_its_size_and_what_to_drop(tmp_path, capsys):
    source, bundle = data_source(tmp_path / "q75", npz_bytes=2 * 2**20), tmp_path / "bundle"
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


def test_a_run_from_an_incomplete_bundle_fails_before_it_starts(tmp_path, capsys):
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    make_bundle(bundle, data_source(tmp_path / "q75"), wheels=False)
    (bundle / "data" / "build.py").unlink()
    (bundle / "data" / "meta").write_text("me")  # cut short by the copy
    with pytest.raises(SystemExit) as exit:
        main(["--tiny", "--from-bundle", str(bundle), "--out", str(out)])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert f"the bundle {bundle} is incomplete: no data/build.py, data/meta (2 of 4 bytes); copy it again" in err
    assert not out.exists()


def test_the_data_come_from_the_option_given_else_the_bundle_else_the_defaults(tmp_path, monkeypatch):
    source, bundle = data_source(tmp_path / "q75"), tmp_path / "bundle"
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


def test_the_q75_copy_is_built_once_by_its_build_script(tmp_path):
    source = data_source(tmp_path / "q75")
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
        monkeypatch.setattr(gpu_run, "code_commit", lambda: commit)
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
