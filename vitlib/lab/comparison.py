"""Controlled comparisons of recorded runs, and the runner that trains and records them.

A comparison (the stem x attention grid, the recipe study) is a planned list of ``vitlib fit``
runs that differ in one thing and in their seed. This module holds what they share: the top-1 of
a group of runs that differ only in their seed (mean, sample standard deviation), the gap between
two groups set against that seed-to-seed spread, and :func:`train_and_record`, which trains one
planned run, resumes it from its last checkpoint when an earlier attempt was cut short, and
records all its parts as one run (:func:`vitlib.lab.records.record_run`).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .records import load_results, record_run, validated_epochs


class SeedGroup:
    """Runs that differ only in their seed (``runs``, results records), shown as ``label``."""

    label: str
    runs: tuple[dict[str, Any], ...]

    @property
    def top1(self) -> list[float]:
        """Each run's final top-1, in points."""
        return [100 * run["metrics"]["top1"] for run in self.runs]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.top1)

    @property
    def spread(self) -> float | None:
        """Sample standard deviation of top-1 (points) over seeds; ``None`` for a single run."""
        return statistics.stdev(self.top1) if len(self.runs) > 1 else None

    def describe(self) -> str:
        """``"41.2 ± 0.3 % (3 seeds)"`` or ``"41.2 % (1 seed)"``."""
        if self.spread is None:
            return f"{self.mean:.1f} % (1 seed)"
        return f"{self.mean:.1f} ± {self.spread:.1f} % ({len(self.runs)} seeds)"


def gap_sentence(a: SeedGroup, b: SeedGroup) -> str:
    """``"conv stem + MHSA: 35.1 ± 0.4 % (3 seeds) against patch + MHSA: 31.0 ± 0.5 % (3 seeds),
    +4.1 points, 8 times the larger seed-to-seed standard deviation (0.5)"``: with one seed each
    there is no spread to compare the gap with, and the sentence says so."""
    gap = a.mean - b.mean
    spreads = [s for s in (a.spread, b.spread) if s is not None]
    if not spreads:
        verdict = "one seed each, so the seed-to-seed spread is not known"
    elif abs(gap) > 2 * max(spreads):
        verdict = f"{abs(gap) / max(spreads):.0f} times the larger seed-to-seed standard deviation ({max(spreads):.1f})"
    else:
        verdict = f"not clearly larger than the seed-to-seed standard deviation ({max(spreads):.1f})"
    return f"{a.label}: {a.describe()} against {b.label}: {b.describe()}, {gap:+.1f} points, {verdict}"


def provenance(records: Sequence[dict[str, Any]], what: str, command: str) -> str:
    """One line for a caption: ``"10 recorded grid runs (python -m vitlib.lab.grid), 4 epochs each on
    <hardware>, <dataset>, commits a, b"``."""
    if not records:
        return f"no recorded {what}"
    commits = sorted({str(r["commit"])[:7] for r in records})
    return (
        f"{len(records)} recorded {what}s ({command}), {records[0].get('epochs')} epochs each on "
        f"{records[0]['hardware']}, {records[0]['dataset']}, commit{'s' * (len(commits) > 1)} {', '.join(commits)}"
    )


# --------------------------------------------------------------------------- training the runs


@dataclass(frozen=True)
class PlannedRun:
    """One run of a comparison: its record's name and its ``python -m vitlib fit`` command, which
    writes under ``root`` (its ``--trainer.default_root_dir``)."""

    name: str
    command: tuple[str, ...]
    root: Path


def run_folders(root: str | Path) -> list[Path]:
    """The ``vitlib/version_N`` folders under ``root``, in the order they were made."""
    folders = Path(root).glob("vitlib/version_*")
    return sorted((f for f in folders if f.name.split("_")[-1].isdigit()), key=lambda f: int(f.name.split("_")[-1]))


def _finished(folder: Path) -> bool:
    """Whether the fit in ``folder`` ran its whole schedule: it wrote ``metrics.json``, or it was
    killed after validating its last epoch, before writing it (resuming such a fit trains nothing
    and validates nothing, so it would never write one)."""
    if (folder / "metrics.json").is_file():
        return True
    config_file = folder / "config.yaml"
    planned = ((yaml.safe_load(config_file.read_text()) or {}).get("trainer") or {}).get("max_epochs") if config_file.is_file() else None
    return planned is not None and validated_epochs(folder) >= planned


