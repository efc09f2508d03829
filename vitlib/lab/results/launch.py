"""One run of ``python -m vitlib``, described as data, and the ways to start it.

Every tool that launches a run (the stem x attention grid, the recipe study, chapter 6's own run,
the speed comparison, the benchmark, the GPU run) describes it as a :class:`RunSpec`, and
:meth:`RunSpec.argv` is the one place that spells its command line. :func:`check` parses a run
through the CLI without training, so a renamed config key fails a test in seconds instead of a
grid half an hour in.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from ... import cli


@dataclass(frozen=True)
class Data:
    """The images a run reads: the CIFAR-100 files under ``dir`` as they are (never downloaded;
    md5-checked with ``verify_md5``, which only the official release passes), or quick mode's
    synthetic ones when ``dir`` is ``None``. ``quick`` says quick mode's switch out loud (``None``
    leaves it to ``VITLIB_QUICK``)."""

    dir: str | Path | None
    verify_md5: bool = False
    quick: bool | None = None

    def __post_init__(self) -> None:
        if self.dir is None and self.quick is False:
            raise ValueError("Data(dir=None) is quick mode's synthetic data: give the CIFAR-100 folder, or quick=True")

    def argv(self) -> list[str]:
        if self.dir is None:
            return ["--data.quick", "true"]
        quick = [] if self.quick is None else ["--data.quick", _yaml_scalar(self.quick)]
        return [*quick, "--data.data_dir", str(self.dir), "--data.verify_md5", _yaml_scalar(self.verify_md5), "--data.download", "false"]


@dataclass(frozen=True)
class RunSpec:
    """``python -m vitlib <stage> --config <config>``, then ``options`` (``("trainer.max_epochs",
    30)`` is ``--trainer.max_epochs 30``) in their order, the ``data``, ``extra`` arguments as
    they are (a callback's or a logger's JSON) and the folder the run writes under (``root``)."""

    config: str | Path
    options: tuple[tuple[str, object], ...] = ()
    data: Data | None = None
    root: str | Path | None = None
    stage: str = "fit"
    extra: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        """The arguments after ``python -m vitlib``."""
        args = [self.stage, "--config", str(self.config)]
        for key, value in self.options:
            args += [f"--{key}", _yaml_scalar(value)]
        args += self.data.argv() if self.data is not None else []
        args += self.extra
        return args + (["--trainer.default_root_dir", str(self.root)] if self.root is not None else [])

    def command(self, python: str = "python") -> list[str]:
        """The whole command line (``python``: the interpreter to name, e.g. ``sys.executable``)."""
        return [python, "-m", "vitlib", *self.argv()]

    def with_options(self, *options: tuple[str, object]) -> RunSpec:
        return replace(self, options=self.options + options)

    def with_extra(self, *extra: str) -> RunSpec:
        return replace(self, extra=self.extra + extra)

    def run_here(self) -> None:
        """Run it in this process (as a notebook does)."""
        cli.main(self.argv())

    def run_child(self, timeout: float | None = None, capture: bool = False) -> subprocess.CompletedProcess[str]:
        """Run it in a child process with this interpreter; ``subprocess.TimeoutExpired`` after
        ``timeout`` seconds."""
        return subprocess.run(self.command(sys.executable), timeout=timeout, capture_output=capture, text=True)


def _yaml_scalar(value: object) -> str:
    """How the command line writes a value: ``true`` / ``false`` / ``null``, numbers as Python
    does (a float stays one: ``limit_train_batches`` 1.0 is all batches, 1 is one batch)."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def callback(class_path: str, **init_args: object) -> str:
    """The argument that adds a callback to a run's trainer (for :attr:`RunSpec.extra`)."""
    return "--trainer.callbacks+=" + json.dumps({"class_path": class_path, "init_args": init_args})


def check(spec: RunSpec) -> None:
    """Parse ``spec`` through the CLI exactly as ``python -m vitlib`` would, without running it:
    an unknown key or a wrong value raises ``ValueError`` with the CLI's message."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            cli.main([*spec.argv(), "--print_config"])
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                said = err.getvalue()
                said = said[said.find("error:"):] if "error:" in said else said  # the CLI's reason, not its usage
                raise ValueError(f"`{' '.join(spec.command())}` does not parse: {said.strip()[:1500]}") from None
