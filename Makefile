# tsf: `make install`, `make test`, `make demo`, `make lab`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test demo lab clean

install: $(STAMP)

# rebuilt only when the dependencies change; a half-built venv has no stamp and is rebuilt
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install
	$(PY) -m pytest

# a previous demo run is moved aside, never overwritten
demo: install
	@if [ -e runs/demo ]; then old=runs/demo-$$(date +%Y%m%d-%H%M%S); mv runs/demo $$old; echo "previous demo run moved to $$old"; fi
	$(PY) -m tsf run $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb)) --params notebooks/params/demo.yaml --out runs/demo

# JupyterLab's defaults for this project from .jupyterlab/overrides.json (no news popup, no update check;
# Settings can turn them back on); root, as in a container, is allowed. tests/test_browser.py runs with these.
LAB_FLAGS := --LabApp.app_settings_dir=$(CURDIR)/.jupyterlab $(if $(filter 0,$(shell id -u)),--allow-root)

lab: install
	$(VENV)/bin/jupyter lab $(LAB_FLAGS) notebooks/

# runs/ holds your results: clean leaves it alone
clean:
	rm -rf $(VENV) build *.egg-info
