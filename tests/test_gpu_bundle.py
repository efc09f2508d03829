"""``benchmarks.gpu_bundle``: a bundle packs the wheels of the missing packages, the data and the commit,
names what is missing or in the way, and says which of its wheels a machine lacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import gpu_bundle
from benchmarks.gpu_bundle import Problem, make_bundle, read_bundle, wheels_to_install
from vitlib.support.provenance import tree_commit


def fake_fetch(spec: str, folder: Path) -> None:
    """What ``pip download`` leaves: one wheel named after the package and version."""
    name, version = spec.split("==")
    (folder / f"{gpu_bundle.wheel_name(name)}-{version}-py3-none-any.whl").write_bytes(b"wheel")


def test_only_wheels_of_missing_packages_are_installed(tmp_path):
    for name in ("pytest-9.0.3-py3-none-any.whl", "surely_not_installed_here-1.0-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    todo, present = wheels_to_install(tmp_path)
    assert [w.name for w in todo] == ["surely_not_installed_here-1.0-py3-none-any.whl"]
    assert [p.split()[0] for p in present] == ["pytest"]


def test_a_bundle_holds_the_wheels_the_data_and_the_commit(tmp_path, q75_source, monkeypatch):
    source, bundle = q75_source(tmp_path / "q75"), tmp_path / "bundle"
    monkeypatch.setattr(gpu_bundle, "fetch_wheel", fake_fetch)
    (bundle / "wheels").mkdir(parents=True)
    (bundle / "wheels" / "jsonargparse-0.1-py3-none-any.whl").write_bytes(b"old")  # another version: replaced

    manifest = make_bundle(bundle, source)
    wheels = sorted(p.name.split("-")[0] for p in (bundle / "wheels").iterdir())
    assert wheels == sorted(gpu_bundle.wheel_name(p) for p in gpu_bundle.BUNDLED_PACKAGES) == sorted(manifest["packages"])
    assert not (bundle / "wheels" / "jsonargparse-0.1-py3-none-any.whl").exists()
    for name in gpu_bundle.DATA_FILES:
        assert (bundle / "data" / name).read_bytes() == (source / name).read_bytes()
    assert manifest["data"] and manifest["commit"] == tree_commit(gpu_bundle.REPO)
    assert read_bundle(bundle) == {k: v for k, v in manifest.items() if k != "mib"}
    listed = {f"data/{name}" for name in gpu_bundle.DATA_FILES} | {f"wheels/{p.name}" for p in (bundle / "wheels").iterdir()}
    assert set(manifest["files"]) == listed

    # Made again without wheels or data, it holds neither (nor lists them).
    again = make_bundle(bundle, None, wheels=False)
    assert again["files"] == {} and again["packages"] == [] and not again["data"]
    assert sorted(p.name for p in bundle.iterdir()) == ["bundle.json"]


def test_bundling_names_what_is_missing_or_in_the_way(tmp_path):
    (tmp_path / "q75").mkdir()
    (tmp_path / "q75" / "meta").write_text("")
    with pytest.raises(Problem, match=r"q75 lacks cifar100_q75.npz, build.py: --data-source is the folder"):
        make_bundle(tmp_path / "bundle", tmp_path / "q75", wheels=False)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("")
    with pytest.raises(Problem, match="holds thesis.tex, which no bundle does: give a new or empty folder"):
        make_bundle(tmp_path / "notes", None, wheels=False)
    assert (tmp_path / "notes" / "thesis.tex").exists()
