"""The recipe study of chapters 4 and 5: the book's recipe with one thing taken away, at two lengths.

The recipe (``configs/cpu_long.yaml``: RandAugment N = 2, M = 9, CutMix / MixUp on every batch,
the triangular cyclical learning rate, two cycles) is trained on 45,000 training images and
validated on the other 5,000 (``--data.val_split 5000``), never on the test set. Each other arm
changes exactly one thing: RandAugment off, CutMix / MixUp off, or warm-up + cosine (the CPU
recipe's schedule, same peak learning rate) instead of the triangular cycles.

The study runs at two lengths (:data:`STUDIES`), because strong augmentation may pay off only in
a long run: :data:`SHORT`, 30 epochs, every arm, and the headline comparison (RandAugment on vs
off) with a second seed, so that its gap can be set against the seed-to-seed noise; and
:data:`LONG`, 100 epochs (the long run's length), the recipe and its two augmentation arms with
one seed each, the short study's seed spread quoted as their noise. One command trains and records
a study, skipping what is recorded and resuming a run that was cut short from its last checkpoint::

    python -m vitlib.lab.results.ablation --data-dir data-q75                  # 30 epochs
    python -m vitlib.lab.results.ablation --data-dir data-q75 --epochs 100     # 100 epochs
    python -m vitlib.lab.results.ablation --data-dir data-q75 --dry-run        # the commands still to run

On two CPU cores, two runs side by side with one thread each train about 10 % more images per
second in total than one run with two threads, and torch.compile is slower here
(``results/speed/threads-cpu/``: 251 + 245 against 445 images/s, compiled 423)::

    OMP_NUM_THREADS=1 python -m vitlib.lab.results.ablation --data-dir data-q75 --epochs 100 --only recipe-seed0 &
    OMP_NUM_THREADS=1 python -m vitlib.lab.results.ablation --data-dir data-q75 --epochs 100 --only no-mix-seed0 &

A seed here is ``seed_everything``: the model's initialisation and the mixing draws. The held-out
split, the order of the batches and each image's augmentation follow ``data.seed`` (0 in every
run), so two arms of one seed see the same images in the same order.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...cli import recipe_config
from ...support.timed import recipe_schedule
from . import comparison
from .comparison import PlannedRun, SeedGroup, gap, gap_sentence, leads, plan_runs, provenance
from .launch import Data, RunSpec
from .records import Record, load_results
from .tables import markdown_table

VAL_SPLIT = 5000

# name: (how the book writes it, the overrides of the recipe's command line)
ARMS: dict[str, tuple[str, tuple[tuple[str, object], ...]]] = {
    "recipe": ("the recipe", ()),
    "no-randaugment": ("without RandAugment", (("data.augment.randaugment", False),)),
    "no-mix": ("without CutMix / MixUp", (("data.mix", None),)),
    # The CPU recipe's schedule (configs/cpu.yaml): warm-up over one epoch to the same peak.
    "cosine": (
        "warm-up + cosine instead of triangular",
        (("model.schedule.name", "cosine"), ("model.schedule.warmup_epochs", 1), ("model.schedule.min_lr", "1e-5")),
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


@dataclass(frozen=True)
class Study:
    """The study at one length: its runs ``(arm, seed)`` in the order they train, the folder of
    their records and the folder of their logs and checkpoints."""

    epochs: int
    runs: tuple[tuple[str, int], ...]
    folder: str
    logs: str

    def plan(self, records: dict[str, Record], epochs: int, data_dir: str, root: str) -> list[PlannedRun]:
        return plan_runs(self.runs, run_name, run_spec, epochs, data_dir, root)


# About 50 minutes a run on two quiet CPU cores (45,000 images an epoch at about 460 images/s; the
# recorded runs took 59 to 124 minutes on a machine running other work beside them): every
# arm with seed 0, then the headline comparison's two arms with the other seeds.
SHORT = Study(
    30, tuple((arm, SEEDS[0]) for arm in ARMS) + tuple((arm, seed) for seed in SEEDS[1:] for arm in COMPARISONS[HEADLINE]),
    "results/ablation", "runs/ablation",
)  # fmt: skip
# About 3 hours a run alone on two CPU cores (at about 445 images/s), about 5 hours for two side by side:
# the recipe first, then the arm of the largest short-study gap, then the other.
LONG = Study(100, (("recipe", 0), ("no-mix", 0), ("no-randaugment", 0)), "results/ablation-100", "runs/ablation-100")
STUDIES = {study.epochs: study for study in (SHORT, LONG)}
# Where the noise of the long study's single seeds comes from (the pages pass seed_noise(SHORT's records)).
NOISE_SOURCE = f"of the {SHORT.epochs}-epoch study"


# The recipe each budget gets, read from the study: up to SHORT_BUDGET_EPOCHS epochs the recipe
# without CutMix / MixUp (the best arm after 30 epochs: 2.9 points ahead of the next arm, 6.2 ahead
# of the whole recipe, each more than twice the seed spread),
# beyond it the long run's whole recipe, until the 100-epoch study says otherwise (budget_recipes
# says so while it is unfinished; a test holds each
# budget's config to an arm that best_arms lets a reader pick at its length, once the study there is
# recorded to its end). 50 lies between the two lengths measured (30 and 100); none in between is.
SHORT_BUDGET_EPOCHS = 50
# The long run's recipe, which every arm varies, whatever the study then advises for a long budget.
RECIPE_NAME = "cpu_long"
RECIPE = f"configs/{RECIPE_NAME}.yaml"
BUDGET_RECIPES = {"short": "short_budget", "long": RECIPE_NAME}  # configs/<name>.yaml


def recipe_for(epochs: int) -> str:
    """The config (``configs/<name>.yaml``) for a run of ``epochs`` epochs: ``short_budget`` up to
    :data:`SHORT_BUDGET_EPOCHS`, ``cpu_long`` beyond."""
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be a whole number >= 1; got {epochs!r}")
    return BUDGET_RECIPES["short" if epochs <= SHORT_BUDGET_EPOCHS else "long"]


def _trains(config: dict) -> dict:
    """What a config trains, apart from its length and the schedule's fit to it."""
    model = {**config["model"], "schedule": {**config["model"]["schedule"], "half_cycle_epochs": None}}
    return {"model": model, "data": config["data"]}


