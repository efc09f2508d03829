"""Controlled comparisons of recorded runs, and the runner that trains and records them.

A comparison (the stem x attention grid, the recipe study) is a planned list of ``vitlib fit``
runs that differ in one thing and in their seed. This module holds what they share: the top-1 of
a group of runs that differ only in their seed (mean, sample standard deviation), the gap between
two groups set against that seed-to-seed spread, and :func:`train_and_record`, which trains one
planned run, resumes it from its last checkpoint when an earlier attempt was cut short, and
records all its parts as one run (:func:`vitlib.lab.results.records.record_run`).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...support.run_folder import METRICS_JSON, final_metrics, finished_parts, resume_point, stopped_parts
from .launch import RunSpec
from .records import Record, load_results, record_run


class SeedGroup:
    """Runs that differ only in their seed (``runs``, results records), shown as ``label``."""

    label: str
    runs: tuple[Record, ...]

    @property
    def top1(self) -> list[float]:
        """Each run's final top-1, in points."""
        return [100 * run.metrics.top1 for run in self.runs]

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


@dataclass(frozen=True)
class Gap:
    """Group ``a``'s mean top-1 minus group ``b``'s, in points, and the seed-to-seed standard
    deviation it is judged against (``noise``: the groups' own larger spread, else one borrowed
    from ``source``, e.g. ``"of the 30-epoch study"``; ``None`` when none is known). The one rule
    every comparison applies: a gap is clear when it is more than twice the noise."""

    points: float
    noise: float | None
    source: str | None = None  # where a borrowed noise was measured; None: the groups' own
    both: bool = True  # with their own noise: both groups ran several seeds (else one of them did)

    @property
    def borrowed(self) -> bool:
        return self.source is not None

    @property
    def clear(self) -> bool | None:
        """More than twice the noise; ``None`` when the noise is not known."""
        return None if self.noise is None else abs(self.points) > 2 * self.noise

    def judged(self) -> str:
        """The gap against the noise, in the words every comparison's sentence uses."""
        if self.noise is None:
            return "one seed each, so the seed-to-seed spread is not known"
        if self.borrowed:
            spread = f"the seed-to-seed standard deviation {self.source}"
        else:
            spread = "the larger seed-to-seed standard deviation of the two" if self.both else "the seed-to-seed standard deviation of the one trained with several seeds"
        return f"{'more than' if self.clear else 'within'} twice {spread}, {self.noise:.1f} points"


def gap(a: SeedGroup, b: SeedGroup, noise: float | None = None, source: str = "of another comparison") -> Gap:
    """:class:`Gap` of ``a`` over ``b``, judged against their own seed spread, else ``noise``
    (measured where ``source`` says)."""
    own = [s for s in (a.spread, b.spread) if s is not None]
    if own:
        return Gap(a.mean - b.mean, max(own), both=len(own) == 2)
    return Gap(a.mean - b.mean, noise, source if noise is not None else None)


def gap_sentence(a: SeedGroup, b: SeedGroup, noise: float | None = None, source: str = "of another comparison") -> str:
    """``"conv stem + MHSA: 35.1 ± 0.4 % (3 seeds) against patch + MHSA: 31.0 ± 0.5 % (3 seeds),
    +4.1 points, more than twice the larger seed-to-seed standard deviation of the two, 0.5 points"``: with one
    seed each and no ``noise`` there is no spread to compare the gap with, and the sentence says so."""
    g = gap(a, b, noise, source)
    return f"{a.label}: {a.describe()} against {b.label}: {b.describe()}, {g.points:+.1f} points, {g.judged()}"


