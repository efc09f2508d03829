"""What the book's notebooks run on: which data, how much training, which trained model.

The same notebooks run in very different places (pytest on a CPU with no dataset, the book build,
Colab with a GPU), so three choices are made here once, from the environment, and every figure
caption states the outcome:

* the **data** (:func:`data_source`): synthetic stripes in quick mode (``VITLIB_QUICK=1``, which
  ``notebooks/conftest.py`` sets for ``pytest --nbmake``); otherwise the official CIFAR-100 at
  ``$VITLIB_DATA`` (default ``<repository>/data``, downloaded there when the network allows),
  md5-verified; or, when those files fail the md5 check, the real images they hold, read as a
  subset; and when there is no dataset at all, synthetic data again, saying why.
* the **demonstration budget** (:func:`training_budget`): runs of seconds, for the chapters that
  train while they run (chapter 6's own training to a time budget is :mod:`vitlib.lab.own_run`).
* the **trained model** (:func:`recorded_run`): the recorded run committed in ``results/`` (or
  fetched from the repository by URL), else ``None``, and the notebook says what it cannot show.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import platform
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from ..cli import recipe_config  # noqa: F401 - the chapters call it as book.recipe_config
from ..data import CIFAR100DataModule
from ..model import evaluating
from ..schedule import ScheduleConfig
from ..support.cifar import (
    COARSE_LABELS,
    FINE_LABELS,
    FINE_TO_COARSE,
    DatasetId,
    DatasetNotFoundError,
    default_data_dir,
    ensure_cifar100,
    identify_cifar100,
    quick_mode,
)
from ..support.provenance import gpu_name, repository_root
from . import ablation, chapter_costs, grid, records
from .records import Record, RecordedRun, load_record

@dataclass(frozen=True)
class DataSource:
    """Where the notebooks' images come from; ``caption`` goes under every figure made from them."""

    dataset: DatasetId
    root: Path | None
    caption: str

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, DatasetId):
            raise ValueError(f"DataSource.dataset must be a vitlib.support.cifar.DatasetId; got {self.dataset!r}")
        if self.dataset.real and self.root is None:
            raise ValueError(f"DataSource.root is required for {self.dataset.label}")

    @property
    def quick(self) -> bool:
        return not self.dataset.real

    @property
    def real(self) -> bool:
        """Real CIFAR-100 images (anything but quick mode's stripes)."""
        return self.dataset.real

    @property
    def class_names(self) -> list[str]:
        """Names for the labels: CIFAR-100's for real images; for synthetic ones names that say
        what they are ("stripes 3"), so that no striped square is ever labelled "fox"."""
        return list(FINE_LABELS) if self.real else [f"stripes {i}" for i in range(len(FINE_LABELS))]

    def datamodule(self, **kwargs: Any) -> CIFAR100DataModule:
        """A :class:`CIFAR100DataModule` that reads this source (``kwargs`` override its defaults;
        ``num_workers=0`` by default, because notebook kernels run on small machines)."""
        defaults: dict[str, Any] = {
            "data_dir": str(self.root) if self.root else None,
            "download": False,  # data_source() already fetched what could be fetched
            "verify_md5": self.dataset is DatasetId.OFFICIAL,
            "quick": self.quick,
            "num_workers": 0,
        }
        return CIFAR100DataModule(**{**defaults, **kwargs})


def data_source(root: str | Path | None = None, download: bool = True) -> DataSource:
    """Choose the notebooks' data (see the module docstring), downloading CIFAR-100 into ``root``
    (default :func:`vitlib.support.cifar.default_data_dir`) when it is missing and ``download`` is on."""
    if quick_mode():
        return DataSource(DatasetId.SYNTHETIC, None, "synthetic data (quick mode): class-coloured stripes, not real images")
    root = Path(root or default_data_dir()).expanduser().resolve()
    try:
        ensure_cifar100(root, download=download)
    except DatasetNotFoundError:
        caption = "synthetic data (quick mode: no CIFAR-100 found or downloadable): class-coloured stripes, not real images"
        return DataSource(DatasetId.SYNTHETIC, None, caption)
    dataset = identify_cifar100(root)
    return DataSource(dataset, root, dataset.label)


@dataclass(frozen=True)
class TrainingBudget:
    """A demonstration run of seconds on a CPU (chapter 5's range test): the model, its length,
    and how many batches make an epoch. Chapter 6's real training is :mod:`vitlib.lab.own_run`."""

    preset: str
    max_epochs: int
    batch_size: int
    limit_train_batches: int
    limit_val_batches: int
    precision: str
    num_workers: int | None  # data-loading processes; None: the DataModule's default
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def describe(self) -> str:
        return (
            f"short demonstration run: {self.preset}, {self.max_epochs} epochs of {self.limit_train_batches} "
            f"batches of {self.batch_size} (not a result)"
        )

    def trainer_kwargs(self) -> dict[str, Any]:
        return {"max_epochs": self.max_epochs, "precision": self.precision,
                "limit_train_batches": self.limit_train_batches, "limit_val_batches": self.limit_val_batches}  # fmt: skip


