"""`pytest --nbmake notebooks` runs every chapter in vitlib's quick mode (synthetic data, short
training), so it passes in minutes on a CPU with no dataset and no network. Chapter 6's training
cells, which train on a GPU, run too, for a budget of seconds (``VITLIB_TRAIN_SECONDS``).

The kernel of each notebook is started while its test runs and inherits this process's
environment, so quick mode is switched on around each notebook only: tests collected in the same
session from other folders keep their own environment. ``VITLIB_QUICK=0 pytest --nbmake notebooks``
runs the notebooks for real (on a GPU with the dataset).
"""

import os

import pytest

NOTEBOOK_ENV = {"VITLIB_QUICK": "1", "VITLIB_TRAIN_SECONDS": "30"}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    saved = {key: os.environ.get(key) for key in NOTEBOOK_ENV}
    item.stash[_SAVED] = saved
    for key, value in NOTEBOOK_ENV.items():
        os.environ.setdefault(key, value)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    for key, value in item.stash.get(_SAVED, {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


_SAVED = pytest.StashKey[dict]()
