"""The package as a user installs it: a wheel built from the checkout, used from a folder outside
it, trains a packaged config by name and predicts an image file; and every chapter, executed
outside the clone with that wheel, shows the recorded runs it fetches from the records URL."""

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The wheel built from the checkout, unpacked: a folder to put on PYTHONPATH."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    # Built from a copy of what the wheel is made of, so the build leaves nothing in the checkout.
    source = tmp_path / "source"
    shutil.copytree(REPO / "vitlib", source / "vitlib", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels)],
                   check=True, cwd=tmp_path, capture_output=True)
    (wheel,) = wheels.glob("vitlib-*.whl")
    # A pure-Python wheel installs by unpacking; on PYTHONPATH it comes before the checkout's
    # editable install, and the dependencies come from this environment.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    assert (site / "vitlib" / "configs" / "cpu_long.yaml").is_file()
    return site


def test_the_wheel_trains_a_packaged_config_and_predicts_outside_the_checkout(site, tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "VITLIB_QUICK": "1"}

    def vitlib(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "vitlib", *args], cwd=user, env=env, capture_output=True, text=True, timeout=600)

    where = subprocess.run([sys.executable, "-c", "import vitlib; print(vitlib.__file__)"], cwd=user, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where
    fit = vitlib("fit", "--config", "quick", "--data.quick_train_size", "64", "--data.quick_test_size", "32",
                 "--data.batch_size", "32", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false")
    assert fit.returncode == 0, fit.stderr[-2000:]
    (ckpt,) = (user / "runs").glob("vitlib/version_0/checkpoints/last.ckpt")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(user / "photo.png")
    predict = vitlib("predict", "--ckpt_path", str(ckpt), "photo.png")
    assert predict.returncode == 0, predict.stderr[-2000:]
    assert "photo.png" in predict.stdout


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def records_url():
    """The checkout's results/ over HTTP, as the repository serves them to a chapter without a clone."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(REPO)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/results/"
    finally:
        server.shutdown()
        server.server_close()


def _text(notebook) -> str:
    out = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            out.append(output.get("text", "") + data.get("text/markdown", "") + data.get("text/plain", ""))
    return "\n".join(out)


def test_every_chapter_outside_the_clone_shows_the_recorded_runs_and_chapter_6_trains(site, tmp_path, records_url, monkeypatch):
    # Quick mode (no dataset), chapter 6's training forced on for seconds, the records and weights
    # fetched from the URL into an empty cache: what a reader gets on Colab, on the CPU.
    for key, value in {"PYTHONPATH": str(site), "VITLIB_QUICK": "1", "VITLIB_RECORDS_URL": records_url,
                       "VITLIB_TRAIN_SECONDS": "45", "VITLIB_CACHE": str(tmp_path / "cache")}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("VITLIB_DATA", raising=False)
    user = tmp_path / "user"
    user.mkdir()
    outputs = {}
    for chapter in sorted((REPO / "notebooks").glob("*.ipynb")):
        notebook = nbformat.read(chapter, as_version=4)
        NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(user)}}).execute()
        outputs[chapter.stem] = _text(notebook)
    for name, text in outputs.items():
        assert "No recorded run" not in text, (name, text[:3000])
    recorded = json.loads((REPO / "results" / "cpu-long.json").read_text())
    training = outputs["06_training"]
    assert f"{recorded['metrics']['top1']:.2%}" in training  # the recorded run's number, fetched
    assert "epochs of about" in training and "| your run |" in training  # the plan, and the run it trained
