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

demo: install
	@echo "make demo: the notebook pipeline (00-05) is coming soon; until then see README.md's Python quick start."

lab: install
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf $(VENV) runs build *.egg-info
