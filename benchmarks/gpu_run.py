"""``python -m benchmarks.gpu_run``: the whole GPU measurement in one command that stops itself in time.

For a Colab runtime, a rented GPU or a cluster node: in a checkout of the repository, with the
project installed (``pip install -e ".[bench]"``)::

    python -m benchmarks.gpu_run --out DIR                  # within 9 minutes; --minutes M for more

On a machine without internet access, pack a bundle first where there is access (and a checkout,
and the JPEG q75 copy of CIFAR-100, ``--data-source``), copy it to the GPU machine beside the
checkout, and run from it::

    python -m benchmarks.gpu_run --bundle BUNDLE [--data-source Q75] [--max-bundle-mib N]
    python -m benchmarks.gpu_run --from-bundle BUNDLE --out DIR

What a bundle holds (wheels, the data, the commit of the code, ``bundle.json`` listing them) and
how it is packed and checked is :mod:`benchmarks.gpu_bundle`; ``--max-bundle-mib`` fails the
bundling when the folder is larger. This module is the command line and the timed stages of a run:

1. setup: installs the bundle's wheels that are missing (into ``--work``, not the environment), and
   gets the data: CIFAR-100 (JPEG q75 copy) built by the ``build.py`` of ``--data-source`` or of the
   bundle, else the official CIFAR-100 in ``--data-dir`` (downloaded there when absent); an option
   given wins over the bundle's data, and those over the default ``--data-source``;
2. bench: ``python -m benchmarks.bench`` (vitlib's fast recipe against timm and vit-pytorch);
3. train: ``configs/fast.yaml`` for as many epochs as fit, planned from the benchmark's images/s
   and rounded down to whole learning-rate cycles; a :class:`Deadline` callback ends training at
   an epoch end before the stop time if the plan was too hopeful. Precision and compile are the
   machine's (:func:`vitlib.support.hardware.choose`: bf16 from compute capability 8.0, float16
   below it, torch.compile only where measured to win), as for every run; the log and
   ``summary.json`` name them, and what really ran (``fit.ran``);
4. record: :func:`vitlib.lab.results.records.record_run` writes the record and the weights under
   ``DIR/results``;
5. test: ``python -m vitlib test`` evaluates the last checkpoint on the test split;

and a table of the stages, last. Every stage is a child process with its own time limit; one that
overruns is killed with its whole process group (DataLoader and compile workers), so the command
ends within ``--minutes``. ``--tiny`` runs the same stages on a CPU in about a minute (synthetic
images, a tiny model, two benchmark rows); CI runs it (tests/test_gpu_run.py). ``DIR`` receives
``gpu_run.log`` (all output), ``summary.json`` (plan, timings, metrics), the benchmark's JSON
under ``benchmarks/`` and the record with its weights under ``results/``. The exit status is 0
when every stage passed, 1 when one failed, 2 for bad input.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
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

from benchmarks.gpu_bundle import DATA_FILES, Problem, check_data_source, make_bundle, read_bundle, wheels_to_install
from vitlib.support.files import read_json, write_json_atomic
from vitlib.support.provenance import gpu_name, slug, tree_commit
from vitlib.support.run_folder import METRICS_JSON, final_metrics, last_checkpoint, version_folder
from vitlib.support.timed import plan_epochs, recipe_schedule

__all__ = ["Problem", "choose_data", "main", "run_child"]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_SOURCE = REPO.parent / "shared" / "data" / "cifar100-q75"  # used when it exists
RECIPE = REPO / "configs" / "fast.yaml"
FIT_NEEDS = ("jsonargparse", "docstring-parser", "typeshed-client")  # LightningCLI's; the benchmark's vit-pytorch is optional


@dataclass(frozen=True)
class Mode:
    """The time plan. The stages' own limits are caps; each also gets no more than what is left."""

    tiny: bool
    minutes: float  # the default --minutes
    bench_max_s: float  # the benchmark's cap
    after_bench_s: float  # kept from the benchmark for training, testing and recording
    startup_s: float  # fit's start before its first epoch: imports, data to the device, compiling
    after_train_s: float  # kept from training for the test run, the record and the table
    n_train: int
    n_test: int


