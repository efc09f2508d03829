"""Sentences of chapters 2, 3 and 7 that compare records or restate a paper, checked against the
records they read and against what the paper claims (test_prose.py checks the numbers)."""

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _markdown(chapter: str) -> str:
    cells = json.loads((REPO / "notebooks" / f"{chapter}.ipynb").read_text())["cells"]
    text = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return re.sub(r"\s+", " ", text)


def _record(name: str) -> dict:
    return json.loads((REPO / "results" / f"{name}.json").read_text())


def test_chapter_7_compares_its_model_with_the_grid_as_the_records_say() -> None:
    phrase = "The model of this chapter trained far longer than the grid's and is far more accurate"
    assert phrase in _markdown("07_attention")
    grid = [json.loads(p.read_text()) for p in sorted((REPO / "results" / "grid").glob("*.json"))]
    if not grid:
        pytest.skip("no recorded grid runs")
    book = _record("cpu-long")  # chapter 7's model when no run of your own is there
    assert all(book["epochs"] >= 10 * run["epochs"] for run in grid), "far longer"
    assert all(book["metrics"]["top1"] > run["metrics"]["top1"] + 0.1 for run in grid), "far more accurate (10 points or more)"


def test_chapter_2_states_what_xiao_et_al_claim_about_sensitivity() -> None:
    """Xiao et al. (2021) report lower sensitivity to the optimiser, its hyperparameters and the
    schedule length; the seed is not among them."""
    text = _markdown("02_convolutional_stems")
    sentences = [s for s in re.split(r"(?<=[.;])\s", text.replace("et al.", "et al")) if "sensitive" in s]
    assert any("seed is not among" in s for s in sentences), "the chapter says the seed is not part of the claim"
    claims = [s for s in sentences if "seed" not in s]
    assert claims, "chapter 2 no longer says what the stem makes training less sensitive to"
    for sentence in claims:
        assert all(word in sentence for word in ("optimi", "learning rate", "weight decay", "length")), sentence
