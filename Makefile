# Two commands do everything on a fresh Linux machine:
#   make book   create/reuse .venv, install, build the book into _build/html
#   make test   create/reuse .venv, install, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test book quick clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
	touch $@

# The notebooks run too (nbmake; notebooks/conftest.py turns on quick mode for them).
test: $(STAMP)
	$(PY) -m pytest -q tests notebooks --nbmake

# Executes the notebooks (cached in _build/.jupyter_cache); .nojekyll: GitHub Pages serves _static as is.
book: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W
	touch _build/html/.nojekyll

# A training run on the CPU in seconds (synthetic CIFAR-layout data).
quick: $(STAMP)
	VITLIB_QUICK=1 $(PY) -m vitlib fit --config configs/quick.yaml

clean:
	rm -rf _build lightning_logs