def _with(config: dict, overrides: tuple[tuple[str, object], ...]) -> dict:
    """``config`` with command-line overrides (dotted keys) applied, as the CLI applies them."""
    config = copy.deepcopy(config)
    for key, value in overrides:
        *path, last = key.split(".")
        node = config
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return config


def arm_of(config: str) -> str | None:
    """The arm whose runs ``configs/<config>.yaml`` trains: the recipe with that arm's overrides,
    its length and the schedule's fit to it aside; ``None`` when it is no arm's."""
    recipe, wanted = recipe_config(RECIPE_NAME), recipe_config(config)
    if wanted is None:
        raise ValueError(f"there is no configs/{config}.yaml")
    return next((arm for arm, (_, overrides) in ARMS.items() if _trains(_with(recipe, overrides)) == _trains(wanted)), None)


def run_spec(arm: str, seed: int, epochs: int, data_dir: str, root: str) -> RunSpec:
    """The ``python -m vitlib fit`` run of one arm, writing under ``root``. The triangular
    schedule keeps the recipe's shape, two whole cycles, at any number of epochs."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; the arms are {', '.join(ARMS)}")
    schedule, cycles = recipe_schedule(recipe_config(RECIPE_NAME))
    options = (("trainer.max_epochs", epochs), *schedule.fitted(epochs, cycles).options(),
               ("data.val_split", VAL_SPLIT), ("seed_everything", seed), *ARMS[arm][1])  # fmt: skip
    return RunSpec(RECIPE, options, Data(data_dir), Path(root) / run_name(arm, seed))


def load(folder: str | Path = SHORT.folder) -> list[Record]:
    """The study's results files in ``folder`` (none when it does not exist)."""
    return load_results(folder)


