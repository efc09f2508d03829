"""``python -m benchmarks.gpu_run``: what issue 11 asks of a lent GPU, in one command with a hard time limit.

Here, on any machine with the project's venv and the workplace's ``../shared``::

    python -m benchmarks.gpu_run --prepare       # fills .dev/gpurun/ (git-ignored), prints the device call

On the GPU machine, with ``.dev/gpurun`` carried::

    python3 -m benchmarks.gpu_run --out $OUT

1. installs the carried wheels of the packages the GPU image lacks, and builds CIFAR-100 (JPEG q75
   copy) from the carried npz with its own ``build.py``;
2. runs ``python -m benchmarks.bench`` (vitlib's fast recipe against timm and vit-pytorch);
3. trains ``configs/fast.yaml`` on those data for as many epochs as fit, planned from the
   benchmark's images/s and rounded down to whole learning-rate cycles; a :class:`Deadline`
   callback ends training at an epoch end before the stop time if the plan was too hopeful. The
   run is recorded with :func:`vitlib.lab.records.record_run` into ``$OUT/results``, then its last
   checkpoint is evaluated by ``python -m vitlib test`` on the test split;
4. prints a short table, last.

Every stage is a child process with its own time limit; one that overruns is killed with its whole
process group (DataLoader and compile workers), so the command ends within ``--budget`` seconds
(540 by default: one retry still fits in a 15-minute lease). ``--tiny`` runs the same stages on a
CPU in under a minute (synthetic images, a tiny model, two benchmark rows); tests/test_gpurun.py
runs it. ``$OUT`` receives ``gpurun.log``, ``summary.json``, the benchmark's JSON under
``benchmarks/`` and what ``record_run`` writes under ``results/``; the table warns about anything
there that the device tool would not bring back (8 files, 16 MiB each, 2 folders deep).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from vitlib.support.timed import cycle_epochs, plan_epochs

__all__ = ["check_out", "main", "prepare", "run_child", "wheels_to_install"]

REPO = Path(__file__).resolve().parents[1]
CARRY = REPO / ".dev" / "gpurun"  # filled by --prepare, carried to the GPU machine (git-ignored)
SHARED_DATA = REPO.parent / "shared" / "data" / "cifar100-q75"
DATA_FILES = ("cifar100_q75.npz", "build.py", "meta")
RECIPE = REPO / "configs" / "fast.yaml"
# Not in the GPU image (device notes, KINDS.md's package list): LightningCLI's jsonargparse with its
# [signatures] extra, and the benchmark's vit-pytorch. All pure Python; carried at the versions of
# this venv, which requirements.txt pins.
CARRIED_PACKAGES = ("jsonargparse", "docstring-parser", "typeshed-client", "vit-pytorch")
DEVICE_CALL = 'run(command="python3 -m benchmarks.gpu_run --out $OUT", carry=[".dev/gpurun"], timeout_s=600)'
TRAVEL_LIMIT = 64 * 2**20  # what travels to the device machine: tree + carried paths
OUT_FILES, OUT_FILE_BYTES, OUT_DEPTH = 8, 16 * 2**20, 2  # what comes back from its $OUT


@dataclass(frozen=True)
class Mode:
    """The time plan. The stages' own limits are caps; each also gets no more than what is left."""

    tiny: bool
    budget_s: float
    bench_max_s: float  # the benchmark's cap
    after_bench_s: float  # kept from the benchmark for training, testing and recording
    startup_s: float  # fit's start before its first epoch: imports, data to the device, compiling
    after_train_s: float  # kept from training for the test run, the record and the table
    n_train: int
    n_test: int


GPU = Mode(False, budget_s=540, bench_max_s=270, after_bench_s=210, startup_s=75, after_train_s=60,
           n_train=50_000, n_test=10_000)  # fmt: skip
TINY = Mode(True, budget_s=150, bench_max_s=90, after_bench_s=50, startup_s=15, after_train_s=30,
            n_train=256, n_test=128)  # fmt: skip
