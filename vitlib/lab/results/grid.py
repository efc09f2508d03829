"""The controlled comparison of chapters 2, 3 and 7: stem x attention under one recipe.

Six models share the CPU recipe (``configs/cpu.yaml``: trunk, schedule shape, augmentation, seed)
and differ only in their stem (patch, conv, SPT) and attention (MHSA, LSA); all train the same
number of epochs on the same data. The baseline (patch + MHSA) and the best of the six are trained
with two more seeds, so that a difference can be set against the seed-to-seed spread. One command
trains and records the whole grid; a run already recorded is skipped, so an interrupted grid
resumes where it stopped (a run cut short resumes from its last checkpoint)::

    python -m vitlib.lab.results.grid --data-dir data-q75

Each run is recorded like any other (:func:`vitlib.lab.results.records.record_run`):
``results/grid/<stem>-<attention>-seed<N>.json`` with its history, timing, parameters, FLOPs per
image and weights. Which cell is "best" is read from the test split, the only held-out set this
comparison has: the repeats then test whether that pick survives other seeds.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import comparison
from .comparison import PlannedRun, SeedGroup, gap_sentence, plan_runs, provenance
from .launch import Data, RunSpec
from .records import Record, load_results
from .tables import markdown_table

# The six recorded cells, written out rather than derived from config's names: a stem or attention
# added to the library later must not enlarge (or reorder) a comparison that has been run.
CELLS: tuple[tuple[str, str], ...] = (
    ("patch", "mhsa"), ("patch", "lsa"),
    ("conv", "mhsa"), ("conv", "lsa"),
    ("spt", "mhsa"), ("spt", "lsa"),
)  # fmt: skip
STEMS = tuple(dict.fromkeys(stem for stem, _ in CELLS))
ATTENTIONS = tuple(dict.fromkeys(attention for _, attention in CELLS))
BASELINE = ("patch", "mhsa")
SEEDS = (0, 1, 2)
# Each run about 10 minutes on two CPU cores (the recipe's model at about 500 images/s).
EPOCHS = 4
RECIPE = "configs/cpu.yaml"
FOLDER = "results/grid"
NAMES = {"patch": "patch", "conv": "conv stem", "spt": "SPT", "mhsa": "MHSA", "lsa": "LSA"}


def run_name(stem: str, attention: str, seed: int) -> str:
    return f"{stem}-{attention}-seed{seed}"


def cell_label(stem: str, attention: str) -> str:
    """``"conv stem + LSA"``: a cell as the book writes it."""
    return f"{NAMES[stem]} + {NAMES[attention]}"


def run_spec(stem: str, attention: str, seed: int, epochs: int, data_dir: str, root: str) -> RunSpec:
    """The ``python -m vitlib fit`` run of one grid cell and seed, writing under ``root``."""
    options = (("model.overrides.stem", stem), ("model.overrides.attention", attention), ("seed_everything", seed),
               ("trainer.max_epochs", epochs))  # fmt: skip
    return RunSpec(RECIPE, options, Data(data_dir), Path(root) / run_name(stem, attention, seed))


def best_cell(records: dict[str, Record]) -> tuple[str, str] | None:
    """The cell whose seed-0 run has the highest top-1; ``None`` until all six are recorded."""
    firsts = {cell: records.get(run_name(*cell, 0)) for cell in CELLS}
    if any(record is None for record in firsts.values()):
        return None
    return max(CELLS, key=lambda cell: firsts[cell].metrics.top1)


def planned_runs(records: dict[str, Record]) -> list[tuple[str, str, int]]:
    """Every run of the grid as far as ``records`` decide it: the six cells with seed 0, the
    baseline's repeats, then, once the six are in, the best cell's repeats."""
    runs = [(*cell, 0) for cell in CELLS] + [(*BASELINE, seed) for seed in SEEDS[1:]]
    best = best_cell(records)
    if best is not None and best != BASELINE:
        runs += [(*best, seed) for seed in SEEDS[1:]]
    return runs


def load(folder: str | Path = FOLDER) -> list[Record]:
    """The grid's results files in ``folder`` (none when it does not exist)."""
    return load_results(folder)


def _records(folder: str | Path) -> dict[str, Record]:
    return {record.name: record for record in load(folder)}


@dataclass(frozen=True)
class Cell(SeedGroup):
    """One stem x attention cell: its runs' results (one per seed)."""

    stem: str
    attention: str
    runs: tuple[Record, ...]

    @property
    def label(self) -> str:
        return cell_label(self.stem, self.attention)


