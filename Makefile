# The README's two commands: `make demo` and `make test`. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
DEMO_DIR ?= demo_output
PYTEST_ARGS ?=

.PHONY: help venv install system-deps demo test lint clean

help:
	@echo "make demo   - set up and run preprocess -> train -> embed -> evaluate on the embedded sample"
	@echo "make test   - set up and run the whole test suite"
	@echo "make lint   - ruff"

# Dependencies are installed once (stamp); torch goes first, pinned, so nothing pulls a CUDA build.
$(VENV)/.deps: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet ".[test]"
	touch $@

venv: $(VENV)/.deps

# The package itself is reinstalled (non-editable) every time, so tests see the installed wheel.
install: venv
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --force-reinstall .

system-deps:
	@command -v mmseqs >/dev/null 2>&1 || { \
	  echo "installing Debian mmseqs2"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmseqs2 >/dev/null; }
	@command -v mkdssp >/dev/null 2>&1 || { \
	  echo "installing Debian dssp (mkdssp: SS labels of user PDB/mmCIF files)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dssp >/dev/null; }

demo: install
	$(VENV)/bin/python -P -m wensu.demo --output $(DEMO_DIR)

# Tests read the real data beside the checkout; the product itself never looks there.
test: install system-deps
	WENSU_DATA=$${WENSU_DATA:-$(abspath ../shared/data)} $(VENV)/bin/python -P -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check wensu conf preprocessing tests experiments

clean:
	rm -rf $(VENV) build *.egg-info $(DEMO_DIR)