@dataclass(frozen=True)
class Arm(SeedGroup):
    """One arm of the study: its runs' results (one per seed)."""

    arm: str
    runs: tuple[Record, ...]

    @property
    def label(self) -> str:
        return ARMS[self.arm][0]


def arms(records: Sequence[Record]) -> dict[str, Arm]:
    """The recorded arms, in the study's order, each with its runs (seed order)."""
    found = {}
    for arm in ARMS:
        runs = sorted((r for r in records if r.name.startswith(f"{arm}-seed")), key=lambda r: r.name)
        if runs:
            found[arm] = Arm(arm, tuple(runs))
    return found


def _stopped(run: Record) -> bool:
    return bool(run.stopped_early)


def _epochs(run: Record) -> str:
    """``"100"``, or ``"44 of 100"`` for a run recorded before its end."""
    planned = run.planned_epochs
    return f"{run.epochs} of {planned}" if _stopped(run) else str(run.epochs)


def _history(run: Record, key: str) -> list[tuple[int, float]]:
    return run.history.get(key, [])


def table(records: Sequence[Record]) -> str:
    """Markdown: one row per recorded arm, with its held-out top-1 (mean ± sample standard
    deviation over seeds, and each seed), top-5, loss, the training top-1 of its last epoch (on
    augmented, mixed batches) and its time."""
    found = arms(records)
    if not found:
        return "**No run of the recipe study is recorded.** `python -m vitlib.lab.results.ablation --data-dir DIR` trains and records it."
    rows = []
    for arm in found.values():
        runs = arm.runs
        fit_s = [(r.throughput or {}).get("fit_wall_s") for r in runs]
        rows.append({
            "arm": arm.label,
            "held-out top-1": arm.describe(),
            "per seed": ", ".join(f"{v:.1f}" for v in arm.top1),
            "top-5": f"{statistics.fmean(100 * r.metrics.top5 for r in runs):.1f} %",
            "loss": f"{statistics.fmean(r.metrics.loss for r in runs):.3f}",
            "train top-1, last epoch": f"{statistics.fmean(100 * _history(r, 'train/top1')[-1][1] for r in runs):.1f} %",
            "epochs": "; ".join(sorted({_epochs(r) + " (not finished)" * _stopped(r) for r in runs})),
            "fit (min)": f"{statistics.fmean(fit_s) / 60:.0f}" if all(fit_s) else "?",
        })  # fmt: skip
    return markdown_table(rows)


def compare(records: Sequence[Record], name: str, noise: float | None = None) -> str | None:
    """The gap sentence of comparison ``name`` (a key of ``COMPARISONS``), against the arms' own
    seed spread, else ``noise`` (the short study's, for the long study's single seeds); ``None``
    until both of its arms are recorded to their last epoch (:func:`so_far` tells of runs in
    progress)."""
    found = arms(records)
    with_it, without = COMPARISONS[name]
    if with_it not in found or without not in found or any(map(_stopped, found[with_it].runs + found[without].runs)):
        return None
    return gap_sentence(found[with_it], found[without], noise, NOISE_SOURCE)


def verdict(records: Sequence[Record], name: str, noise: float | None = None) -> str | None:
    """What comparison ``name`` says of the long run's choice (it trained with every part of the
    recipe before the study ran): supported when the recipe ends clearly ahead, contradicted when
    the arm without the part does, not settled otherwise (noise as in :func:`compare`, which
    states it; this sentence repeats it only when it leaves the question open); ``None`` until
    both arms are recorded to their last epoch."""
    found = arms(records)
    with_it, without = (found.get(arm) for arm in COMPARISONS[name])
    if with_it is None or without is None or any(map(_stopped, with_it.runs + without.runs)):
        return None
    g = gap(with_it, without, noise, NOISE_SOURCE)
    numbers = f"with it {with_it.mean:.1f} %, {without.label} {without.mean:.1f} % held-out top-1"
    epochs = with_it.runs[0].epochs
    if not g.clear:
        return f"after {epochs} epochs the study does not settle the long run's choice of {name}: {numbers} ({g.judged()})"
    said = "supports" if g.points > 0 else "contradicts"
    return f"after {epochs} epochs the study {said} the long run's choice of {name}: {numbers}"