TINY_DATA = ("--data.batch_size", "32", "--data.num_workers", "0")
TINY_FIT = ("--model.preset", "vit_tiny", "--model.compile", "false", *TINY_DATA, "--trainer.log_every_n_steps", "1")


def epoch_estimate(bench: dict[str, Any] | None, n_train: int, n_test: int) -> float | None:
    """Seconds per epoch (training, validation, checkpoints) from the benchmark's default row."""
    row = next((r for r in (bench or {}).get("rows", []) if r.get("default")), None)
    if not row or not row.get("images_per_s"):
        return None
    train = n_train / row["images_per_s"]
    validate = train * n_test / n_train / 3  # forward only: about a third of a training step's work
    return 1.1 * (train + validate) + 0.5  # + Lightning's loop and two checkpoint writes


# ----------------------------------------------------------------------------------------------
# Child processes and the log


class Log:
    """Lines to stdout and to ``gpurun.log``: the device tool returns only the output's tail."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a", buffering=1)
        self.lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self.lock:
            print(line, flush=True)
            self.file.write(line + "\n")


def kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the child's process group, then SIGKILL to whatever is left of it (after 10 s at most)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


def run_child(argv: list[str], timeout: float, log: Log, env: dict[str, str] | None = None) -> tuple[int | None, float]:
    """(exit status, seconds) of ``argv`` run in the repository, its output streamed to ``log``.

    It gets a process group of its own, killed whole after ``timeout`` seconds (status None). Not a
    new session: the device tool still ends it if this process is itself killed.
    """
    log(f"$ {shlex.join(argv)}    [limit {max(timeout, 0):.0f} s]")
    if timeout < 1:
        log("not started: no time left")
        return None, 0.0
    start = time.time()
    group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", **group)  # fmt: skip
    pump = threading.Thread(target=lambda: [log(line.rstrip("\n")) for line in proc.stdout], daemon=True)
    pump.start()
    try:
        rc: int | None = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log(f"time limit of {timeout:.0f} s reached: killing it")
        rc = None
    finally:  # also on SIGTERM / Ctrl-C of this process: no orphaned training holds the GPU
        kill_group(proc)
    pump.join(10)
    return rc, time.time() - start


def child_env(site: Path | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("VITLIB_QUICK", None)  # the benchmark refuses it; these runs choose their own data
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    return env


# ----------------------------------------------------------------------------------------------
# Step 1: wheels and data


def wheel_name(name: str) -> str:
    """A distribution name as wheel file names spell it."""
    return re.sub(r"[-_.]+", "_", name).lower()


def wheels_to_install(folder: Path) -> tuple[list[Path], list[str]]:
    """(the wheels in ``folder`` whose package is not installed, "name version" of those that are)."""
    todo, present = [], []
    for wheel in sorted(folder.glob("*.whl")):
        name = wheel.name.split("-")[0]
        try:
            present.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            todo.append(wheel)
    return todo, present


def install_wheels(folder: Path, site: Path, log: Log) -> list[str]:
    """Installs what the image lacks into ``site`` and puts it on this process's path; their names."""
    todo, present = wheels_to_install(folder)
    if present:
        log(f"already installed, not from the carried wheels: {', '.join(present)}")
    if not todo:
        return []
    argv = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
            "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, todo)]  # fmt: skip
    rc, _ = run_child(argv, 120, log)
    if rc != 0:
        raise RuntimeError(f"installing the carried wheels failed (exit status {rc}); see the pip output above")
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    return [w.name.split("-")[0] for w in todo]


