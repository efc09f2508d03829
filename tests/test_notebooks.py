"""The book's notebooks as files: listed in the table of contents, committed without outputs, each
opening with an "Open in Colab" badge and a first code cell that installs vitlib when it is missing;
every code listing they and the book's pages include says which file it shows. (Running them is nbmake's job: `pytest --nbmake notebooks`.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
BADGE = ROOT / "_static" / "colab-badge.png"


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [toc["root"]] + [entry["file"] for part in toc["parts"] for entry in part["chapters"]]


def test_every_toc_entry_exists_and_every_notebook_is_in_the_toc() -> None:
    files = _toc_files()
    for name in files:
        assert any((ROOT / f"{name}{ext}").is_file() for ext in (".md", ".ipynb")), f"{name} in _toc.yml is missing"
    assert {f"notebooks/{nb.stem}" for nb in NOTEBOOKS} <= set(files)
    assert len(NOTEBOOKS) == 7


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_and_starts_right(path: Path) -> None:
    notebook = json.loads(path.read_text())
    cells = notebook["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    assert all(not cell["outputs"] and cell["execution_count"] is None for cell in code), "commit without outputs"
    first = "".join(cells[0]["source"])
    assert first.startswith("# "), "the first cell is the chapter title"
    colab = re.search(r"\[!\[Open in Colab\]\(([^)]+)\)\]\(https://colab\.research\.google\.com/github/([^)]+)\)", first)
    assert colab and colab.group(2).endswith(f"/blob/main/notebooks/{path.name}"), "Open in Colab badge"
    # One image for all seven, relative to the notebook: the book copies it, GitHub shows it.
    assert colab.group(1) == f"../{BADGE.relative_to(ROOT).as_posix()}" and BADGE.is_file(), "the badge is _static's file"
    setup = "".join(code[0]["source"])
    assert "import vitlib" in setup and "except ImportError" in setup and "pip install" in setup
    assert f"chapter.show_setup(source, \"{path.stem}\")" in setup  # says which device and data it runs on, and what it costs
    repository = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    assert repository.removeprefix("https://github.com/") in setup and colab.group(2).startswith(
        repository.removeprefix("https://github.com/")
    )


def test_the_library_fetches_records_from_the_books_repository() -> None:

    from vitlib.lab.results import records

    repository = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    assert records.REPOSITORY_URL == repository
    owner_and_name = repository.removeprefix("https://github.com/")
    assert records.RECORDS_URL == f"https://raw.githubusercontent.com/{owner_and_name}/main/results/"


_INCLUDE = re.compile(r"^(`{3,}|:{3,})\{literalinclude\}[ \t]+(\S+)[ \t]*\n((?::[^\n]*\n)*)", re.M)


def _pages() -> dict[Path, str]:
    """The Markdown of every notebook and page of the book, by file."""
    pages = {path: "\n\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown")
             for path in NOTEBOOKS}
    pages.update({path: path.read_text() for path in sorted((ROOT / "book").glob("*.md"))})
    return pages


def test_every_included_listing_is_captioned_with_its_file() -> None:
    """A ```{literalinclude}``` is captioned with the path it includes, from the repository root, and
    with the object it selects: `:caption: vitlib/stems.py — ConvStem`."""
    wrong, count = [], 0
    for page, text in _pages().items():
        for match in _INCLUDE.finditer(text):
            count += 1
            target = (page.parent / match.group(2)).resolve()
            options = dict(line[1:].partition(":")[::2] for line in match.group(3).splitlines())
            options = {key.strip(): value.strip() for key, value in options.items()}
            shown = target.relative_to(ROOT).as_posix() if target.is_relative_to(ROOT) else str(target)
            expected = shown + (f" — {options['pyobject']}" if "pyobject" in options else "")
            if not target.is_file() or options.get("caption") != expected:
                wrong.append(f"{page.name}: {match.group(2)} has caption {options.get('caption')!r}, expected {expected!r}")
    assert count >= 16, "the chapters' listings were not found"
    assert not wrong, "\n".join(wrong)
