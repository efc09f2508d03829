"""The package's layout is what README says: the teaching core, support/ and lab/ (book/ reading
results/), benchmarks/ outside; and every module, name and command the README and the chapters use exists where they say."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "vitlib"
CORE = sorted(p for p in PACKAGE.glob("*.py"))
SUPPORT = sorted((PACKAGE / "support").glob("*.py"))
LAB = sorted((PACKAGE / "lab").rglob("*.py"))
RESULTS = sorted((PACKAGE / "lab" / "results").rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (anywhere in the file), as absolute dotted names."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}  # `from . import x` names a module
    return out


@pytest.mark.parametrize("path", CORE + SUPPORT, ids=lambda p: _module_name(p))
def test_neither_the_core_nor_support_imports_the_lab_or_the_benchmarks(path: Path) -> None:
    bad = sorted(m for m in _imports(path) if m.startswith(("vitlib.lab", "benchmarks")))
    assert not bad, f"{_module_name(path)} imports {bad}: the teaching core and support/ must not depend on lab/ or benchmarks/"


@pytest.mark.parametrize("path", LAB, ids=lambda p: _module_name(p))
def test_the_lab_does_not_import_the_benchmarks(path: Path) -> None:
    bad = sorted(m for m in _imports(path) if m.startswith("benchmarks"))
    assert not bad, f"{_module_name(path)} imports {bad}: benchmarks/ is not installed with the package"


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: _module_name(p))
def test_what_writes_results_does_not_import_the_chapters_helpers(path: Path) -> None:
    bad = sorted(m for m in _imports(path) if m.startswith("vitlib.lab.book"))
    assert not bad, f"{_module_name(path)} imports {bad}: lab/book/ reads lab/results/, never the other way round"


def test_the_lab_is_its_two_packages() -> None:
    loose = sorted(p.name for p in (PACKAGE / "lab").glob("*.py") if p.name != "__init__.py")
    assert not loose, f"vitlib/lab/ holds {loose}: put each in book/ (what the chapters call) or results/ (what writes results/)"


@pytest.mark.parametrize("path", [p for p in CORE if p.name not in ("__init__.py",)], ids=lambda p: p.stem)
def test_every_core_module_names_the_chapter_that_teaches_it(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert re.search(r"chapters? \d", doc), f"{path.name}'s docstring does not name its chapter"


def _documented_code() -> list[tuple[str, str]]:
    """(where, text) of README and every page and notebook: their code and their prose."""
    out = [("README.md", (REPO / "README.md").read_text())]
    out += [(p.name, p.read_text()) for p in sorted((REPO / "book").glob("*.md"))]
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        out.append((nb.name, "\n".join("".join(c["source"]) for c in cells)))
    return out


def _resolves(dotted: str) -> bool:
    """Whether ``dotted`` is a module, or a name inside one (``a.b.Name``, ``a.b.Class.method``)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def test_every_import_the_docs_show_works() -> None:
    missing = []
    for where, text in _documented_code():
        for mod, names in re.findall(r"^\s*from ((?:vitlib|benchmarks)[\w.]*) import ([^\n(#]+)", text, re.M):
            for name in (n.strip().split(" as ")[0] for n in names.split(",")):
                if name and not _resolves(f"{mod}.{name}"):
                    missing.append(f"{where}: from {mod} import {name}")
    assert not missing, "\n".join(missing)


def test_every_module_and_name_the_docs_mention_exists() -> None:
    missing = []
    for where, text in _documented_code():
        for dotted in set(re.findall(r"`((?:vitlib|benchmarks)(?:\.\w+)+)", text)) | set(re.findall(r"\{mod\}`([\w.]+)`", text)):
            if not _resolves(dotted):
                missing.append(f"{where}: {dotted}")
        for module in set(re.findall(r"python -m ((?:vitlib|benchmarks)[\w.]*)", text)):
            try:
                spec = importlib.util.find_spec(module)
            except ImportError:
                spec = None
            if spec is None:
                missing.append(f"{where}: python -m {module}")
    assert not missing, "\n".join(sorted(missing))