GPU = Mode(False, minutes=9, bench_max_s=270, after_bench_s=210, startup_s=75, after_train_s=60,
           n_train=50_000, n_test=10_000)  # fmt: skip
TINY = Mode(True, minutes=2.5, bench_max_s=90, after_bench_s=50, startup_s=15, after_train_s=30,
            n_train=256, n_test=128)  # fmt: skip
TINY_DATA = (("data.batch_size", 32), ("data.num_workers", 0))
TINY_FIT = (("model.preset", "vit_tiny"), ("model.compile", False), *TINY_DATA, ("trainer.log_every_n_steps", 1))
DATA_STEP_S = 180  # building the q75 copy takes ~30 s; downloading the official release, ~160 MB


def epoch_estimate(bench: dict[str, Any] | None, n_train: int, n_test: int) -> float | None:
    """Seconds per epoch (training, validation, checkpoints) from the benchmark's default row."""
    row = next((r for r in (bench or {}).get("rows", []) if r.get("default")), None)
    if not row or not row.get("images_per_s"):
        return None
    train = n_train / row["images_per_s"]
    validate = train * n_test / n_train / 3  # forward only: about a third of a training step's work
    return train + validate  # plan_epochs adds the margin for Lightning's loop and the checkpoint writes


# ----------------------------------------------------------------------------------------------
# Child processes and the log


class Log:
    """Lines to stdout and to ``gpu_run.log``: a notebook cell or a batch job may keep only part of the output."""

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

    It gets a process group of its own, so that it is killed whole, workers included, after
    ``timeout`` seconds (status None) and when this command is interrupted or terminated.
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


def recipe_runs(data_root: Path, official: bool, runs: Path, tiny: bool, epochs: int, schedule: Any, stop_at: float) -> tuple[Any, Any]:
    """The two :class:`vitlib.lab.results.launch.RunSpec` of the recipe on the CIFAR-100 under ``data_root``
    (md5-checked when ``official``: only the official files have the md5s), logging under ``runs``:
    the fit (``epochs`` with the recipe's ``schedule`` fitted over them, stopped at an epoch end
    before ``stop_at``) and the test of its last checkpoint."""
    from vitlib.lab.results.launch import Data, RunSpec, callback  # imports the CLI: only once the bundle's wheels are installed

    data = Data(data_root, verify_md5=official)
    deadline = callback("vitlib.support.timed.Deadline", stop_at=stop_at, cycle_epochs=schedule.cycle_epochs or 0)
    fit = RunSpec(RECIPE.relative_to(REPO), (
        ("trainer.max_epochs", epochs), ("trainer.enable_progress_bar", False), ("trainer.logger", loggers(runs, "fit")),
        *schedule.options(), *(TINY_FIT if tiny else ()),
    ), data, extra=(deadline,))  # fmt: skip
    test = RunSpec(RECIPE.relative_to(REPO), (
        ("ckpt_path", last_checkpoint(version_folder(runs, 0, "fit"))), ("trainer.enable_progress_bar", False),
        ("trainer.logger", loggers(runs, "test")), *(TINY_DATA if tiny else ()),
    ), data, stage="test")  # fmt: skip
    return fit, test


# ----------------------------------------------------------------------------------------------
# Setup: the bundle's wheels (benchmarks.gpu_bundle packs and checks it) and the packages a fit needs


def install_wheels(folder: Path, site: Path, log: Log) -> list[str]:
    """Installs what is missing into ``site`` and puts it on this process's path; their names."""
    todo, present = wheels_to_install(folder)
    if present:
        log(f"already installed, not from the bundle: {', '.join(present)}")
    if not todo:
        return []
    argv = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
            "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, todo)]  # fmt: skip
    rc, _ = run_child(argv, 120, log)
    if rc != 0:
        raise RuntimeError(f"installing the bundle's wheels failed (exit status {rc}); see the pip output above")
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    return [w.name.split("-")[0] for w in todo]


def missing_packages() -> list[str]:
    missing = []
    for name in FIT_NEEDS:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


# ----------------------------------------------------------------------------------------------
# The data


@dataclass(frozen=True)
class Data:
    """``synthetic``; ``q75``: built by ``folder/build.py``; ``official``: CIFAR-100 in ``folder``, downloaded if absent."""

    kind: str
    folder: Path | None = None