def seed_noise(records: Sequence[Record]) -> float | None:
    """The largest seed-to-seed standard deviation of held-out top-1 (points) among the arms run
    with more than one seed; ``None`` when none was."""
    spreads = [arm.spread for arm in arms(records).values() if arm.spread is not None]
    return max(spreads) if spreads else None


def best_arms(records: Sequence[Record], study: Study, noise: float | None = None) -> list[str]:
    """The arms of ``study`` that a reader may pick: the best by held-out top-1 and every arm
    within twice the noise of it (their own larger seed spread, else ``noise``; with none, the
    best alone), best first. Empty until every run of the study is recorded to its last epoch."""
    names = {r.name: r for r in records}
    if any(run_name(*run) not in names or _stopped(names[run_name(*run)]) for run in study.runs):
        return []
    found = sorted(arms([names[run_name(*run)] for run in study.runs]).values(), key=lambda arm: -arm.mean)
    best = found[0]
    return [arm.arm for arm in found if arm is best or gap(best, arm, noise).clear is False]


def effect(records: Sequence[Record], name: str, noise: float | None = None) -> str | None:
    """What comparison ``name`` means for a run of the study's length, in one sentence for a
    reader deciding whether to switch the part on: it helps, it hurts, or no clear difference (a
    gap within twice the seed-to-seed standard deviation), each part taken away alone from the
    whole recipe, with both arms' held-out top-1 and the noise beside them. The noise is the arms'
    own seed spread, else ``noise`` (e.g. the short study's, for the long study's single seeds).
    Runs still in progress give :func:`so_far` and no advice; ``None`` until both arms are
    recorded."""
    found = arms(records)
    with_it, without = (found.get(arm) for arm in COMPARISONS[name])
    if with_it is None or without is None:
        return _not_recorded(found, name)
    planned = with_it.runs[0].planned_epochs or with_it.runs[0].epochs
    if any(map(_stopped, with_it.runs + without.runs)):
        return f"{planned} epochs, {name}: not measured yet, the runs are {so_far(records, name)}"
    g = gap(with_it, without, noise, NOISE_SOURCE)
    said = {None: "is not settled", True: "helps" if g.points > 0 else "hurts", False: "makes no clear difference"}[g.clear]
    return (
        f"{planned} epochs, {name} {said}: {with_it.label} {with_it.describe()}, {without.label} {without.describe()} "
        f"held-out top-1, {g.points:+.1f} points for {name} ({g.judged()})"
    )


def _not_recorded(found: dict[str, Arm], name: str) -> str | None:
    """For a comparison an arm of which the study plans but has not recorded: the sentence that
    says so; ``None`` when the study is not recognised or does not plan that comparison."""
    run = next((arm.runs[0] for arm in found.values()), None)
    study = STUDIES.get((run.planned_epochs or run.epochs) if run else None)
    missing = [arm for arm in COMPARISONS[name] if arm not in found]
    if study is None or not all(any(arm == planned for planned, _ in study.runs) for arm in missing):
        return None
    return f"{study.epochs} epochs, {name}: not measured yet ({', '.join(ARMS[arm][0] for arm in missing)}: not recorded yet)"


def budget_recipes(long_study: Sequence[Record] = (), noise: float | None = None) -> str:
    """Which config :func:`recipe_for` gives each budget, and what it switches on, read from the
    configs themselves; while the 100-epoch study (``long_study``, judged against ``noise`` as in
    :func:`best_arms`) has not recorded every run to its end, that the long budget's recipe is
    not yet its answer."""

    def parts(name: str) -> str:
        config = recipe_config(name)
        augment, mix = config["data"].get("augment") or {}, config["data"].get("mix")
        on = ["RandAugment" if augment.get("randaugment") else "", "CutMix / MixUp" if mix else ""]
        off = ["RandAugment" if not augment.get("randaugment") else "", "CutMix / MixUp" if not mix else ""]
        said = [f"with {' and '.join(filter(None, on))}" if any(on) else "", f"without {' and '.join(filter(None, off))}" if any(off) else ""]
        return f"`configs/{name}.yaml` ({', '.join(filter(None, said))})"

    said = (
        f"up to {SHORT_BUDGET_EPOCHS} epochs, {parts(BUDGET_RECIPES['short'])}; beyond, "
        f"{parts(BUDGET_RECIPES['long'])} (`vitlib.lab.results.ablation.recipe_for`)"
    )
    if best_arms(long_study, LONG, noise):
        return said
    ended = sum(not _stopped(r) for r in long_study if r.name in {run_name(*run) for run in LONG.runs})
    return f"{said}; the long budget's recipe is not the {LONG.epochs}-epoch study's answer yet: {ended} of its {len(LONG.runs)} runs are recorded to their end"


