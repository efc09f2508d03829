"""The recipe study of chapters 4 and 5: the book's recipe with one thing taken away.

The recipe (``configs/cpu_long.yaml``: RandAugment N = 2, M = 9, CutMix / MixUp on every batch,
the triangular cyclical learning rate, two cycles) is trained for ``EPOCHS`` epochs on 45,000
training images and validated on the other 5,000 (``--data.val_split 5000``), never on the test
set. Each other arm changes exactly one thing: RandAugment off, CutMix / MixUp off, or warm-up +
cosine (the CPU recipe's schedule, same peak learning rate) instead of the triangular cycles. The
headline comparison (RandAugment on vs off) is trained with a second seed, so that its gap can be
set against the seed-to-seed noise. One command trains and records all of it, skipping what is
recorded and resuming a run that was cut short from its last checkpoint::

    python -m vitlib.lab.ablation --data-dir data-q75
    python -m vitlib.lab.ablation --data-dir data-q75 --dry-run    # the commands still to run

A seed here is ``seed_everything``: the model's initialisation and the mixing draws. The held-out
split, the order of the batches and each image's augmentation follow ``data.seed`` (0 in every
run), so two arms of one seed see the same images in the same order.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import comparison
from .comparison import PlannedRun, SeedGroup, gap_sentence, provenance
from .records import load_results
from .tables import markdown_table

RECIPE = "configs/cpu_long.yaml"
# About 50 minutes a run on two CPU cores (45,000 images an epoch at about 460 images/s).
EPOCHS = 30
VAL_SPLIT = 5000
FOLDER = "results/ablation"

# name: (how the book writes it, the overrides of the recipe's command line)
ARMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "recipe": ("the recipe", ()),
    "no-randaugment": ("without RandAugment", ("--data.augment.randaugment", "false")),
    "no-mix": ("without CutMix / MixUp", ("--data.mix", "null")),
    # The CPU recipe's schedule (configs/cpu.yaml): warm-up over one epoch to the same peak.
    "cosine": (
        "warm-up + cosine instead of triangular",
        ("--model.schedule.name", "cosine", "--model.schedule.warmup_epochs", "1", "--model.schedule.min_lr", "1e-5"),
    ),
}
# What each comparison varies: (the arm with it, the arm without it).
COMPARISONS: dict[str, tuple[str, str]] = {
    "RandAugment": ("recipe", "no-randaugment"),
    "CutMix / MixUp": ("recipe", "no-mix"),
    "triangular cyclical LR": ("recipe", "cosine"),
}
HEADLINE = "RandAugment"
SEEDS = (0, 1)


def run_name(arm: str, seed: int) -> str:
    return f"{arm}-seed{seed}"


def planned_runs() -> list[tuple[str, int]]:
    """Every arm with seed 0, then the headline comparison's two arms with the other seeds."""
    return [(arm, SEEDS[0]) for arm in ARMS] + [(arm, seed) for seed in SEEDS[1:] for arm in COMPARISONS[HEADLINE]]


def fit_command(arm: str, seed: int, epochs: int, data_dir: str, root: str) -> list[str]:
    """The ``python -m vitlib fit`` command line of one run, writing under ``root``. The
    triangular schedule keeps the recipe's shape, two whole cycles, at any number of epochs."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; the arms are {', '.join(ARMS)}")
    return [
        "python", "-m", "vitlib", "fit", "--config", RECIPE,
        "--trainer.max_epochs", str(epochs), "--model.schedule.half_cycle_epochs", f"{epochs / 4:g}",
        "--data.val_split", str(VAL_SPLIT), "--seed_everything", str(seed), *ARMS[arm][1],
        "--data.data_dir", data_dir, "--data.verify_md5", "false", "--data.download", "false",
        "--trainer.default_root_dir", str(Path(root) / run_name(arm, seed)),
    ]  # fmt: skip


def plan(records: dict[str, dict[str, Any]], epochs: int, data_dir: str, root: str) -> list[PlannedRun]:
    return [
        PlannedRun(run_name(*run), tuple(fit_command(*run, epochs, data_dir, root)), Path(root) / run_name(*run))
        for run in planned_runs()
    ]


def load(folder: str | Path = FOLDER) -> list[dict[str, Any]]:
    """The study's results files in ``folder`` (none when it does not exist)."""
    return load_results(folder)


@dataclass(frozen=True)
class Arm(SeedGroup):
    """One arm of the study: its runs' results (one per seed)."""

    arm: str
    runs: tuple[dict[str, Any], ...]

    @property
    def label(self) -> str:
        return ARMS[self.arm][0]


def arms(records: Sequence[dict[str, Any]]) -> dict[str, Arm]:
    """The recorded arms, in the study's order, each with its runs (seed order)."""
    found = {}
    for arm in ARMS:
        runs = sorted((r for r in records if r["name"].startswith(f"{arm}-seed")), key=lambda r: r["name"])
        if runs:
            found[arm] = Arm(arm, tuple(runs))
    return found


def _history(run: dict[str, Any], key: str) -> list[tuple[int, float]]:
    return [(int(e), float(v)) for e, v in run.get("history", {}).get(key, [])]