def build_data(mode: Mode, work: Path, log: Log) -> tuple[Path, str]:
    """(root for ``--data.data_dir``, what the data are). The built folder is reused by a retry."""
    from vitlib.support.cifar import FILES, FOLDER, make_synthetic_cifar100

    if mode.tiny:
        root = make_synthetic_cifar100(work / "synthetic-tiny", mode.n_train, mode.n_test)
        return root, f"synthetic images in the CIFAR-100 layout ({mode.n_train} train, {mode.n_test} test)"
    root = work / "cifar100-q75"
    what = "CIFAR-100 (JPEG q75 copy)"
    if all((root / FOLDER / name).is_file() for name in FILES):  # build.py writes each file atomically
        log(f"data: reusing {root}")
        return root, what
    carried = CARRY / "cifar100-q75"
    missing = [name for name in DATA_FILES if not (carried / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{carried} lacks {', '.join(missing)}: run `python -m benchmarks.gpu_run --prepare` "
                                "before the call and carry .dev/gpurun")  # fmt: skip
    rc, _ = run_child([sys.executable, str(carried / "build.py"), str(root)], 180, log)
    if rc != 0:
        raise RuntimeError(f"{carried / 'build.py'} failed (exit status {rc}); see its output above")
    return root, what


# ----------------------------------------------------------------------------------------------
# Steps 2 and 3


def loggers(save_dir: Path, name: str) -> str:
    """The CLI's two loggers under ``save_dir/name``, so that the run folder is known in advance."""
    init = {"save_dir": str(save_dir), "name": name}
    return json.dumps([{"class_path": f"lightning.pytorch.loggers.{cls}", "init_args": init}
                       for cls in ("TensorBoardLogger", "CSVLogger")])  # fmt: skip


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def git_or_carried_commit() -> str | None:
    """The commit of this tree: from git, else from --prepare's note (the device copy has no .git)."""
    from benchmarks.bench import git_commit

    commit, dirty = git_commit()
    if commit:
        return commit + ("-dirty" if dirty else "")
    note = CARRY / "commit.txt"
    return note.read_text().strip() if note.is_file() else None


def bench_result(bench: dict[str, Any]) -> str:
    """One line: the default row's speed, MFU and memory, its ratios to the baselines, failures."""
    fast = next((r for r in bench["rows"] if r["default"]), None)
    parts = [f"{f['name']} FAILED" for f in bench["failed"]]
    if fast is not None:
        mfu, mem = fast.get("mfu"), fast.get("peak_mem_gb")
        line = f"{fast['name']} {fast['images_per_s']:,.0f} img/s"
        line += "" if mfu is None else f", MFU {mfu:.1%}"
        line += "" if mem is None else f", {mem:.1f} GB"
        ratios = [f"{c['speedup']}x {c['baseline']}" for c in bench["comparisons"] if c["row"] == fast["name"]]
        parts[:0] = [line, *ratios]
    return "; ".join(parts) or "no rows"


@dataclass
class Stage:
    name: str
    status: str = "skipped"  # ok, killed, failed (...), skipped; "running" until it ends
    seconds: float = 0.0
    result: str = ""


def status_of(rc: int | None, wrote: Any, what: str) -> str:
    """A child's status; one that exits 0 without writing what it should have is a failure too."""
    if rc == 0:
        return "ok" if wrote else f"failed (no {what})"
    return "killed" if rc is None else f"failed ({rc})"


class Run:
    """The stages of one call, in order, each appended to ``stages``; ``summary`` collects the details."""

    def __init__(self, args: argparse.Namespace, mode: Mode, log: Log, stages: list[Stage]) -> None:
        self.args, self.mode, self.log, self.stages = args, mode, log, stages
        self.start = time.time()
        self.deadline = self.start + args.budget
        self.out: Path = args.out
        self.summary: dict[str, Any] = {"mode": "tiny" if mode.tiny else "gpu", "budget_s": args.budget}

    def left(self) -> float:
        return self.deadline - time.time()

    def stage(self, name: str) -> Stage:
        self.stages.append(Stage(name, status="running"))
        self.log(f"=== {name} ({self.left():.0f} s left)")
        return self.stages[-1]

    def all(self) -> dict[str, Any]:
        self.setup()
        bench = None if self.args.skip_bench else self.bench()
        if self.args.skip_bench:
            self.stages.append(Stage("bench", result="--skip-bench"))
        if self.args.skip_train:
            self.stages.append(Stage("train", result="--skip-train"))
        else:
            self.train(bench)
        return self.summary

    def setup(self) -> None:
        """Step 1, wheels and data: nothing else runs without them."""
        st = self.stage("setup")
        work = Path(self.args.work)
        work.mkdir(parents=True, exist_ok=True)
        site = work / "site"
        installed = install_wheels(CARRY / "wheels", site, self.log) if (CARRY / "wheels").is_dir() else []
        self.env = child_env(site if installed else None)
        self.data_root, data = build_data(self.mode, work, self.log)
        self.commit = git_or_carried_commit()
        self.runs = Path(tempfile.mkdtemp(prefix="runs-", dir=work))  # fresh: the run folders are known
        st.status, st.seconds = "ok", time.time() - self.start
        st.result = f"installed {', '.join(installed) or 'nothing'}; data: {data}"
        self.summary.update(installed=installed, data=data, commit=self.commit)

    def bench(self) -> dict[str, Any] | None:
        """Step 2: ``python -m benchmarks.bench``; its results, or None."""
        st = self.stage("bench")
        folder = self.out / "benchmarks"
        argv = [sys.executable, "-m", "benchmarks.bench", "--out", str(folder)]
        if self.mode.tiny:
            argv += ["--tiny", "--workers", "0", "--rows", "vitlib-vit-fast,timm-vit"]
        if self.commit and not (REPO / ".git").exists():
            argv += ["--commit", self.commit]
        began = time.time()
        limit = min(self.mode.bench_max_s, self.left() - self.mode.after_bench_s)
        rc, st.seconds = run_child(argv, limit, self.log, self.env)
        new = [p for p in folder.glob("*.json") if p.stat().st_mtime >= began]  # not an earlier call's
        files = sorted(new, key=lambda p: p.stat().st_mtime)
        bench = read_json(files[-1]) if files else None
        st.status = status_of(rc, bench, "results file")
        if bench:
            st.result = bench_result(bench)
            self.summary["bench"] = {
                "file": str(files[-1].relative_to(self.out)),
                "images_per_s": {r["name"]: r["images_per_s"] for r in bench["rows"]},
                "comparisons": bench["comparisons"],
                "failed": bench["failed"],
            }
        return bench

    def data_args(self) -> list[str]:
        return ["--data.data_dir", str(self.data_root), "--data.verify_md5", "false", "--data.download", "false"]

    def train(self, bench: dict[str, Any] | None) -> None:
        """Step 3: fit as many epochs as fit, record the run, test its last checkpoint."""
        st = self.stage("train")
        recipe = yaml.safe_load(RECIPE.read_text())
        max_epochs = self.args.max_epochs or (2 if self.mode.tiny else recipe["trainer"]["max_epochs"])
        cycle = cycle_epochs(recipe["model"]["schedule"]["half_cycle_epochs"])
        stop_at = self.deadline - self.mode.after_train_s
        epoch_s = epoch_estimate(bench, self.mode.n_train, self.mode.n_test)
        epochs, half_cycle = plan_epochs(stop_at - time.time() - self.mode.startup_s, epoch_s, max_epochs, cycle)
        cycle = cycle if half_cycle is None else epochs
        estimate = "no estimate" if epoch_s is None else f"about {epoch_s:.1f} s each"
        left = stop_at - time.time()
        self.log(f"plan: {epochs} epochs ({estimate}, LR cycle {cycle} epochs), stop within {left:.0f} s")
        deadline = {"class_path": "vitlib.support.timed.Deadline", "init_args": {"stop_at": stop_at, "cycle_epochs": cycle}}
        fit = [sys.executable, "-m", "vitlib", "fit", "--config", str(RECIPE.relative_to(REPO)), *self.data_args(),
               "--trainer.max_epochs", str(epochs), "--trainer.enable_progress_bar", "false",
               "--trainer.logger", loggers(self.runs, "fit"), f"--trainer.callbacks+={json.dumps(deadline)}",
               *(["--model.schedule.half_cycle_epochs", str(half_cycle)] if half_cycle is not None else []),
               *(TINY_FIT if self.mode.tiny else [])]  # fmt: skip
        # Grace past stop_at for an epoch end the estimate missed; the test keeps half its share.
        rc, st.seconds = run_child(fit, stop_at + self.mode.after_train_s / 2 - time.time(), self.log, self.env)
        run_dir = self.runs / "fit" / "version_0"
        fitted = read_json(run_dir / "metrics.json")
        st.status = status_of(rc, fitted, "metrics.json")
        self.summary["plan"] = {"epochs": epochs, "epoch_s_estimate": epoch_s, "half_cycle_epochs": half_cycle,
                                "stop_at_s": round(stop_at - self.start, 1)}  # fmt: skip
        if fitted:
            # metrics.json's epoch is Lightning's current_epoch at the fit's end: the epochs completed.
            st.result = f"{fitted['epoch']}/{epochs} epochs; last validation (the test set) top-1 {fitted['top1']:.2%}"
            keys = ("dataset", "images", "loss", "top1", "top5", "epoch", "global_step")
            self.summary["fit"] = {"argv": fit[1:], **{k: fitted.get(k) for k in keys}}
            self.record(run_dir, bench)
        self.test(run_dir / "checkpoints" / "last.ckpt")

    def record(self, run_dir: Path, bench: dict[str, Any] | None) -> None:
        st = self.stage("record")
        gpu = bench["gpu"] if bench else gpu_name()
        date = datetime.now(timezone.utc)
        name = self.args.name or ("tiny-synthetic-cpu" if self.mode.tiny else f"vit-fast-{slug(gpu)}-{date:%Y-%m-%d}")
        try:
            path = record(run_dir, name, self.out / "results", self.commit)
        except Exception as err:  # noqa: BLE001 - the test run still goes on; the table says what failed
            self.log(traceback.format_exc().rstrip())
            st.status, st.result = "failed", f"{type(err).__name__}: {err}"
            return
        st.status = "ok"
        files = sorted(p for p in (self.out / "results").rglob("*") if p.is_file())
        st.result = ", ".join(str(p.relative_to(self.out)) for p in files)
        self.summary["record"] = str(path.relative_to(self.out))

    def test(self, checkpoint: Path) -> None:
        st = self.stage("test")
        if not checkpoint.is_file():
            st.status, st.result = "skipped", f"no {checkpoint.name}"
            return
        test = [sys.executable, "-m", "vitlib", "test", "--config", str(RECIPE.relative_to(REPO)), *self.data_args(),
                "--ckpt_path", str(checkpoint), "--trainer.enable_progress_bar", "false",
                "--trainer.logger", loggers(self.runs, "test"), *(TINY_DATA if self.mode.tiny else [])]  # fmt: skip
        # Eager: compiling the evaluation graph would take longer than the 10,000 images do, and
        # the checkpoint's own settings (compile: true) win over --model.compile.
        rc, st.seconds = run_child(test, self.left() - 5, self.log, {**self.env, "TORCH_COMPILE_DISABLE": "1"})
        tested = read_json(self.runs / "test" / "version_0" / "metrics.json")
        st.status = status_of(rc, tested, "metrics.json")
        if tested:
            st.result = (f"top-1 {tested['top1']:.2%}, top-5 {tested['top5']:.2%}, loss {tested['loss']:.3f} "
                         f"on {tested['samples']} images")  # fmt: skip
            keys = ("dataset", "images", "split", "loss", "top1", "top5", "samples")
            self.summary["test"] = {k: tested.get(k) for k in keys}


def record(run_dir: Path, name: str, folder: Path, commit: str | None) -> Path:
    """``record_run``, with the commit filled in where it could not read one (the device copy has no .git)."""
    from vitlib.lab.records import record_run
    from vitlib.support.files import write_json_atomic

    path = record_run(run_dir, name, folder)
    payload = json.loads(path.read_text())
    if commit and str(payload.get("commit", "")).startswith("unknown"):
        write_json_atomic(path, {**payload, "commit": commit})
    return path


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# ----------------------------------------------------------------------------------------------
# Step 4 and the limits of $OUT


def check_out(out: Path) -> list[str]:
    """What under ``out`` would not come back from the device machine (its limits on $OUT)."""
    files = sorted(p for p in out.rglob("*") if p.is_file())
    problems = [f"{len(files)} files: only {OUT_FILES} come back"] if len(files) > OUT_FILES else []
    for path in files:
        rel = path.relative_to(out)
        if path.stat().st_size > OUT_FILE_BYTES:
            problems.append(f"{rel}: {path.stat().st_size / 2**20:.1f} MiB, over {OUT_FILE_BYTES // 2**20} MiB")
        if len(rel.parts) - 1 > OUT_DEPTH:
            problems.append(f"{rel}: more than {OUT_DEPTH} folders down")
        if not all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in rel.parts):
            problems.append(f"{rel}: a name with characters other than letters, digits, '.', '_' and '-'")
    return problems