def finished_parts(root: str | Path) -> list[Path] | None:
    """The folders of the last fit under ``root`` that finished, first part to last (each resume
    names its predecessor's checkpoint in its ``config.yaml``); ``None`` when none finished."""
    finished = [f for f in run_folders(root) if _finished(f)]
    if not finished:
        return None
    parts = [finished[-1]]
    while True:
        ckpt = (yaml.safe_load((parts[0] / "config.yaml").read_text()) or {}).get("ckpt_path")
        if not ckpt:
            return parts
        parts.insert(0, Path(ckpt).parent.parent)  # <version>/checkpoints/last.ckpt


def resume_point(root: str | Path) -> Path | None:
    """The newest ``last.ckpt`` under ``root`` of a fit that did not finish, to resume from."""
    if finished_parts(root):
        return None
    checkpoints = [f / "checkpoints" / "last.ckpt" for f in run_folders(root)]
    checkpoints = [c for c in checkpoints if c.is_file()]
    return max(checkpoints, key=lambda c: c.stat().st_mtime) if checkpoints else None


def train_and_record(run: PlannedRun, out: str | Path, note: str | None = None) -> Path:
    """Train ``run`` (resumed from its last checkpoint when an earlier attempt was cut short; not
    at all when it finished and only its record is missing) and record it in ``out/<name>.json``,
    all its parts as one run. Raises ``RuntimeError`` when the training command fails."""
    if finished_parts(run.root) is None:
        ckpt = resume_point(run.root)
        command = [sys.executable, *run.command[1:], *(["--ckpt_path", str(ckpt)] if ckpt else [])]
        if subprocess.run(command).returncode:
            raise RuntimeError(f"{run.name} failed (its output is above); run the same command again to resume it")
    parts = finished_parts(run.root)
    if parts is None:
        raise RuntimeError(f"{run.name} ended before its last epoch, without writing metrics.json under {run.root}")
    unfinished = not (parts[-1] / "metrics.json").is_file()
    return record_run(parts, run.name, out, command=shlex.join(run.command), note=note, unfinished=unfinished)


def main(
    argv: Sequence[str] | None,
    prog: str,
    what: str,
    recipe: str,
    epochs: int,
    out: str,
    runs: str,
    plan: Callable[[dict[str, dict[str, Any]], int, str, str], list[PlannedRun]],
) -> None:
    """The command line of a comparison: trains and records every run that ``plan(records,
    epochs, data_dir, runs_root)`` still lists (it sees the records so far, so a plan can depend
    on them), one after the other; ``--dry-run`` prints their commands instead."""
    parser = argparse.ArgumentParser(prog=prog, description=f"Train and record {what} (skips runs already recorded).")
    parser.add_argument("--data-dir", required=True, help="CIFAR-100 in torchvision's layout (e.g. data-q75)")
    parser.add_argument("--epochs", type=int, default=epochs, help=f"epochs of every run (default {epochs})")
    parser.add_argument("--out", default=out, help=f"folder of the records (default {out})")
    parser.add_argument("--runs", default=runs, help=f"folder of the runs' logs and checkpoints (default {runs})")
    parser.add_argument("--note", help="added to every record (e.g. whether the machine was shared)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands still to run and stop")
    args = parser.parse_args(argv)
    if not (Path(recipe).is_file() and Path(args.data_dir).is_dir()):
        parser.exit(2, f"{prog}: error: run from the repository root (needs {recipe}) with an existing --data-dir; "
                       f"got data dir {args.data_dir!r}\n")  # fmt: skip
    while True:
        records = {record["name"]: record for record in load_results(args.out)}
        todo = [run for run in plan(records, args.epochs, args.data_dir, args.runs) if run.name not in records]
        if args.dry_run or not todo:
            for run in todo:
                print(shlex.join(run.command))
            return
        print(f"{prog}: {todo[0].name} ({len(todo)} run{'s' if len(todo) > 1 else ''} left)", flush=True)
        try:
            train_and_record(todo[0], args.out, note=args.note)
        except RuntimeError as err:
            parser.exit(1, f"{prog}: error: {err}\n")
