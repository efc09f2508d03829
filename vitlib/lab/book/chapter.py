"""What the book's notebooks run on: which data, how much training, which machine.

The same notebooks run in very different places (pytest on a CPU with no dataset, the book build,
Colab with a GPU), so these choices are made here once, from the environment, and every figure
caption states the outcome:

* the **data** (:func:`data_source`): synthetic stripes in quick mode (``VITLIB_QUICK=1``, which
  ``notebooks/conftest.py`` sets for ``pytest --nbmake``); otherwise the official CIFAR-100 at
  ``$VITLIB_DATA`` (default ``<repository>/data``, downloaded there when the network allows),
  md5-verified; or, when those files fail the md5 check, the real images they hold, read as a
  subset; and when there is no dataset at all, synthetic data again, saying why.
* the **demonstration budget** (:func:`training_budget`): runs of seconds, for the chapters that
  train while they run (chapter 6's own training to a time budget is :mod:`vitlib.lab.book.own_run`).
* the **machine and the chapter's cost** (:func:`show_setup`), printed first.

The trained models the chapters show are in :mod:`vitlib.lab.book.recorded`; what a model does on the
test split is read by :mod:`vitlib.lab.book.evaluation`.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import platform
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...cli import recipe_config  # noqa: F401 - the chapters call it as chapter.recipe_config
from ...data import CIFAR100DataModule
from ...schedule import ScheduleConfig
from ...support.cifar import (
    FINE_LABELS,
    DatasetId,
    DatasetNotFoundError,
    default_data_dir,
    ensure_cifar100,
    identify_cifar100,
    quick_mode,
)
from ...support.provenance import gpu_name, repository_root
from ..results import chapter_costs


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
    and how many batches make an epoch. Chapter 6's real training is :mod:`vitlib.lab.book.own_run`."""

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


def show_setup(source: DataSource, notebook: str | None = None) -> None:
    """A chapter's first output: the machine it runs on (one line), what the chapter (named by its
    ``notebook``) costs to run (:mod:`vitlib.lab.results.chapter_costs`), and the data note."""
    from IPython.display import HTML, display

    print(report())
    if notebook is not None:
        print(chapter_costs.cost_line(notebook, chapter_costs.load()))
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