def table(stages: list[Stage]) -> str:
    width = max(len("status"), *(len(s.status) for s in stages))
    lines = [f"{'stage':<7} {'status':<{width}} {'s':>5}  result"]
    lines += [f"{s.name:<7} {s.status:<{width}} {s.seconds:>5.0f}  {s.result}" for s in stages]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# --prepare: here, before the device call


def download_wheels(folder: Path) -> list[str]:
    """Wheels of CARRIED_PACKAGES at this venv's versions, for the GPU image's Python; one version each."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for package in CARRIED_PACKAGES:
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            raise FileNotFoundError(f"{package} is not installed here: run `make install` first, so that "
                                    "the versions carried are those requirements.txt pins") from None  # fmt: skip
        stem = f"{wheel_name(package)}-{version}-"
        for old in folder.glob(f"{wheel_name(package)}-*.whl"):
            if not old.name.startswith(stem):  # two versions of one package stop the whole install
                old.unlink()
        if not any(folder.glob(f"{stem}*.whl")):
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                            "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux2014_x86_64",
                            "-d", str(folder), f"{package}=={version}"], check=True)  # fmt: skip
        names.append(f"{package}=={version}")
    return names


def travelling_bytes(carried: Path) -> int:
    """Bytes that a device call sends: tracked and untracked-not-ignored files, plus ``carried``."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")  # fmt: skip
    tree = sum((REPO / p).stat().st_size for p in listed if p and (REPO / p).is_file())
    return tree + sum(p.stat().st_size for p in carried.rglob("*") if p.is_file())