def choose_data(tiny: bool, data_source: Path | None, data_dir: Path | None, bundle: Path | None,
                bundle_has_data: bool = False) -> Data:  # fmt: skip
    """The data of a run: an explicit option wins over the bundle's data, which win over the defaults."""
    from vitlib.support.cifar import default_data_dir

    if data_source is not None and data_dir is not None:
        raise Problem("--data-source and --data-dir name two datasets: give one")
    if tiny:
        return Data("synthetic")
    if data_source is not None:
        return Data("q75", check_data_source(data_source))
    if data_dir is not None:
        return Data("official", data_dir)
    if bundle is not None and bundle_has_data:
        return Data("q75", check_data_source(bundle / "data", "the bundle's data/"))
    if DEFAULT_DATA_SOURCE.is_dir():
        return Data("q75", check_data_source(DEFAULT_DATA_SOURCE, f"{DEFAULT_DATA_SOURCE} (the default --data-source)"))
    return Data("official", default_data_dir())


def build_data(data: Data, mode: Mode, work: Path, log: Log, limit: float) -> tuple[Path, str]:
    """(root for ``--data.data_dir``, what the data are). A built q75 copy is reused by a later run."""
    from vitlib.support.cifar import FILES, FOLDER, make_synthetic_cifar100

    if data.kind == "synthetic":
        root = make_synthetic_cifar100(work / "synthetic-tiny", mode.n_train, mode.n_test)
        return root, f"synthetic images in the CIFAR-100 layout ({mode.n_train} train, {mode.n_test} test)"
    root = work / "cifar100-q75" if data.kind == "q75" else data.folder.expanduser().absolute()
    what = "CIFAR-100 (JPEG q75 copy)" if data.kind == "q75" else "CIFAR-100 (official release)"
    if all((root / FOLDER / name).is_file() for name in FILES):  # both writers write each file atomically
        log(f"data: reusing {root}")
        return root, what
    if data.kind == "q75":
        argv = [sys.executable, str(data.folder / "build.py"), str(root)]
        fix = f"{data.folder / 'build.py'} failed"
    else:
        argv = [sys.executable, "-c", "import sys; from vitlib.support.cifar import ensure_cifar100; "
                "ensure_cifar100(sys.argv[1])", str(root)]  # fmt: skip
        fix = (f"CIFAR-100 could not be put into {root}: without internet access pass --data-source (the q75 copy) "
               "or run from a bundle (--from-bundle)")  # fmt: skip
    rc, _ = run_child(argv, limit, log)
    if rc != 0:
        raise Problem(f"{fix} ({'killed at its time limit' if rc is None else f'exit status {rc}'}; output above)")
    return root, what


# ----------------------------------------------------------------------------------------------
# Benchmark, training, record, test