def cells(records: Sequence[Record]) -> list[Cell]:
    """The recorded cells in the grid's order (stems, then attentions), each with its runs."""
    found = []
    for stem, attention in CELLS:
        runs = [r for r in records if r.name.startswith(f"{stem}-{attention}-seed")]
        if runs:
            found.append(Cell(stem, attention, tuple(sorted(runs, key=lambda r: r.name))))
    return found


def _mean_of(runs: Sequence[Record], key: str) -> float | None:
    values = [run.throughput[key] for run in runs if (run.throughput or {}).get(key)]
    return statistics.fmean(values) if values else None


def grid_table(records: Sequence[Record]) -> str:
    """Markdown: one row per recorded cell with test top-1 (mean ± sample standard deviation over
    seeds, and each seed), top-5, parameters, FLOPs per image, wall time and images/s."""
    found = cells(records)
    if not found:
        return "**No grid run is recorded.** `python -m vitlib.lab.results.grid --data-dir DIR` trains and records it."
    rows = []
    for cell in found:
        first = cell.runs[0]
        size = first.size or {}
        fit_s, fit_rate, bare = (_mean_of(cell.runs, k) for k in ("fit_wall_s", "fit_images_per_s", "bare_step_images_per_s"))
        rows.append({
            "stem + attention": cell.label,
            "test top-1": cell.describe(),
            "per seed": ", ".join(f"{v:.1f}" for v in cell.top1),
            "top-5": f"{statistics.fmean(100 * r.metrics.top5 for r in cell.runs):.1f} %",
            "parameters (M)": f"{size['parameters'] / 1e6:.3f}" if size else "?",
            "MFLOPs / image": f"{size['flops_per_image'] / 1e6:.1f}" if size else "?",
            "epochs": first.epochs,
            "fit (min)": f"{fit_s / 60:.1f}" if fit_s else "?",
            "fit images/s": f"{fit_rate:.0f}" if fit_rate else "?",
            "bare step images/s": f"{bare:.0f}" if bare else "?",
        })  # fmt: skip
    return markdown_table(rows)


def matrix_table(records: Sequence[Record]) -> str:
    """Markdown: test top-1 with one row per stem and one column per attention."""
    found = {(c.stem, c.attention): c.describe() for c in cells(records)}
    return markdown_table([
        {"stem": NAMES[stem], **{NAMES[attention]: found.get((stem, attention), "not run") for attention in ATTENTIONS}}
        for stem in STEMS
    ])  # fmt: skip


def compare(records: Sequence[Record], cell: tuple[str, str], other: tuple[str, str]) -> str | None:
    """``"conv stem + MHSA: 35.1 ± 0.4 % (3 seeds) against patch + MHSA: 31.0 ± 0.5 % (3 seeds),
    +4.1 points, ..."``: the gap in test top-1 and how it compares with the seed-to-seed spread
    (the larger sample standard deviation of the two; with one seed there is none to compare
    with). ``None`` when either cell is not recorded."""
    found = {(c.stem, c.attention): c for c in cells(records)}
    if cell not in found or other not in found:
        return None
    return gap_sentence(found[cell], found[other])


def finding(records: Sequence[Record]) -> str | None:
    """One sentence: the best repeated cell against the baseline, with their seed spread;
    ``None`` until both have repeats."""
    found = {(c.stem, c.attention): c for c in cells(records)}
    base = found.get(BASELINE)
    repeated = [c for c in found.values() if c.spread is not None and (c.stem, c.attention) != BASELINE]
    if base is None or base.spread is None or not repeated:
        return None
    best = max(repeated, key=lambda c: c.mean)
    return (
        f"Trained side by side for {best.runs[0].epochs} epochs under one CPU recipe, on CIFAR-100 (test "
        f"top-1): {compare(records, (best.stem, best.attention), BASELINE)}."
    )


def describe(records: Sequence[Record]) -> str:
    """One line of provenance for a caption: how many grid runs, epochs, hardware, data, commits."""
    return provenance(records, "grid run", "python -m vitlib.lab.results.grid")


def plan(records: dict[str, Record], epochs: int, data_dir: str, root: str) -> list[PlannedRun]:
    """The grid's runs as far as ``records`` decide them, with their commands."""
    return plan_runs(planned_runs(records), run_name, run_spec, epochs, data_dir, root)


def main(argv: Sequence[str] | None = None) -> None:
    comparison.main(argv, "python -m vitlib.lab.results.grid", "the stem x attention grid", RECIPE, EPOCHS, FOLDER, "runs/grid", plan)


if __name__ == "__main__":
    main()