def _spans(epochs: Sequence[int]) -> str:
    """``[0, 1, 2, 3, 5, 7, 8]`` as ``"0–3, 5 and 7–8"`` (runs of consecutive epochs)."""
    runs: list[list[int]] = []
    for e in epochs:
        if runs and e == runs[-1][-1] + 1:
            runs[-1].append(e)
        else:
            runs.append([e])
    parts = [f"{r[0]}" if len(r) == 1 else f"{r[0]}–{r[-1]}" for r in runs]
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def leads(a_label: str, a: dict[int, float], b_label: str, b: dict[int, float]) -> str:
    """Who leads in which epochs, for two curves ``{epoch: value}`` (higher is better), over the
    epochs both have: ``"the recipe leads at epochs 0–3, 5 and 7–17, warm-up + cosine at epochs
    4, 6 and 18–29; tied at epoch 30"``, or one leader at every epoch. Every crossing is named, not
    only the last one."""
    epochs = sorted(set(a) & set(b))
    if not epochs:
        raise ValueError(f"{a_label} and {b_label} have no epoch in common")
    ahead = {a_label: [e for e in epochs if a[e] > b[e]], b_label: [e for e in epochs if b[e] > a[e]]}
    tied = [e for e in epochs if a[e] == b[e]]
    for label, other in ((a_label, b_label), (b_label, a_label)):
        if len(ahead[label]) == len(epochs):
            return f"{label} leads {other} at every epoch, {_spans(epochs)}"
    # The one that led first is named first.
    leaders = sorted((e, label) for label, e in ahead.items() if e)
    said = [f"{label}{' leads' * (i == 0)} at epoch{'s' * (len(e) > 1)} {_spans(e)}" for i, (e, label) in enumerate(leaders)]
    tie = f"tied at epoch{'s' * (len(tied) > 1)} {_spans(tied)}" if tied else ""
    return "; ".join(filter(None, [", ".join(said), tie]))


def provenance(records: Sequence[Record], what: str, command: str) -> str:
    """One line for a caption: ``"10 recorded grid runs (python -m vitlib.lab.results.grid), 4 epochs each on
    <hardware>, <dataset>, commits a, b"``."""
    if not records:
        return f"no recorded {what}"
    commits = sorted({r.commit[:7] for r in records})
    epochs = sorted({r.epochs or 0 for r in records})
    each = f"{epochs[0]} epochs each" if len(epochs) == 1 else f"{epochs[0]} to {epochs[-1]} epochs"
    return (
        f"{len(records)} recorded {what}s ({command}), {each} on "
        f"{records[0].hardware}, {records[0].dataset.label}, commit{'s' * (len(commits) > 1)} {', '.join(commits)}"
    )


# --------------------------------------------------------------------------- training the runs


@dataclass(frozen=True)
class PlannedRun:
    """One run of a comparison: its record's name and what it runs (``spec``, which writes under
    its ``root``)."""

    name: str
    spec: RunSpec

    @property
    def root(self) -> Path:
        return Path(self.spec.root)

    @property
    def command(self) -> str:
        """The command line it runs, as its record keeps it."""
        return shlex.join(self.spec.command())


def plan_runs(runs: Sequence[tuple], name: Callable[..., str], spec: Callable[..., RunSpec], epochs: int, data_dir: str, root: str) -> list[PlannedRun]:
    """``runs`` (each the arguments of ``name`` and ``spec``, e.g. ``(arm, seed)``) as planned
    runs of ``epochs`` on ``data_dir``, each writing under ``root/<its name>``."""
    return [PlannedRun(name(*run), spec(*run, epochs, data_dir, root)) for run in runs]


def train_and_record(run: PlannedRun, out: str | Path, note: str | None = None) -> Path:
    """Train ``run`` (resumed from its last checkpoint when an earlier attempt was cut short; not
    at all when it finished and only its record is missing) and record it in ``out/<name>.json``,
    all its parts as one run. Raises ``RuntimeError`` when the training command fails."""
    if finished_parts(run.root) is None:
        ckpt = resume_point(run.root)
        if (run.spec.with_options(("ckpt_path", str(ckpt))) if ckpt else run.spec).run_child().returncode:
            raise RuntimeError(f"{run.name} failed (its output is above); run the same command again to resume it")
    parts = finished_parts(run.root)
    if parts is None:
        raise RuntimeError(f"{run.name} ended before its last epoch, without writing {METRICS_JSON} under {run.root}")
    unfinished = final_metrics(parts[-1]) is None
    return record_run(parts, run.name, out, command=run.command, note=note, unfinished=unfinished)