def loggers(save_dir: Path, name: str) -> str:
    """The CLI's two loggers under ``save_dir/name``, so that the run folder is known in advance."""
    init = {"save_dir": str(save_dir), "name": name}
    return json.dumps([{"class_path": f"lightning.pytorch.loggers.{cls}", "init_args": init}
                       for cls in ("TensorBoardLogger", "CSVLogger")])  # fmt: skip


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
    """The stages of one run, in order, each appended to ``stages``; ``summary`` collects the details."""

    def __init__(self, args: argparse.Namespace, mode: Mode, data: Data, bundle: dict[str, Any] | None, log: Log,
                 stages: list[Stage]) -> None:  # fmt: skip
        self.args, self.mode, self.data, self.bundle, self.log, self.stages = args, mode, data, bundle, log, stages
        self.start = time.time()
        self.deadline = self.start + args.minutes * 60
        self.out: Path = args.out
        self.summary: dict[str, Any] = {"mode": "tiny" if mode.tiny else "gpu", "minutes": args.minutes}

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
        """Wheels and data: nothing else runs without them."""
        st = self.stage("setup")
        work = Path(self.args.work)
        work.mkdir(parents=True, exist_ok=True)
        site = work / "site"
        wheels = self.args.from_bundle / "wheels" if self.bundle else None
        installed = install_wheels(wheels, site, self.log) if wheels and wheels.is_dir() else []
        missing = missing_packages()
        if missing:
            raise Problem(f"not installed: {', '.join(missing)}; install them (`pip install -e \".[bench]\"`), or "
                          "without internet access run from a bundle (--from-bundle)")  # fmt: skip
        self.env = child_env(site if installed else None)
        limit = min(DATA_STEP_S, self.left() - self.mode.after_bench_s)
        self.data_root, data = build_data(self.data, self.mode, work, self.log, limit)
        self.commit = tree_commit(REPO)
        if self.bundle and self.bundle.get("commit"):
            if self.commit is None:  # a copy of the tree without .git: the bundle knows its commit
                self.commit = self.bundle["commit"]
            elif self.commit != self.bundle["commit"]:
                self.log(f"note: the bundle was made at {self.bundle['commit']}; this tree is at {self.commit}")
        self.runs = Path(tempfile.mkdtemp(prefix="runs-", dir=work))  # fresh: the run folders are known
        st.status, st.seconds = "ok", time.time() - self.start
        st.result = f"installed {', '.join(installed) or 'nothing'}; data: {data}"
        from vitlib.support.hardware import choose

        fast_path = choose().describe()
        self.log(f"fast path: {fast_path}")
        self.summary.update(installed=installed, data=data, commit=self.commit, fast_path=fast_path,
                            bundle=str(self.args.from_bundle) if self.bundle else None)  # fmt: skip

    def bench(self) -> dict[str, Any] | None:
        """``python -m benchmarks.bench``; its results, or None."""
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
        new = [p for p in folder.glob("*.json") if p.stat().st_mtime >= began]  # not an earlier run's
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

    def train(self, bench: dict[str, Any] | None) -> None:
        """Fit as many epochs as fit, record the run, test its last checkpoint."""
        st = self.stage("train")
        recipe = yaml.safe_load(RECIPE.read_text())
        max_epochs = self.args.max_epochs or (2 if self.mode.tiny else recipe["trainer"]["max_epochs"])
        stop_at = self.deadline - self.mode.after_train_s
        epoch_s = epoch_estimate(bench, self.mode.n_train, self.mode.n_test)
        epochs, schedule = plan_epochs(stop_at - time.time() - self.mode.startup_s, epoch_s, max_epochs, *recipe_schedule(recipe))
        estimate = "no estimate" if epoch_s is None else f"about {epoch_s:.1f} s each"
        left = stop_at - time.time()
        self.log(f"plan: {epochs} epochs ({estimate}; {schedule.describe()}), stop within {left:.0f} s")
        fit_spec, test_spec = recipe_runs(self.data_root, self.data.kind == "official", self.runs, self.mode.tiny, epochs, schedule, stop_at)
        fit = fit_spec.command(sys.executable)
        # Grace past stop_at for an epoch end the estimate missed; the test keeps half its share.
        rc, st.seconds = run_child(fit, stop_at + self.mode.after_train_s / 2 - time.time(), self.log, self.env)
        run_dir = version_folder(self.runs, 0, "fit")
        fitted = final_metrics(run_dir)
        st.status = status_of(rc, fitted, METRICS_JSON)
        self.summary["plan"] = {"epochs": epochs, "epoch_s_estimate": epoch_s, "half_cycle_epochs": schedule.half_cycle_epochs,
                                "stop_at_s": round(stop_at - self.start, 1)}  # fmt: skip
        if fitted:
            # metrics.json's epoch is Lightning's current_epoch at the fit's end: the epochs completed.
            st.result = f"{fitted['epoch']}/{epochs} epochs; last validation (the test set) top-1 {fitted['top1']:.2%}"
            keys = ("dataset", "images", "loss", "top1", "top5", "epoch", "global_step", "ran")
            self.summary["fit"] = {"argv": fit[1:], **{k: fitted.get(k) for k in keys}}
            self.record(run_dir, bench)
        self.test(last_checkpoint(run_dir), test_spec.command(sys.executable))

    def record(self, run_dir: Path, bench: dict[str, Any] | None) -> None:
        from vitlib.lab.results.records import record_run  # like the CLI, only once the bundle's wheels are installed

        st = self.stage("record")
        gpu = bench["gpu"] if bench else (gpu_name() or "cpu")
        date = datetime.now(timezone.utc)
        name = self.args.name or ("tiny-synthetic-cpu" if self.mode.tiny else f"vit-fast-{slug(gpu)}-{date:%Y-%m-%d}")
        try:
            path = record_run(run_dir, name, self.out / "results", commit=self.commit)
        except Exception as err:  # noqa: BLE001 - the test run still goes on; the table says what failed
            self.log(traceback.format_exc().rstrip())
            st.status, st.result = "failed", f"{type(err).__name__}: {err}"
            return
        st.status = "ok"
        files = sorted(p for p in (self.out / "results").rglob("*") if p.is_file())
        st.result = ", ".join(str(p.relative_to(self.out)) for p in files)
        self.summary["record"] = str(path.relative_to(self.out))

    def test(self, checkpoint: Path, test: list[str]) -> None:
        st = self.stage("test")
        if not checkpoint.is_file():
            st.status, st.result = "skipped", f"no {checkpoint.name}"
            return
        # Eager: compiling the evaluation graph would take longer than the 10,000 images do, and
        # the checkpoint's own settings (compile: auto, which compiles on a measured GPU) win over
        # --model.compile.
        rc, st.seconds = run_child(test, self.left() - 5, self.log, {**self.env, "TORCH_COMPILE_DISABLE": "1"})
        tested = final_metrics(version_folder(self.runs, 0, "test"))
        st.status = status_of(rc, tested, METRICS_JSON)
        if tested:
            st.result = (f"top-1 {tested['top1']:.2%}, top-5 {tested['top5']:.2%}, loss {tested['loss']:.3f} "
                         f"on {tested['samples']} images")  # fmt: skip
            keys = ("dataset", "images", "split", "loss", "top1", "top5", "samples")
            self.summary["test"] = {k: tested.get(k) for k in keys}


