# One venv at the repo root, installed with the exact versions in constraints.txt.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit bench clean

install: $(STAMP)

# uv resolves and installs the pinned set in seconds where pip takes minutes; torch's CPU wheel comes from
# the machine's local wheel folder when there is one (uv does not read pip's configuration). Bytecode is
# compiled at install (pip does it, uv only when asked): without it every test subprocess recompiles
# torch, prefect and mlflow on import (PYTHONDONTWRITEBYTECODE is set here), twice as slow.
UV_VERSION := 0.13.9
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -c constraints.txt $(FIND_LINKS) -e '.[dev]'
	@# Prefect's local database (the temporary API's, in PREFECT_HOME) is created here rather than by the
	@# first `make demo`, where its migrations took 10-16 s; a database on a server is left alone.
	$(BIN)/python -m flows.embedded
	touch $(STAMP)

# Runs the training flow on the bundled example with embedded defaults: Prefect's temporary local API,
# MLflow on SQLite, checkpoints in ./runs; no servers.
demo: install
	$(BIN)/lightning-lib train

# Style, then the import layers and optional-dependency boundaries of [tool.importlinter] in pyproject.toml.
lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# Test modules run on both cores (pytest-xdist), each module on one worker so its servers (module-scoped
# fixtures) start once; the slowest tests are listed at the end. PYTEST_XDIST= runs them in one process.
PYTEST_XDIST ?= -n 2 --dist loadfile
unit: install
	$(BIN)/python -m pytest -q $(PYTEST_XDIST) --durations=25 $(PYTEST_ARGS)

# The README's test command: style and import layers, types, then every test (slow ones included).
test: lint typecheck unit

bench: install
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) lightning_logs runs .pytest_cache .mypy_cache .ruff_cache
