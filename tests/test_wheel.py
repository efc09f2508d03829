"""The package as a user installs it: a wheel built from the checkout, used from a folder outside
it, trains a packaged config by name and predicts an image file."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_trains_a_packaged_config_and_predicts_outside_the_checkout(tmp_path):
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