def prepare(shared: Path, carry: Path = CARRY, wheels: bool = True) -> dict[str, Any]:
    """Fills ``carry``: the data files, the wheels (``wheels=False``: skipped), the commit."""
    missing = [name for name in DATA_FILES if not (shared / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{shared} lacks {', '.join(missing)}: pass --shared, the folder holding "
                                f"{', '.join(DATA_FILES)} (../shared/data/cifar100-q75 in this workplace)")  # fmt: skip
    data = carry / "cifar100-q75"
    data.mkdir(parents=True, exist_ok=True)
    for name in DATA_FILES:
        target = data / name
        if not target.is_file() or target.stat().st_size != (shared / name).stat().st_size:
            shutil.copyfile(shared / name, target)
    packages = download_wheels(carry / "wheels") if wheels else []
    commit = git_or_carried_commit()
    (carry / "commit.txt").write_text(f"{commit}\n")
    return {"data": str(data), "wheels": packages, "commit": commit}


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="where every result goes ($OUT on the device machine)")
    parser.add_argument("--tiny", action="store_true", help="the same stages on a CPU in under a minute")
    parser.add_argument("--budget", type=float, default=None, help="seconds for everything (default 540; tiny: 150)")
    parser.add_argument("--max-epochs", type=int, default=None, help="cap (default: fast.yaml's; tiny: 2)")
    parser.add_argument("--name", default=None, help="the run's record name (default: vit-fast-<gpu>-<date>)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vitlib-gpurun",
                        help="scratch: installed wheels, data, run folders (default: %(default)s)")  # fmt: skip
    parser.add_argument("--skip-bench", action="store_true", help="for a retry: train only")
    parser.add_argument("--skip-train", action="store_true", help="for a retry: benchmark only")
    parser.add_argument("--prepare", action="store_true", help="here, before the device call: fill .dev/gpurun")
    parser.add_argument("--shared", type=Path, default=SHARED_DATA, help="with --prepare: the q75 copy's folder")
    parser.add_argument("--no-wheels", action="store_true", help="with --prepare: do not download the wheels")
    args = parser.parse_args(argv)

    if args.prepare:
        try:
            done = prepare(args.shared, CARRY, wheels=not args.no_wheels)
            size = travelling_bytes(CARRY)
        except (FileNotFoundError, subprocess.CalledProcessError) as err:
            parser.exit(2, f"benchmarks.gpu_run: error: {err}\n")
        print(f"prepared {CARRY}: data, wheels {', '.join(done['wheels']) or '(skipped)'}, commit {done['commit']}")
        print(f"a device call sends {size / 2**20:.1f} MiB (limit {TRAVEL_LIMIT // 2**20} MiB)")
        if size > TRAVEL_LIMIT:
            parser.exit(2, "benchmarks.gpu_run: error: over the limit: ignore or carry less\n")
        print(f"the call:\n  {DEVICE_CALL}")
        return 0
    if args.out is None:
        parser.error("--out is required (or --prepare)")
    mode = TINY if args.tiny else GPU
    args.budget = args.budget or mode.budget_s
    if not mode.tiny:
        import torch

        if not torch.cuda.is_available():
            parser.exit(2, "benchmarks.gpu_run: error: no CUDA GPU here; on a CPU use --tiny\n")

    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / "gpurun.log")
    # SIGTERM (a timeout around this command) ends it through the finally blocks that kill children.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stages: list[Stage] = []
    started = time.time()
    run = Run(args, mode, log, stages)
    try:
        summary = run.all()
    except Exception as err:  # noqa: BLE001 - a stage broke: say which, still write the summary and table
        log(traceback.format_exc().rstrip())
        if not stages or stages[-1].status != "running":
            stages.append(Stage("error"))
        stages[-1].status, stages[-1].result = "failed", f"{type(err).__name__}: {err}"
        summary = {**run.summary, "error": stages[-1].result}
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary.update(command=shlex.join(["python", "-m", "benchmarks.gpu_run", *(argv if argv is not None else sys.argv[1:])]),
                   seconds=round(time.time() - started, 1), stages=[vars(s) for s in stages])  # fmt: skip
    from vitlib.support.files import write_json_atomic

    write_json_atomic(args.out / "summary.json", summary)
    problems = check_out(args.out)
    if problems:  # rewritten in place: the file count does not change
        write_json_atomic(args.out / "summary.json", {**summary, "out_problems": problems})
    log(f"=== benchmarks.gpu_run: {summary['seconds']:.0f} s of {args.budget:.0f}, results in {args.out}")
    log(table(stages))
    for problem in problems:
        log(f"WILL NOT COME BACK: {problem}")
    log.file.close()
    return 0 if all(s.status in ("ok", "skipped") for s in stages) and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
