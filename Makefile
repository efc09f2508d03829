# Two commands do everything on a fresh Linux machine:
#   make book   create/reuse .venv, install, build the book into _build/html
#   make test   create/reuse .venv, install, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test book quick clean data-q75

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

# The complete CIFAR-100 as quality-75 JPEGs, where a folder ../shared beside the checkout holds
# it (never committed): built into the git-ignored data-q75/, so that the book shows real images.
# build.py writes meta last, so meta marks a complete build.
Q75_SOURCE := ../shared/data/cifar100-q75
Q75 := data-q75

data-q75: $(STAMP)
	@if [ -f $(Q75_SOURCE)/build.py ] && [ ! -f $(Q75)/cifar-100-python/meta ]; then $(PY) $(Q75_SOURCE)/build.py $(Q75); fi

# Executes the notebooks (cached in _build/.jupyter_cache) on the q75 copy when it is there, else
# on $$VITLIB_DATA / data/ or synthetic data; .nojekyll: GitHub Pages serves _static as is.
book: $(STAMP) data-q75
	if [ -f $(Q75)/cifar-100-python/meta ]; then export VITLIB_DATA="$(CURDIR)/$(Q75)"; fi; \
	$(VENV)/bin/jupyter-book build . -W
	touch _build/html/.nojekyll

# A training run on the CPU in seconds (synthetic CIFAR-layout data).
quick: $(STAMP)
	VITLIB_QUICK=1 $(PY) -m vitlib fit --config configs/quick.yaml

clean:
	rm -rf _build lightning_logs
