"""The model-options study: what the options of Compact Convolutional Transformers (Hassani et al.
2021) do to the book's small ViT on a CPU budget, one at a time.

Each arm is the long budget's recipe (:func:`vitlib.lab.results.ablation.recipe_for`, as the
100-epoch recipe study trains it: 45,000 training images, 5,000 held out, seed 0) with one model
option changed (:data:`OPTIONS`), trained for the first :data:`EPOCHS` epochs of that run: its
first whole triangular cycle (up from the lowest learning rate for 25 epochs and back down for
25), so that every arm ends, as a run should be judged, at the lowest rate. The run each arm is
compared with is not trained again: the 100-epoch study's run of the same recipe went through
exactly those epochs (the same options and seed, the same held-out split, batches and schedule;
the triangular rate at a step does not depend on the run's length), so its held-out top-1 at epoch
``EPOCHS - 1`` is the reference (:func:`reference`). The arms have one seed each; the 30-epoch
study's seed spread is their noise, as for the 100-epoch study.

Fifty epochs because a whole cycle is the shortest run that keeps the long recipe's schedule and
ends at its lowest rate, and a run alone takes about an hour and a half of two CPU cores (45,000
images an epoch at about 450 images/s). One command trains and records the arms still missing::

    python -m vitlib.lab.results.options --data-dir data-q75
    python -m vitlib.lab.results.options --data-dir data-q75 --dry-run     # the commands still to run
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from . import ablation, comparison
from .comparison import PlannedRun, SeedGroup, gap_sentence, plan_runs, provenance
from .launch import RunSpec
from .records import Record, load_results
from .tables import markdown_table

# name: (how the book writes it, the overrides of the long recipe's command line)
OPTIONS: dict[str, tuple[str, tuple[tuple[str, object], ...]]] = {
    "seq-pool": ("sequence pooling", (("model.overrides.pool", "seq"),)),
    "cct-stem": ("CCT's convolution + max-pool tokenizer", (("model.overrides.stem", "cct"),)),
    # CCT's CIFAR models train with stochastic depth 0.1; the book's recipe has none.
    "drop-path": ("stochastic depth 0.1", (("model.overrides.drop_path", 0.1),)),
    # Width against depth at about the same parameters and FLOPs per image (0.51 M, 71 MFLOPs against
    # the recipe's 0.52 M, 73 MFLOPs): CCT-4's trunk, wider, shallower, with a narrower MLP.
    "cct-shape": (
        "CCT-4's shape (width 128, 4 blocks of 2 heads, MLP ratio 1)",
        (("model.overrides.dim", 128), ("model.overrides.depth", 4), ("model.overrides.heads", 2), ("model.overrides.mlp_ratio", 1.0)),
    ),
}
SEED = 0
EPOCHS = 50
RUNS = tuple((option, SEED) for option in OPTIONS)
FOLDER = "results/options"
LOGS = "runs/options"


def run_name(option: str, seed: int) -> str:
    return f"{option}-seed{seed}"


def base_arm() -> str:
    """The arm of the recipe study that the long budget's recipe trains: the run every option changes."""
    config = ablation.recipe_for(ablation.LONG.epochs)
    arm = ablation.arm_of(config)
    if arm is None:
        raise ValueError(f"configs/{config}.yaml is no arm of the recipe study: the options study has no run to compare with")
    return arm


def run_spec(option: str, seed: int, epochs: int, data_dir: str, root: str) -> RunSpec:
    """The 100-epoch study's run of the long budget's recipe, stopped after ``epochs`` and with
    ``option``'s change, writing under ``root``."""
    if option not in OPTIONS:
        raise ValueError(f"unknown option {option!r}; the options are {', '.join(OPTIONS)}")
    if not 1 <= epochs <= ablation.LONG.epochs:
        raise ValueError(f"epochs must be between 1 and {ablation.LONG.epochs}, the 100-epoch study's run it is compared with; got {epochs}")
    long = ablation.run_spec(base_arm(), seed, ablation.LONG.epochs, data_dir, root)
    options = tuple((key, epochs if key == "trainer.max_epochs" else value) for key, value in long.options)
    return replace(long, options=options + OPTIONS[option][1], root=Path(root) / run_name(option, seed))


def plan(records: dict[str, Record], epochs: int, data_dir: str, root: str) -> list[PlannedRun]:
    return plan_runs(RUNS, run_name, run_spec, epochs, data_dir, root)


@dataclass(frozen=True)
class Option(SeedGroup):
    """One option's recorded runs (one per seed)."""

    label: str
    runs: tuple[Record, ...]