def training_budget(max_epochs: int | None = None) -> TrainingBudget:
    """A run of seconds on ``vit_tiny`` with one triangle of the cyclical schedule."""
    epochs = max_epochs or 4
    # One rise and fall of the triangular policy over the short run; a tiny model takes a larger LR.
    schedule = ScheduleConfig(name="cyclic", base_lr=2e-4, max_lr=2e-3, half_cycle_epochs=epochs / 2)
    # Small batches: on a CPU the per-image augmentation, not the tiny model, sets the pace.
    return TrainingBudget("vit_tiny", epochs, 32, 5, 2, "32-true", 0, schedule)


RUNS_ENV = "VITLIB_RUNS"


def runs_root() -> Path:
    """Where the notebooks' own training runs go: ``$VITLIB_RUNS`` when set (on Colab, a folder on
    Google Drive, so that chapter 7, which runs in a runtime of its own, finds chapter 6's model),
    else ``<repository>/runs/book`` (git-ignored), else a temporary folder outside a checkout."""
    if chosen := os.environ.get(RUNS_ENV, "").strip():
        return Path(chosen).expanduser()
    root = repository_root()
    return root / "runs" / "book" if root else Path(tempfile.gettempdir()) / "vitlib-book-runs"


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's start-up chatter (accelerator lines, tips) and its internal deprecation
    warnings for the duration, so notebook outputs show results; warnings about the run stay."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            yield
    finally:
        logger.setLevel(level)


# The book's recipe trained long on the CPU (configs/cpu_long.yaml): the model chapters 1, 2, 6
# and 7 show. The short CPU run (configs/cpu.yaml) is on the results page.
BOOK_RUN = "cpu-long"
CPU_RUN = "cpu-recipe"


def recorded_run(name: str = BOOK_RUN) -> RecordedRun | None:
    """The recorded run ``name`` from this checkout's ``results/``, else from the repository on
    GitHub (Colab); ``None`` when neither has it. Never trains."""
    return _load(name, "results")


def _records_url(folder: str) -> str | None:
    """Where the records of ``folder`` (``results`` or a folder inside it) are served."""
    url = records.records_url()
    return None if url is None else url if folder == "results" else f"{url}{Path(folder).name}/"


def _load(name: str, folder: str) -> RecordedRun | None:
    root = repository_root()
    return load_record(name, folder=root / folder if root else None, url=_records_url(folder))


def missing_run(name: str = BOOK_RUN, folder: str = "results") -> str:
    """Why :func:`recorded_run` found nothing, and what to do: one sentence for the chapter."""
    root = repository_root()
    url = _records_url(folder)
    here = f"not in {root / folder}" if root else "no checkout of the book here"
    there = f"not at {url}{name}.json either (offline, or not published there)" if url else "no records URL set"
    return (
        f"No recorded run '{name}' ({here}; {there}). Open the chapter in a clone of {records.REPOSITORY_URL}, "
        f"or set {records.RECORDS_ENV} to a copy of its results/ folder."
    )


def grid_run(stem: str, attention: str, seed: int = 0) -> RecordedRun | None:
    """One run of the stem x attention grid (:mod:`vitlib.lab.grid`), like :func:`recorded_run`."""
    return _load(grid.run_name(stem, attention, seed), grid.FOLDER)


def _comparison_records(folder: str, planned: Callable[[dict[str, Record]], list[str]]) -> list[Record]:
    """Every recorded run of a comparison: this checkout's ``folder``, else fetched run by run
    from the repository (Colab), as far as ``planned(records so far)`` names them; empty when
    neither has them."""
    root = repository_root()
    if root is not None:
        return records.load_results(root / folder)
    found: dict[str, Record] = {}
    while True:  # a plan may name more runs once the first are in (the grid's best cell)
        fetched = [run for run in (_load(n, folder) for n in planned(found) if n not in found) if run is not None]
        if not fetched:
            return sorted(found.values(), key=lambda r: r.date)
        found.update({run.name: run.record for run in fetched})


def grid_records() -> list[Record]:
    """Every recorded run of the grid (:mod:`vitlib.lab.grid`), from the checkout or the repository."""
    return _comparison_records(grid.FOLDER, lambda found: [grid.run_name(*run) for run in grid.planned_runs(found)])


def ablation_records(study: ablation.Study = ablation.SHORT) -> list[Record]:
    """Every recorded run of the recipe study at ``study``'s length (:mod:`vitlib.lab.ablation`),
    from the checkout or the repository."""
    return _comparison_records(study.folder, lambda _: [ablation.run_name(*run) for run in study.runs])


