"""The recorded runs the chapters show: found in this checkout's ``results/``, else fetched from
the repository by URL (Colab, without a checkout), never trained here.

:func:`run` is one run (the book's run by default), :func:`grid_runs` and :func:`study_runs` the
runs of a comparison, :func:`path` the book's two full-length ViT runs in the order they ran, and
:func:`missing` the sentence a chapter prints when there is none.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ...support.provenance import repository_root
from ..results import ablation, grid, records
from ..results.records import Record, RecordedRun, load_record

# The book's recipe trained long on the CPU (configs/cpu_long.yaml): the model chapters 1, 2, 6
# and 7 show. The short CPU run (configs/cpu.yaml) is on the results page.
BOOK_RUN = "cpu-long"
CPU_RUN = "cpu-recipe"
# The book's two full-length ViT runs on the test set in the order they ran, each with how its recipe was chosen
# (results page, chapter 6).
PATH = (
    (CPU_RUN, "the cheaper of the two CPU tuning candidates (width 96: within a point of width 128 on held-out "
              "training images, with a markedly cheaper step), for as many epochs as fit an hour of two cores"),
    (BOOK_RUN, "everything chapters 4 and 5 teach switched on, for 100 epochs; fixed before the recipe study measured "
               "each part; SPT and LSA left out after the stem x attention grid, which validated on the test set"),
)


def path() -> list[tuple[Record, str]]:
    """The runs of :data:`PATH`, each with how it was decided; empty unless all are recorded (a
    missing step would make the next one's changes wrong)."""
    steps = [(found.record, decided) for name, decided in PATH if (found := run(name)) is not None]
    return steps if len(steps) == len(PATH) else []


def run(name: str = BOOK_RUN) -> RecordedRun | None:
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


def missing(name: str = BOOK_RUN, folder: str = "results") -> str:
    """Why :func:`run` found nothing, and what to do: one sentence for the chapter."""
    root = repository_root()
    url = _records_url(folder)
    here = f"not in {root / folder}" if root else "no checkout of the book here"
    there = f"not at {url}{name}.json either (offline, or not published there)" if url else "no records URL set"
    return (
        f"No recorded run '{name}' ({here}; {there}). Open the chapter in a clone of {records.REPOSITORY_URL}, "
        f"or set {records.RECORDS_ENV} to a copy of its results/ folder."
    )


def grid_run(stem: str, attention: str, seed: int = 0) -> RecordedRun | None:
    """One run of the stem x attention grid (:mod:`vitlib.lab.results.grid`), like :func:`run`."""
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


def grid_runs() -> list[Record]:
    """Every recorded run of the grid (:mod:`vitlib.lab.results.grid`), from the checkout or the repository."""
    return _comparison_records(grid.FOLDER, lambda found: [grid.run_name(*run) for run in grid.planned_runs(found)])


def study_runs(study: ablation.Study = ablation.SHORT) -> list[Record]:
    """Every recorded run of the recipe study at ``study``'s length (:mod:`vitlib.lab.results.ablation`),
    from the checkout or the repository."""
    return _comparison_records(study.folder, lambda _: [ablation.run_name(*run) for run in study.runs])
