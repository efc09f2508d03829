"""The bundle for ``python -m benchmarks.gpu_run`` on a GPU machine without internet access.

Packed where there is access (``python -m benchmarks.gpu_run --bundle BUNDLE``, :func:`make_bundle`)
and checked on the GPU machine before anything runs (``--from-bundle BUNDLE``, :func:`read_bundle`).
A bundle is a folder of:

- ``wheels/``: the wheels of the packages a PyTorch GPU image may lack (:data:`BUNDLED_PACKAGES`),
  at this environment's versions, which requirements.txt pins; :func:`wheels_to_install` says which
  of them the GPU machine lacks;
- ``data/``: the JPEG q75 copy of CIFAR-100 (:data:`DATA_FILES`: ``cifar100_q75.npz``, its
  ``build.py`` and ``meta``), which the run builds there with that ``build.py``;
- ``bundle.json``, written last: the commit of the code, the packages, whether it holds data, and
  every file with its size, so that a bundle copied in part is refused.

``max_mib`` fails the bundling, naming the size and what to drop, when the folder is larger.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from vitlib.support.files import atomic_write, write_json_atomic
from vitlib.support.provenance import tree_commit

__all__ = ["Problem", "check_data_source", "make_bundle", "read_bundle", "wheels_to_install"]

REPO = Path(__file__).resolve().parents[1]
DATA_FILES = ("cifar100_q75.npz", "build.py", "meta")
# What the run needs beyond a GPU image's torch, torchvision and Lightning: LightningCLI's
# jsonargparse with its [signatures] extra, and the benchmark's vit-pytorch (without it that row
# is skipped). All pure Python, so one wheel installs on any platform; bundled at this
# environment's versions, which requirements.txt pins.
BUNDLED_PACKAGES = ("jsonargparse", "docstring-parser", "typeshed-client", "vit-pytorch")
MANIFEST = "bundle.json"  # written last: a folder without it is no (complete) bundle
BUNDLE_ENTRIES = {MANIFEST, "wheels", "data"}


class Problem(Exception):
    """Bad input or a missing file; the message says what is wrong and what to do."""


def wheel_name(name: str) -> str:
    """A distribution name as wheel file names spell it."""
    return re.sub(r"[-_.]+", "_", name).lower()


def fetch_wheel(spec: str, folder: Path) -> None:
    """``pip download`` of one wheel, without its dependencies (the others are bundled or in the image)."""
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "-d", str(folder), spec], check=True)  # fmt: skip
    except subprocess.CalledProcessError as err:
        raise Problem(f"pip could not download {spec} (exit status {err.returncode}; its output is above): bundling "
                      "the wheels needs the package index; without it, bundle with --no-wheels") from None  # fmt: skip


def bundle_wheels(folder: Path) -> None:
    """Wheels of BUNDLED_PACKAGES at this environment's versions in ``folder``, one version each."""
    folder.mkdir(parents=True, exist_ok=True)
    for package in BUNDLED_PACKAGES:
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            raise Problem(f"{package} is not installed here: install requirements.txt first (`make install`), so "
                          "that the bundled versions are those it pins") from None  # fmt: skip
        stem = f"{wheel_name(package)}-{version}-"
        for old in folder.glob(f"{wheel_name(package)}-*.whl"):
            if not old.name.startswith(stem):  # two versions of one package stop the whole install
                old.unlink()
        if not any(folder.glob(f"{stem}*.whl")):
            # Into a scratch folder, then renamed: an interrupted download leaves no partial wheel.
            scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=folder))
            try:
                fetch_wheel(f"{package}=={version}", scratch)
                for wheel in scratch.glob("*.whl"):
                    os.replace(wheel, folder / wheel.name)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            if not any(folder.glob(f"{stem}*.whl")):
                raise Problem(f"pip downloaded no wheel of {package}=={version}: bundle with --no-wheels and "
                              f"install {package} on the GPU machine")  # fmt: skip