def duration(seconds: float) -> str:
    """``seconds`` as a reader reads a run's length: "48 s", "12.5 min", "3.9 h"."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def report(source: DataSource | None = None) -> str:
    """One line about where this notebook runs: Python, torch, the device and the data source."""
    dev = device()
    name = gpu_name(dev) or f"CPU ({os.cpu_count()} cores)"
    line = f"Python {platform.python_version()}, torch {torch.__version__}, device: {name}"
    return line + (f"; data: {source.caption}" if source else "")


def data_note(source: DataSource) -> str:
    """HTML for the top of a chapter: which data its figures use, as a note (a warning when the
    images are synthetic). An admonition in the theme's own classes, so the built page styles it
    like a MyST note, and plain Jupyter or Colab still shows it as a wrapped paragraph."""
    kind, title = ("note", "Data") if source.real else ("warning", "Synthetic data, not CIFAR-100")
    return f'<div class="admonition {kind}"><p class="admonition-title">{title}</p><p>{html.escape(source.caption)}</p></div>'


def show_setup(source: DataSource, chapter: str | None = None) -> None:
    """A chapter's first output: the machine it runs on (one line), what the chapter (its
    notebook's name) costs to run (:mod:`vitlib.lab.chapter_costs`), and the data note."""
    from IPython.display import HTML, display

    print(report())
    if chapter is not None:
        print(chapter_costs.cost_line(chapter, chapter_costs.load()))
    display(HTML(data_note(source)))


def examples(source: DataSource, count: int = 8, train: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images of different classes (as far as the split allows) from the test (or
    training) split, in dataset order: ``(float [count, 3, 32, 32] in [0, 1], labels [count])``."""
    datamodule = source.datamodule()
    datamodule.prepare_data()
    datamodule.setup("fit" if train else "test")
    dataset = datamodule.train_set if train else datamodule.test_set
    labels = torch.as_tensor(dataset.targets)
    first_of_class = [i for i in range(len(labels)) if labels[i] not in labels[:i]]
    chosen = (first_of_class + [i for i in range(len(labels)) if i not in set(first_of_class)])[:count]
    images = torch.from_numpy(dataset.data[chosen]).permute(0, 3, 1, 2).float() / 255
    return images, labels[chosen]


def predict(model: torch.nn.Module, loader: Any, on: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(probabilities [N, K], labels [N])`` of ``model`` over a ``(images, labels)`` loader, on
    the CPU. Runs on the device ``on`` (default :func:`device`: the GPU when there is one), batch by
    batch, in eval mode under ``torch.inference_mode``; the model's mode and device are restored."""
    on = torch.device(on) if on is not None else device()
    home = next(model.parameters()).device
    probs, labels = [], []
    try:
        with evaluating(model.to(on), inference=True):
            for images, targets in loader:
                probs.append(model(images.to(on, non_blocking=True)).float().softmax(dim=-1).cpu())
                labels.append(targets.cpu())
    finally:
        model.to(home)
    return torch.cat(probs), torch.cat(labels)


def superclass_confusion(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[20, 20]`` counts: true CIFAR-100 superclass (rows) against the superclass of the predicted
    fine class (columns)."""
    to_coarse = torch.tensor(FINE_TO_COARSE)
    return multiclass_confusion_matrix(to_coarse[probs.argmax(dim=1)], to_coarse[labels], len(COARSE_LABELS))


def read_predictions(guesses: Sequence[int], truths: Sequence[int]) -> str:
    """What the prediction panels show, as a sentence: how many of the test images the model
    names right at its first guess, and for each wrong one what it took it for and whether the
    guess is in the true class's superclass."""
    wrong = [(int(g), int(t)) for g, t in zip(guesses, truths) if int(g) != int(t)]
    said = f"{len(truths) - len(wrong)} of the {len(truths)} test images are named right at the first guess"

    def mistake(guess: int, truth: int) -> str:
        true_group, guessed_group = (COARSE_LABELS[FINE_TO_COARSE[c]] for c in (truth, guess))
        where = f"the same superclass, {true_group}" if true_group == guessed_group else f"another superclass, {true_group} against {guessed_group}"
        return f"a `{FINE_LABELS[truth]}` is taken for a `{FINE_LABELS[guess]}` ({where})"

    return said + "".join(f"; {mistake(g, t)}" for g, t in wrong) + "."


def read_confusion(confusion: torch.Tensor, labels: Sequence[str], most: int = 3) -> str:
    """What to see in a confusion matrix (counts, true class in rows), as a sentence: the classes
    recognised best and worst (share of their row on the diagonal), and the ``most`` largest
    off-diagonal cells (share of the true class's images)."""
    counts = confusion.double()
    recall = counts.diagonal() / counts.sum(dim=1).clamp_min(1)
    order = recall.argsort(descending=True).tolist()
    share = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
    share.fill_diagonal_(-1)
    cells = share.flatten().argsort(descending=True)[:most].tolist()
    n = len(labels)
    said = lambda i: f"{labels[i]} ({recall[i]:.0%})"  # noqa: E731
    mixed = "; ".join(f"{labels[c // n]} taken for {labels[c % n]} ({share[c // n, c % n]:.0%})" for c in cells)
    return (f"Best recognised: {said(order[0])} and {said(order[1])}; worst: {said(order[-1])} and {said(order[-2])} "
            f"(share of each row on the diagonal). The largest confusions: {mixed} (share of the true class's images).")