"""What each chapter costs to run: the seconds its notebook took when the book was built, and the
line a chapter opens with (whether it needs a GPU, about how long it runs).

The seconds are read from a build's log, where Jupyter Book writes ``<notebook>: Executed notebook
in N seconds`` for every notebook it runs, and recorded with the build's machine and commit::

    jupyter-book build . 2>&1 | tee build.log
    python -m vitlib.lab.results.chapter_costs build.log     # writes results/chapters/costs.json

A chapter reads the record from the checkout, or from the repository by URL when it runs alone
(on Colab), like the recorded runs.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ...support.files import write_json_atomic
from ...support.provenance import git_commit, repository_root, this_machine
from ...support.pretrained import TIMEOUT_S
from .records import records_url

FILE = "chapters/costs.json"  # under results/
EXECUTED = re.compile(r"notebooks/(?P<chapter>[\w-]+)\.ipynb: Executed notebook in (?P<seconds>[\d.]+) seconds")
# Chapters that train on a GPU when there is one (chapter 6: for TRAIN_MINUTES); the others run
# the same on a CPU.
TRAINS_ON_A_GPU = ("06_training",)


def read_build_log(text: str) -> dict[str, float]:
    """``{chapter: seconds}`` of every notebook a build's log says it executed (the last time, if
    several)."""
    return {m["chapter"]: float(m["seconds"]) for m in EXECUTED.finditer(text)}


def record(log: str | Path, out: str | Path = Path("results") / FILE) -> Path:
    """Write the chapters' seconds from the build log ``log`` to ``out``, with the machine, the
    commit and the date; raises ``ValueError`` when the log executed no chapter."""
    seconds = read_build_log(Path(log).read_text(errors="replace"))
    if not seconds:
        raise ValueError(f"{log} says of no notebook that it was executed: pass the log of a `jupyter-book build` that ran them")
    payload = {
        "command": "python -m vitlib.lab.results.chapter_costs " + shlex.join(sys.argv[1:]),
        "commit": git_commit(Path.cwd()),
        "hardware": this_machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": seconds,
    }
    write_json_atomic(Path(out), payload)
    return Path(out)


def load() -> dict[str, Any] | None:
    """The recorded costs: this checkout's ``results/chapters/costs.json``, else the repository's by
    URL; ``None`` when neither can be read."""
    root = repository_root()
    if root is not None and (root / "results" / FILE).is_file():
        return json.loads((root / "results" / FILE).read_text())
    url = records_url()
    if url is None:
        return None
    try:
        with urllib.request.urlopen(f"{url}{FILE}", timeout=TIMEOUT_S) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def cost_line(chapter: str, costs: dict[str, Any] | None) -> str:
    """The line chapter ``chapter`` (its notebook's name) opens with: whether it needs a GPU, and
    how long it ran when the book was built, on which machine."""
    gpu = (
        "a GPU lets it train the recipe itself, for TRAIN_MINUTES plus a warm-up; without one it trains nothing"
        if chapter in TRAINS_ON_A_GPU else "it needs no GPU"
    )  # fmt: skip
    seconds = (costs or {}).get("seconds", {}).get(chapter)
    if seconds is None:
        return f"What it costs: {gpu}; how long it runs is not recorded."
    return (
        f"What it costs: {gpu}; it ran in {seconds:.0f} s on {costs['hardware']} when the book was built "
        f"(commit {str(costs['commit'])[:7]}), once CIFAR-100 was there (a first run downloads about 170 MB)."
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vitlib.lab.results.chapter_costs", description="Record each chapter's run time from a book build's log.")
    parser.add_argument("log", help="the output of `jupyter-book build .` (e.g. build.log)")
    parser.add_argument("--out", default=str(Path("results") / FILE), help=f"where to write (default results/{FILE})")
    args = parser.parse_args(argv)
    try:
        path = record(args.log, args.out)
    except (OSError, ValueError) as err:
        parser.exit(2, f"vitlib.lab.results.chapter_costs: error: {err}\n")
    print(f"recorded {path}")


if __name__ == "__main__":
    main()
