"""The numbers the prose quotes: every quantity written by hand in a chapter's or page's text (a
percentage, a parameter count, epochs, hours, minutes, images/s) is checked here against the
records, the configs or the cited results it names; one that no check knows fails the test.
Numbers printed by code cells are read from the records at build time and need no check."""

import json
import re
from pathlib import Path

import pytest

from vitlib import ViTConfig
from vitlib.lab.results import ablation, tables
from vitlib.lab.book.chapter import recipe_config

REPO = Path(__file__).resolve().parents[1]
QUANTITY = re.compile(r"\d[\d,]*(?:\.\d+)?\s?(?:%|M-parameter|M parameters|epochs?\b|-epoch\b|hours?\b|minutes\b|images/s|img/s)")


def _record(name: str) -> dict:
    return json.loads((REPO / "results" / f"{name}.json").read_text())


def _reference(which: int) -> str:
    row = tables.REFERENCE_RESULTS[which]
    return f"{row['top-1']} {row['setting']}"


def _grid_size_ratio() -> tuple[float, float]:
    size = {stem: _record(f"grid/{stem}-mhsa-seed0")["size"] for stem in ("conv", "patch")}
    return (size["conv"]["parameters"] / size["patch"]["parameters"], size["conv"]["flops_per_image"] / size["patch"]["flops_per_image"])


def _cites(page: str, key: str) -> bool:
    """The page cites ``key`` (a number from a paper is checked by citing the paper it is from)."""
    path = REPO / "book" / f"{page}.md"
    text = path.read_text() if path.is_file() else (REPO / "notebooks" / f"{page}.ipynb").read_text()
    return f"{{cite}}`{key}`" in text


def _tuning_epochs() -> set[tuple[int, int]]:
    runs = [json.loads(p.read_text()) for p in sorted((REPO / "results" / "tuning").glob("*.json"))]
    return {(r["trainer"]["max_epochs"], r["epochs"]) for r in runs}


def _study(folder: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((REPO / "results" / folder).glob("*.json"))]


def _long_study_is_the_long_runs_length() -> bool:
    return ablation.LONG.epochs == 100 == recipe_config("cpu_long")["trainer"]["max_epochs"] == _record("cpu-long")["epochs"]


def _side_by_side_speedup() -> float:
    """Two one-thread fits side by side against one two-thread fit, in total training images/s."""
    rate = {p.stem: json.loads(p.read_text())["rows"][0]["train_images_per_s"] for p in (REPO / "results/speed/threads-cpu").glob("*.json")}
    return (rate["eager1t_a"] + rate["eager1t_b"]) / rate["eager2t"]