def table(stages: list[Stage]) -> str:
    width = max(len("status"), *(len(s.status) for s in stages))
    lines = [f"{'stage':<7} {'status':<{width}} {'s':>5}  result"]
    lines += [f"{s.name:<7} {s.status:<{width}} {s.seconds:>5.0f}  {s.result}" for s in stages]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_run", description=__doc__.split("\n\n")[0])
    run = parser.add_argument_group("a run")
    run.add_argument("--out", type=Path, metavar="DIR", help="where the log, summary.json, the benchmark, the record and weights go")
    run.add_argument("--minutes", type=float, default=None, metavar="M",
                     help=f"wall-clock limit of the whole run (default {GPU.minutes:g}; tiny: {TINY.minutes:g})")  # fmt: skip
    run.add_argument("--tiny", action="store_true", help="the same stages on a CPU in about a minute")
    run.add_argument("--from-bundle", type=Path, metavar="BUNDLE", help="use a bundle made by --bundle (no internet)")
    run.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                     help="the official CIFAR-100, downloaded there if absent (default: $VITLIB_DATA or ./data, "
                     "when neither a --data-source nor a bundle's data are there)")  # fmt: skip
    run.add_argument("--max-epochs", type=int, default=None, metavar="N", help="cap (default: fast.yaml's; tiny: 2)")
    run.add_argument("--name", default=None, help="the run's record name (default: vit-fast-<gpu>-<date>)")
    run.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vitlib-gpu-run", metavar="DIR",
                     help="scratch: installed wheels, data, run folders (default: %(default)s)")  # fmt: skip
    run.add_argument("--skip-bench", action="store_true", help="train only (a second try of the training)")
    run.add_argument("--skip-train", action="store_true", help="benchmark only")
    pack = parser.add_argument_group("a bundle, for a machine without internet access")
    pack.add_argument("--bundle", type=Path, metavar="BUNDLE", help="pack the wheels, data and commit into BUNDLE")
    pack.add_argument("--max-bundle-mib", type=float, default=None, metavar="N", help="fail when BUNDLE is larger")
    pack.add_argument("--no-wheels", action="store_true", help="bundle no wheels (the GPU machine has the packages)")
    pack.add_argument("--no-data", action="store_true", help="bundle no data (the GPU machine has CIFAR-100)")
    parser.add_argument("--data-source", type=Path, default=None, metavar="DIR",
                        help=f"the JPEG q75 copy: cifar100_q75.npz, build.py, meta (default: {DEFAULT_DATA_SOURCE} "
                        "when it exists)")  # fmt: skip
    return parser, parser.parse_args(argv)


