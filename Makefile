# `make demo` runs the main job (examples/monitor.yaml in a graph daemon, with traffic);
# `make test` runs lint, types and the whole suite.
# Both create .venv and install the project into it on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean sysdeps

# System packages the tests and benchmarks use, installed where we may (as root): Graphviz
# for ngctl's dot, socat as the relay benchmark's reference. Each is "command:package".
SYSPKGS := dot:graphviz socat:socat ping:iputils-ping ip:iproute2 curl:curl
sysdeps:
	@missing=""; for pair in $(SYSPKGS); do \
		command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; then \
		echo "installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/monitor_demo.py

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