def _pair(records: Sequence[Record], name: str, seed: int) -> tuple[dict[int, float], dict[int, float]] | None:
    """The held-out top-1 curves (points) of comparison ``name``'s two runs with ``seed``."""
    by_name = {r.name: r for r in records}
    pair = [by_name.get(run_name(arm, seed)) for arm in COMPARISONS[name]]
    if None in pair:
        return None
    a, b = ({e: 100 * v for e, v in _history(r, "val/top1")} for r in pair)
    return a, b


def crossing(records: Sequence[Record], name: str, seed: int = SEEDS[0]) -> str | None:
    """Who leads in which epochs on the held-out curves of comparison ``name`` (seed ``seed``),
    every crossing named (:func:`vitlib.lab.results.comparison.leads`); ``None`` until both runs are
    recorded."""
    pair = _pair(records, name, seed)
    if pair is None:
        return None
    labels = [ARMS[arm][0] for arm in COMPARISONS[name]]
    return f"{leads(labels[0], pair[0], labels[1], pair[1])} (seed {seed})"


def so_far(records: Sequence[Record], name: str, seed: int = SEEDS[0]) -> str | None:
    """For a comparison whose runs (seed ``seed``) are recorded before their end: how far each
    got, and both held-out top-1 at the last epoch both reached; ``None`` when both finished (see
    :func:`compare`) or either is not recorded."""
    by_name = {r.name: r for r in records}
    runs = [by_name.get(run_name(arm, seed)) for arm in COMPARISONS[name]]
    pair = _pair(records, name, seed)
    if pair is None or not any(map(_stopped, runs)):
        return None
    labels = [ARMS[arm][0] for arm in COMPARISONS[name]]
    common = max(set(pair[0]) & set(pair[1]))
    return (
        f"not finished: {labels[0]} after {_epochs(runs[0])} epochs, {labels[1]} after {_epochs(runs[1])}; "
        f"at epoch {common} (counted from 0), the last both reached, {labels[0]} {pair[0][common]:.1f} % against "
        f"{pair[1][common]:.1f} % held-out top-1 ({pair[0][common] - pair[1][common]:+.1f} points, seed {seed})"
    )


def curves(records: Sequence[Record], name: str) -> dict[str, list[dict[str, list[tuple[int, float]]]]]:
    """The histories of comparison ``name``'s two arms, ``{label: [history per seed]}``, for
    :func:`vitlib.lab.book.figures.plot_run_curves`."""
    found = arms(records)
    return {
        found[arm].label: [{k: _history(r, k) for k in r.history} for r in found[arm].runs]
        for arm in COMPARISONS[name]
        if arm in found
    }


def describe(records: Sequence[Record]) -> str:
    """One line of provenance for a caption."""
    return provenance(records, "recipe-study run", "python -m vitlib.lab.results.ablation")


def main(argv: Sequence[str] | None = None) -> None:
    prog = "python -m vitlib.lab.results.ablation"
    # --epochs picks the study, and with it the folders of its records and runs.
    length = argparse.ArgumentParser(prog=prog, add_help=False)
    length.add_argument("--epochs", type=int, choices=sorted(STUDIES), default=SHORT.epochs)
    study = STUDIES[length.parse_known_args(argv)[0].epochs]
    comparison.main(argv, prog, f"the recipe study at {study.epochs} epochs", RECIPE, study.epochs, study.folder, study.logs, study.plan)


if __name__ == "__main__":
    main()
