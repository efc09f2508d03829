"""vitlib.lab.results.chapter_costs: each chapter's run time read from a book build's log, and the line a
chapter opens with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vitlib.lab.results import chapter_costs

LOG = """\
[01mreading sources... [39;49;00m[ 20%] notebooks/01_images_as_sequences
/tmp/ci/main/notebooks/01_images_as_sequences.ipynb: Executing notebook using local CWD [mystnb]
/tmp/ci/main/notebooks/01_images_as_sequences.ipynb: Executed notebook in 14.83 seconds [mystnb]
/tmp/ci/main/book/intro.md: Executed notebook in 10.09 seconds [mystnb]
/tmp/ci/main/notebooks/06_training.ipynb: Executed notebook in 61.20 seconds [mystnb]
"""


def test_the_build_log_gives_each_chapters_seconds() -> None:
    assert chapter_costs.read_build_log(LOG) == {"01_images_as_sequences": 14.83, "06_training": 61.2}
    assert chapter_costs.read_build_log("nothing executed") == {}


def test_record_writes_the_seconds_with_their_machine_and_refuses_an_empty_log(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text(LOG)
    path = chapter_costs.record(log, tmp_path / "costs.json")
    payload = json.loads(path.read_text())
    assert payload["seconds"]["06_training"] == 61.2 and payload["hardware"] and payload["commit"]
    log.write_text("no notebook here")
    with pytest.raises(ValueError, match="of no notebook"):
        chapter_costs.record(log, tmp_path / "other.json")
    assert not (tmp_path / "other.json").exists()


def test_the_opening_line_says_whether_a_gpu_is_needed_and_how_long_it_ran() -> None:
    costs = {"seconds": {"01_images_as_sequences": 14.83, "06_training": 61.2}, "hardware": "CPU: 2 cores", "commit": "abcdef123"}
    first = chapter_costs.cost_line("01_images_as_sequences", costs)
    assert first.startswith("What it costs: it needs no GPU; it ran in 15 s on CPU: 2 cores when the book was built (commit abcdef1)")
    assert "TRAIN_MINUTES" in chapter_costs.cost_line("06_training", costs)
    assert chapter_costs.cost_line("02_convolutional_stems", costs).endswith("how long it runs is not recorded.")
    assert chapter_costs.cost_line("01_images_as_sequences", None).endswith("how long it runs is not recorded.")
