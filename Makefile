# Two commands do everything on a fresh Linux machine:
#   make book   create/reuse .venv, install, build the book into _build/html
#   make test   create/reuse .venv, install, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test book quick clean data-q75 oldest

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

# The oldest torch / torchvision that pyproject.toml declares, in a fresh environment of their own
# (.venv-oldest; torch is downloaded): the quick fit, a prediction and every chapter in quick mode.
# Minutes; not part of `make test`.
OLDEST_VENV := .venv-oldest
OLDEST_TORCH := torch==2.3.1 torchvision==0.18.1

oldest:
	test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install -q $(OLDEST_TORCH) -e . pytest nbmake ipykernel
	cd $(OLDEST_VENV) && VITLIB_QUICK=1 bin/python -m vitlib fit --config quick --trainer.default_root_dir oldest-run
	$(OLDEST_VENV)/bin/python -m vitlib predict --ckpt_path $(OLDEST_VENV)/oldest-run/vitlib/version_0/checkpoints/last.ckpt \
	    $$($(OLDEST_VENV)/bin/python -c "import matplotlib.cbook as c; print(c.get_sample_data('grace_hopper.jpg', asfileobj=False))")
	$(OLDEST_VENV)/bin/python -m pytest -q notebooks --nbmake -p no:cacheprovider

clean:
	rm -rf _build lightning_logs