def record_stopped(run: PlannedRun, out: str | Path, note: str | None = None) -> Path | None:
    """Record ``run``, stopped before its end, as far as it got (``out/<name>.json`` with its
    weights; the record says how many of its epochs ran), so that nothing it trained is lost
    should its folder be. ``None`` when it has no resumable fit with a validated epoch."""
    parts = stopped_parts(run.root)
    if parts is None:
        return None
    return record_run(parts, run.name, out, command=run.command, note=note, unfinished=True)


def _done(record: Record | None) -> bool:
    """Whether a record ends its run: it exists and ran all its epochs."""
    return record is not None and not record.stopped_early


def main(
    argv: Sequence[str] | None,
    prog: str,
    what: str,
    recipe: str,
    epochs: int,
    out: str,
    runs: str,
    plan: Callable[[dict[str, Record], int, str, str], list[PlannedRun]],
) -> None:
    """The command line of a comparison: trains and records every run that ``plan(records,
    epochs, data_dir, runs_root)`` still lists (it sees the records so far, so a plan can depend
    on them), one after the other; ``--only NAME`` trains one of them (to train two side by side,
    one process each); ``--dry-run`` prints their commands instead; ``--record-stopped`` records
    the runs stopped before their end as far as they got. A run recorded stopped is still to
    train: it resumes from its checkpoint."""
    parser = argparse.ArgumentParser(prog=prog, description=f"Train and record {what} (skips runs already recorded).")
    parser.add_argument("--data-dir", required=True, help="CIFAR-100 in torchvision's layout (e.g. data-q75)")
    parser.add_argument("--epochs", type=int, default=epochs, help=f"epochs of every run (default {epochs})")
    parser.add_argument("--out", default=out, help=f"folder of the records (default {out})")
    parser.add_argument("--runs", default=runs, help=f"folder of the runs' logs and checkpoints (default {runs})")
    parser.add_argument("--note", help="added to every record (e.g. whether the machine was shared)")
    parser.add_argument("--only", metavar="NAME", help="train and record this run only (e.g. to train two side by side)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--dry-run", action="store_true", help="print the commands still to run and stop")
    action.add_argument("--record-stopped", action="store_true",
                        help="record the runs stopped before their end, as far as they got, and stop (train nothing)")  # fmt: skip
    args = parser.parse_args(argv)
    if not (Path(recipe).is_file() and Path(args.data_dir).is_dir()):
        parser.exit(2, f"{prog}: error: run from the repository root (needs {recipe}) with an existing --data-dir; "
                       f"got data dir {args.data_dir!r}\n")  # fmt: skip
    while True:
        records = {record.name: record for record in load_results(args.out)}
        planned = plan(records, args.epochs, args.data_dir, args.runs)
        if args.only is not None and args.only not in {run.name for run in planned}:
            parser.exit(2, f"{prog}: error: no planned run is named {args.only!r}; the runs: {', '.join(r.name for r in planned)}\n")
        todo = [run for run in planned if not _done(records.get(run.name)) and args.only in (None, run.name)]
        if args.record_stopped:
            for run in todo:
                if (path := record_stopped(run, args.out, note=args.note)) is not None:
                    print(f"{prog}: recorded {run.name} as far as it got: {path}")
            return
        if args.dry_run or not todo:
            for run in todo:
                print(run.command)
            return
        print(f"{prog}: {todo[0].name} ({len(todo)} run{'s' if len(todo) > 1 else ''} left)", flush=True)
        try:
            train_and_record(todo[0], args.out, note=args.note)
        except RuntimeError as err:
            parser.exit(1, f"{prog}: error: {err}\n")