# (page, the phrase as written, why it is true). Each phrase must occur on its page; each check
# reads the source the phrase is about.
CHECKED = [
    ("06_training", "64.92 % top-1 with a 52.6 M-parameter ViT after 100 epochs", lambda: all(x in _reference(0) for x in ("64.92 %", "52.6 M", "100 epochs"))),
    ("06_training", "about 3 hours", lambda: "about 3 hours" in _reference(0)),
    ("06_training", "(SPT + LSA) 56.1 %", lambda: _reference(1).startswith("56.1 %") and "SPT + LSA" in _reference(1)),
    ("06_training", "guessing gives 1 % and 5 %", lambda: ViTConfig.from_preset("vit").num_classes == 100),
    ("06_training", "a model trained for 100 epochs on two CPU cores", lambda: _record("cpu-long")["epochs"] == 100 and "2 cores" in _record("cpu-long")["hardware"]),
    ("06_training", "so that the 100 epochs", lambda: recipe_config("cpu_long")["trainer"]["max_epochs"] == 100),
    ("06_training", "is the 100-epoch recipe of the reference project", lambda: recipe_config("reference")["trainer"]["max_epochs"] == 100),
    ("06_training", "a one-cycle cosine schedule, 20 epochs)", lambda: _record("cpu-recipe")["epochs"] == 20 and _record("cpu-recipe")["model"]["schedule"]["name"] == "cosine"),
    ("03_spt_and_lsa", "Lee et al. trained for 100 epochs", lambda: _cites("03_spt_and_lsa", "lee2021vit")),  # the paper's own setting
    ("03_spt_and_lsa", "its plain ViT reached 53.1 % test top-1 and the same ViT with SPT and LSA 56.1 % after 50 epochs",
     lambda: _cites("03_spt_and_lsa", "gosthipaty2022keras") and _reference(1).startswith("56.1 %") and "50 epochs" in _reference(1)),  # the Keras example's own runs
    ("intro", "Lee et al.'s gains for SPT and LSA come from 100-epoch training", lambda: _cites("intro", "lee2021vit")),
    ("02_convolutional_stems", "about 10 % more parameters and FLOPs per image", lambda: all(1.05 < r < 1.15 for r in _grid_size_ratio())),
    ("results", "52.6 M-parameter ViT for 100 epochs", lambda: all(x in _reference(0) for x in ("52.6 M", "100 epochs"))),
    ("results", "50 epochs on images upscaled to 72x72", lambda: all(x in _reference(1) for x in ("50 epochs", "72x72"))),
    ("results", "same 3-epoch schedule and stopped after 2 epochs", lambda: _tuning_epochs() == {(3, 2)}),
    ("results", "20 epochs, which fitted within the hour", lambda: _record("cpu-recipe")["epochs"] == 20 and _record("cpu-recipe")["throughput"]["fit_wall_s"] < 3600),
    # The recipe study's two lengths, the budget boundary and the side-by-side speed-up.
    ("04_augmentations", "At the long run's length: 100 epochs", lambda: _long_study_is_the_long_runs_length()),
    ("04_augmentations", "The same comparison at 100 epochs", lambda: _long_study_is_the_long_runs_length()),
    ("04_augmentations", "so the 30-epoch study's seed spread", lambda: ablation.SHORT.epochs == 30),
    ("04_augmentations", "fits 50 epochs or fewer", lambda: ablation.SHORT_BUDGET_EPOCHS == 50),
    ("04_augmentations", "the answer is the 100-epoch study's", lambda: _long_study_is_the_long_runs_length()),
    ("05_cyclical_learning_rate", "was run at 30 epochs only (two cycles of 15)", lambda: {r["epochs"] for r in _study("ablation") if r["name"].startswith("cosine")} == {30}),
    ("05_cyclical_learning_rate", "At 100 epochs it was not compared", lambda: "cosine" not in {arm for arm, _ in ablation.LONG.runs}),
    ("06_training", "and at 100 epochs its answer", lambda: _long_study_is_the_long_runs_length()),
    ("06_training", "when 50 epochs or fewer fit", lambda: ablation.SHORT_BUDGET_EPOCHS == 50),
    ("intro", "20-epoch CPU budget; no CNN was trained for the long run's 100 epochs",
     lambda: _record("cpu-resnet")["epochs"] == 20 and _record("cpu-long")["epochs"] == 100 and not any("resnet" in p.name for p in (REPO / "results").rglob("*.json") if p.name != "cpu-resnet.json")),
    ("intro", "at 30 epochs and at the long run's 100", lambda: set(ablation.STUDIES) == {30, 100} and _long_study_is_the_long_runs_length()),
    ("intro", "trained exactly as the 20-epoch CPU recipe", lambda: _record("cpu-resnet")["epochs"] == _record("cpu-recipe")["epochs"] == 20),
    ("results", "At 30 epochs, every arm", lambda: ablation.SHORT.epochs == 30 and {arm for arm, _ in ablation.SHORT.runs} == set(ablation.ARMS)),
    ("results", "At 100 epochs, the long run's length", lambda: _long_study_is_the_long_runs_length()),
    ("results", "the 30-epoch seed spread", lambda: ablation.SHORT.epochs == 30),
    ("results", "### 30 epochs", lambda: ablation.SHORT.epochs == 30),
    ("results", "### 100 epochs", lambda: ablation.LONG.epochs == 100),
    ("results", "about 10 % more images per second", lambda: 1.05 < _side_by_side_speedup() < 1.15),
    ("06_training", "holds 51.97 M of them, its transformer trunk about 0.6 M, as many as the recorded run's whole model",
     lambda: "51.97 M of them a flatten-MLP head" in _reference(0) and "trunk about 0.6 M" in _reference(0) and 0.45e6 < _record("cpu-long")["size"]["parameters"] < 0.7e6),
]


def _prose() -> dict[str, str]:
    """Each page's text as the reader reads it: markdown cells and pages, without code."""
    pages = {}
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        pages[path.stem] = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    for path in sorted((REPO / "book").glob("*.md")):
        pages[path.stem] = path.read_text()
    for name, text in pages.items():
        text = re.sub(r"\[!\[Open in Colab\]\([^)]*\)\]\([^)]*\)", "", text)  # the Colab badge
        text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks and code cells
        text = re.sub(r"`[^`\n]*`", "", text)  # inline code: names and commands, not claims
        pages[name] = re.sub(r"\s+", " ", text)  # lines wrap anywhere
    return pages


def test_every_hand_written_number_in_the_prose_is_checked():
    unchecked = []
    for page, text in _prose().items():
        spans = [(m.start(), m.end()) for phrase in (p for pg, p, _ in CHECKED if pg == page) for m in re.finditer(re.escape(phrase), text)]
        for match in QUANTITY.finditer(text):
            if not any(start <= match.start() and match.end() <= end for start, end in spans):
                line = text[max(0, match.start() - 60): match.end() + 30]
                unchecked.append(f"{page}: '{match.group(0)}' in '...{line}...'")
    assert not unchecked, "numbers in the prose that no check reads from the records (read them at build time, or add a check):\n" + "\n".join(unchecked)


@pytest.mark.parametrize("page, phrase, check", CHECKED, ids=[f"{p}: {t[:40]}" for p, t, _ in CHECKED])
def test_each_checked_phrase_is_on_its_page_and_true_of_its_source(page, phrase, check):
    assert phrase in _prose()[page], f"'{phrase}' is no longer on {page}: update the check with the prose"
    assert check(), f"{page}: '{phrase}' is not true of the records it quotes"