def check_data_source(folder: Path, option: str = "--data-source") -> Path:
    missing = [name for name in DATA_FILES if not (folder / name).is_file()]
    if missing:
        raise Problem(f"{folder} lacks {', '.join(missing)}: {option} is the folder of the JPEG q75 copy of "
                      f"CIFAR-100, holding {', '.join(DATA_FILES)}")  # fmt: skip
    return folder


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def make_bundle(folder: Path, data_source: Path | None, wheels: bool = True, max_mib: float | None = None) -> dict[str, Any]:
    """Packs ``folder`` for a run on a machine without internet access; returns its manifest.

    ``data_source``: the q75 copy's folder (None: no data; the run then reads CIFAR-100 from
    ``--data-dir``). ``wheels=False``: no wheels (the GPU machine installs the packages itself).
    Over ``max_mib`` MiB it raises :class:`Problem` and writes no manifest, so that no run uses it.
    """
    if folder.is_dir():
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in BUNDLE_ENTRIES)
        if foreign:  # bundling deletes the data/ and wheels/ it does not need: never beside other files
            raise Problem(f"{folder} holds {', '.join(foreign[:5])}, which no bundle does: give a new or empty "
                          "folder, or an earlier bundle")  # fmt: skip
        (folder / MANIFEST).unlink(missing_ok=True)  # until it is complete again
    data = folder / "data"
    if data_source is not None:
        check_data_source(data_source)
        for name in DATA_FILES:
            with (data_source / name).open("rb") as src, atomic_write(data / name) as dst:
                shutil.copyfileobj(src, dst)
    else:
        shutil.rmtree(data, ignore_errors=True)
    if wheels:
        bundle_wheels(folder / "wheels")
    else:
        shutil.rmtree(folder / "wheels", ignore_errors=True)
    # Hidden names are strays of an interrupted write (atomic_write's temporary files): not the bundle's.
    files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*"))
             if p.is_file() and not p.name.startswith(".")}  # fmt: skip
    manifest = {"commit": tree_commit(REPO), "packages": [Path(f).name.split("-")[0] for f in files if f.startswith("wheels/")],
                "data": data_source is not None, "files": files}  # fmt: skip
    mib = (sum(files.values()) + len(json.dumps(manifest, indent=2))) / 2**20
    if max_mib is not None and mib > max_mib:
        parts = [(folder_mib(data), "the data", "--no-data; the GPU machine then needs CIFAR-100 in --data-dir"),
                 (folder_mib(folder / "wheels"), "the wheels", "--no-wheels; it then needs `pip install -e \".[bench]\"`")]
        drop = "".join(f"drop {what} ({size:.1f} MiB: {how}) or " for size, what, how in sorted(parts, reverse=True) if size)
        raise Problem(f"the bundle {folder} is {mib:.1f} MiB, over --max-bundle-mib {max_mib:g}: {drop}allow more. "
                      f"It has no {MANIFEST}, so no run uses it.")  # fmt: skip
    write_json_atomic(folder / MANIFEST, manifest)
    return {**manifest, "mib": mib}


def read_bundle(folder: Path) -> dict[str, Any]:
    """The manifest of the bundle ``folder``, once every file it lists is there at its size."""
    again = f"make it with `python -m benchmarks.gpu_run --bundle {folder}` and copy the whole folder"
    if not (folder / MANIFEST).is_file():
        raise Problem(f"{folder} is no bundle: it has no {MANIFEST} (not made, or the bundling failed): {again}")
    manifest = json.loads((folder / MANIFEST).read_text())
    missing = [f for f in manifest["files"] if not (folder / f).is_file()]
    short = [f"{f} ({(folder / f).stat().st_size} of {size} bytes)" for f, size in manifest["files"].items()
             if f not in missing and (folder / f).stat().st_size != size]  # fmt: skip
    if missing or short:
        what = ", ".join([*(f"no {f}" for f in missing), *short])
        raise Problem(f"the bundle {folder} is incomplete: {what}; copy it again, or {again}")
    return manifest


def wheels_to_install(folder: Path) -> tuple[list[Path], list[str]]:
    """(the wheels in ``folder`` whose package is not installed, "name version" of those that are)."""
    todo, present = [], []
    for wheel in sorted(folder.glob("*.whl")):
        name = wheel.name.split("-")[0]
        try:
            present.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            todo.append(wheel)
    return todo, present
