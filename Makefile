# `make demo` runs the main job; `make test` runs lint, types and the whole suite.
# Both create .venv and install the project into it on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean sysdeps

# System packages the tests use (Graphviz for ngctl's dot), installed where we may (root).
SYSPKGS := graphviz
sysdeps:
	@if [ "$$(id -u)" = 0 ] && ! command -v dot >/dev/null 2>&1; then \
		echo "installing $(SYSPKGS)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSPKGS) >/dev/null; \
	fi

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ngctl -n demo -f examples/demo.ngctl

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint sysdeps
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/hops.py

clean:
	rm -rf $(VENV) build *.egg-info
