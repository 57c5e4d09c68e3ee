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

lab: install
	$(VENV)/bin/jupyter lab notebooks/

# runs/ holds your results: clean leaves it alone
clean:
	rm -rf $(VENV) build *.egg-info