@dataclass(frozen=True)
class Reference(SeedGroup):
    """The 100-epoch study's run of the long recipe, read at the end of epoch ``epoch``."""

    label: str
    runs: tuple[Record, ...]
    epoch: int

    @property
    def top1(self) -> list[float]:
        return [100 * dict(run.history.get("val/top1", []))[self.epoch] for run in self.runs]


def options(records: Sequence[Record]) -> dict[str, Option]:
    """The recorded options, in :data:`OPTIONS`' order, each with its runs (seed order)."""
    found = {}
    for name, (label, _) in OPTIONS.items():
        runs = sorted((r for r in records if r.name.startswith(f"{name}-seed")), key=lambda r: r.name)
        if runs:
            found[name] = Option(label, tuple(runs))
    return found


def reference(long_study: Sequence[Record], epochs: int = EPOCHS) -> Reference | None:
    """The run the options are compared with: the 100-epoch study's run of the long recipe (seed
    :data:`SEED`) at the end of its epoch ``epochs - 1``; ``None`` until it has got that far."""
    run = {r.name: r for r in long_study}.get(ablation.run_name(base_arm(), SEED))
    if run is None or epochs - 1 not in dict(run.history.get("val/top1", [])):
        return None
    return Reference(f"{ablation.ARMS[base_arm()][0]} at epoch {epochs - 1} of its {ablation.LONG.epochs}-epoch run", (run,), epochs - 1)


def _finished(option: Option) -> bool:
    return not any(run.stopped_early for run in option.runs)


def compare(records: Sequence[Record], long_study: Sequence[Record], noise: float | None = None) -> list[str]:
    """One sentence per option recorded to its end: its held-out top-1 against the reference's at
    the same epoch, the gap judged against ``noise`` (the 30-epoch study's seed spread)."""
    sentences = []
    for option in options(records).values():
        base = reference(long_study, option.runs[0].epochs or EPOCHS)
        if base is not None and _finished(option):
            sentences.append(gap_sentence(option, base, noise, ablation.NOISE_SOURCE))
    return sentences


def table(records: Sequence[Record], long_study: Sequence[Record]) -> str:
    """Markdown: the reference and one row per recorded option, with held-out top-1 and top-5 at
    the end of the arm, parameters, MFLOPs per image and fit time."""
    found = options(records)
    if not found:
        return "**No run of the options study is recorded.** `python -m vitlib.lab.results.options --data-dir DIR` trains and records it."
    rows = []
    first = next(iter(found.values())).runs[0]
    base = reference(long_study, first.planned_epochs or first.epochs or EPOCHS)
    if base is not None:
        run = base.runs[0]
        top5 = dict(run.history.get("val/top5", []))[base.epoch]
        rows.append(_row(base.label, base, 100 * top5, run, fit_s=None))
    for option in found.values():
        run = option.runs[0]
        epochs = f"{run.epochs} of {run.planned_epochs} (not finished)" if run.stopped_early else ""
        label = f"{option.label}, {epochs}" if epochs else option.label
        fits = [(r.throughput or {}).get("fit_wall_s") for r in option.runs]
        fit_s = statistics.fmean(fits) if all(fits) else None
        rows.append(_row(label, option, statistics.fmean(100 * r.metrics.top5 for r in option.runs), run, fit_s))
    return markdown_table(rows)


def _row(label: str, group: SeedGroup, top5: float, run: Record, fit_s: float | None) -> dict[str, str]:
    size = run.size or {}
    return {
        "run": label,
        "held-out top-1": group.describe(),
        "top-5": f"{top5:.1f} %",
        "parameters (M)": f"{size['parameters'] / 1e6:.3f}" if "parameters" in size else "?",
        "MFLOPs / image": f"{size['flops_per_image'] / 1e6:.1f}" if "flops_per_image" in size else "?",
        "fit (min)": f"{fit_s / 60:.0f}" if fit_s else "",
    }


def load(folder: str | Path = FOLDER) -> list[Record]:
    """The options study's results files in ``folder`` (none when it does not exist)."""
    return load_results(folder)


def describe(records: Sequence[Record]) -> str:
    """One line of provenance for a caption."""
    return provenance(records, "options-study run", "python -m vitlib.lab.results.options")


def main(argv: Sequence[str] | None = None) -> None:
    comparison.main(argv, "python -m vitlib.lab.results.options", "the model-options study", ablation.RECIPE, EPOCHS, FOLDER, LOGS, plan)


if __name__ == "__main__":
    main()