def table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per recorded arm, with its held-out top-1 (mean ± sample standard
    deviation over seeds, and each seed), top-5, loss, the training top-1 of its last epoch (on
    augmented, mixed batches) and its time."""
    found = arms(records)
    if not found:
        return "**No run of the recipe study is recorded.** `python -m vitlib.lab.ablation --data-dir DIR` trains and records it."
    rows = []
    for arm in found.values():
        runs = arm.runs
        fit_s = [(r.get("throughput") or {}).get("fit_wall_s") for r in runs]
        rows.append({
            "arm": arm.label,
            "held-out top-1": arm.describe(),
            "per seed": ", ".join(f"{v:.1f}" for v in arm.top1),
            "top-5": f"{statistics.fmean(100 * r['metrics']['top5'] for r in runs):.1f} %",
            "loss": f"{statistics.fmean(r['metrics']['loss'] for r in runs):.3f}",
            "train top-1, last epoch": f"{statistics.fmean(100 * _history(r, 'train/top1')[-1][1] for r in runs):.1f} %",
            "epochs": runs[0].get("epochs"),
            "fit (min)": f"{statistics.fmean(fit_s) / 60:.0f}" if all(fit_s) else "?",
        })  # fmt: skip
    return markdown_table(rows)


def compare(records: Sequence[dict[str, Any]], name: str) -> str | None:
    """The gap sentence of comparison ``name`` (a key of ``COMPARISONS``); ``None`` until both
    of its arms are recorded."""
    found = arms(records)
    with_it, without = COMPARISONS[name]
    if with_it not in found or without not in found:
        return None
    return gap_sentence(found[with_it], found[without])


def verdict(records: Sequence[dict[str, Any]], name: str) -> str | None:
    """What comparison ``name`` says of the long run's choice (it trained with every part of the
    recipe before the study ran): supported when the recipe ends ahead, contradicted when the arm
    without the part does, with the noise it was measured against; ``None`` until both arms are
    recorded."""
    found = arms(records)
    with_it, without = (found.get(arm) for arm in COMPARISONS[name])
    if with_it is None or without is None:
        return None
    gap = with_it.mean - without.mean
    spreads = [s for s in (with_it.spread, without.spread) if s is not None]
    if not spreads:
        noise = "one seed each, so the gap is not yet set against the seed-to-seed noise"
    elif abs(gap) > 2 * max(spreads):
        noise = f"more than twice the seed-to-seed standard deviation ({max(spreads):.1f})"
    else:
        noise = f"within twice the seed-to-seed standard deviation ({max(spreads):.1f}), so not settled"
    epochs = with_it.runs[0].get("epochs")
    if gap >= 0:
        return (f"after {epochs} epochs the study supports the long run's choice of {name}: "
                f"with it {with_it.mean:.1f} %, {without.label} {without.mean:.1f} % held-out top-1 ({noise})")
    return (f"after {epochs} epochs the study contradicts the long run's choice of {name}: "
            f"{without.label} reaches {without.mean:.1f} % held-out top-1, the recipe {with_it.mean:.1f} % ({noise})")


def crossing(records: Sequence[dict[str, Any]], name: str, seed: int = SEEDS[0]) -> str | None:
    """Where the held-out curves of comparison ``name`` (seed ``seed``) cross, as a sentence:
    which arm leads up to which epoch and which leads from then on to the end; ``None`` until
    both runs are recorded."""
    by_name = {r["name"]: r for r in records}
    pair = [by_name.get(run_name(arm, seed)) for arm in COMPARISONS[name]]
    if None in pair:
        return None
    (a_label, b_label), (a, b) = (ARMS[arm][0] for arm in COMPARISONS[name]), (dict(_history(r, "val/top1")) for r in pair)
    epochs = sorted(set(a) & set(b))
    ahead = [a[e] > b[e] for e in epochs]
    last = ahead[-1]
    # The last epoch at which the arm that ends ahead was not ahead.
    behind = [e for e, lead in zip(epochs, ahead) if lead != last]
    winner, loser = (a_label, b_label) if last else (b_label, a_label)
    if not behind:
        return f"{winner} is ahead of {loser} after every epoch (seed {seed})"
    # Epochs as the curves number them (from 0).
    return f"{loser} leads or ties up to epoch {behind[-1]}; {winner} is ahead from epoch {behind[-1] + 1} to the last, epoch {epochs[-1]} (seed {seed})"


def curves(records: Sequence[dict[str, Any]], name: str) -> dict[str, list[dict[str, list[tuple[int, float]]]]]:
    """The histories of comparison ``name``'s two arms, ``{label: [history per seed]}``, for
    :func:`vitlib.lab.figures.plot_run_curves`."""
    found = arms(records)
    return {
        found[arm].label: [{k: _history(r, k) for k in r.get("history", {})} for r in found[arm].runs]
        for arm in COMPARISONS[name]
        if arm in found
    }


def describe(records: Sequence[dict[str, Any]]) -> str:
    """One line of provenance for a caption."""
    return provenance(records, "recipe-study run", "python -m vitlib.lab.ablation")


def main(argv: Sequence[str] | None = None) -> None:
    comparison.main(argv, "python -m vitlib.lab.ablation", "the recipe study", RECIPE, EPOCHS, FOLDER, "runs/ablation", plan)


if __name__ == "__main__":
    main()