def pack(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.out is not None or args.from_bundle is not None:
        parser.error("--bundle packs a bundle and runs nothing: on the GPU machine run from it with "
                     "--from-bundle BUNDLE --out DIR")  # fmt: skip
    if args.max_bundle_mib is not None and args.max_bundle_mib <= 0:
        parser.error(f"--max-bundle-mib must be positive, not {args.max_bundle_mib:g}")
    source = args.data_source
    if source is None and not args.no_data:
        if not DEFAULT_DATA_SOURCE.is_dir():
            raise Problem("no data to bundle: pass --data-source, the folder holding "
                          f"{', '.join(DATA_FILES)}, or --no-data where the GPU machine has CIFAR-100")  # fmt: skip
        source = DEFAULT_DATA_SOURCE
    elif source is not None and args.no_data:
        parser.error("--data-source and --no-data contradict each other: give one")
    done = make_bundle(args.bundle, source, wheels=not args.no_wheels, max_mib=args.max_bundle_mib)
    print(f"bundle {args.bundle}: {done['mib']:.1f} MiB; wheels: {', '.join(done['packages']) or 'none'}; "
          f"data: {'the JPEG q75 copy' if done['data'] else 'none'}; commit {done['commit']}")  # fmt: skip
    print(f"copy it to the GPU machine and run there, in the checkout, with the path it has there:\n"
          f"  python -m benchmarks.gpu_run --from-bundle {args.bundle} --out DIR")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    parser, args = parse(argv)

    def fail(message: str) -> None:
        parser.exit(2, f"{parser.prog}: error: {message}\n")

    try:
        if args.bundle is not None:
            return pack(parser, args)
        if args.max_bundle_mib is not None or args.no_wheels or args.no_data:
            parser.error("--max-bundle-mib, --no-wheels and --no-data go with --bundle")
        if args.out is None:
            parser.error("--out DIR is required: where the results go (or --bundle BUNDLE to pack a bundle)")
        mode = TINY if args.tiny else GPU
        args.minutes = mode.minutes if args.minutes is None else args.minutes
        need = mode.after_bench_s / 60
        if args.minutes <= 0 or (not args.skip_train and args.minutes < need):
            parser.error(f"--minutes {args.minutes:g} leaves no time to train: give at least {need:g} (or --skip-train)")
        bundle = read_bundle(args.from_bundle) if args.from_bundle is not None else None
        data = choose_data(mode.tiny, args.data_source, args.data_dir, args.from_bundle, bool(bundle and bundle["data"]))
    except Problem as err:
        fail(str(err))
    if not mode.tiny:
        import torch

        if not torch.cuda.is_available():
            fail("no CUDA GPU here; on a CPU use --tiny")

    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / "gpu_run.log")
    # SIGTERM (a timeout around this command, a scheduler) ends it through the finally blocks that kill children.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stages: list[Stage] = []
    started = time.time()
    run = Run(args, mode, data, bundle, log, stages)
    try:
        summary = run.all()
    except Exception as err:  # noqa: BLE001 - a stage broke: say which, still write the summary and table
        log(f"error: {err}" if isinstance(err, Problem) else traceback.format_exc().rstrip())
        if not stages or stages[-1].status != "running":
            stages.append(Stage("error"))
        stages[-1].status, stages[-1].result = "failed", str(err) if isinstance(err, Problem) else f"{type(err).__name__}: {err}"
        summary = {**run.summary, "error": stages[-1].result}
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary.update(command=shlex.join(["python", "-m", "benchmarks.gpu_run", *(argv if argv is not None else sys.argv[1:])]),
                   seconds=round(time.time() - started, 1), stages=[vars(s) for s in stages])  # fmt: skip
    write_json_atomic(args.out / "summary.json", summary)
    log(f"=== benchmarks.gpu_run: {summary['seconds']:.0f} s of {args.minutes * 60:.0f}, results in {args.out}")
    log(table(stages))
    log.file.close()
    return 0 if all(s.status in ("ok", "skipped") for s in stages) else 1


if __name__ == "__main__":
    sys.exit(main())
