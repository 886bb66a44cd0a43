# Two entry points: `make demo` and `make test`. Everything installs into .venv from the hashed locks.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --no-header --quiet

.PHONY: demo test system lint typecheck unit bench lock clean

$(BIN)/tracker: requirements-dev.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(BIN)/tracker

demo: $(BIN)/tracker
	$(BIN)/tracker demo

lint: $(BIN)/tracker
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/tracker
	$(BIN)/mypy

unit: $(BIN)/tracker
	$(BIN)/pytest -q -n 3

# The Debian packages the tests need (see scripts/system-packages), installed when missing.
system:
	scripts/system-packages

test: system lint typecheck unit

bench: $(BIN)/tracker
	$(BIN)/python benchmarks/bench_poll.py
	$(BIN)/python benchmarks/bench_deliver.py
	$(BIN)/python benchmarks/bench_hostile.py
	$(BIN)/python benchmarks/bench_footprint.py
	$(BIN)/python benchmarks/bench_fleet.py
	$(BIN)/python benchmarks/bench_alerts.py
	$(BIN)/python benchmarks/bench_export.py
	$(BIN)/python benchmarks/bench_http.py
	$(BIN)/python benchmarks/bench_reports.py
	$(BIN)/python benchmarks/bench_hints.py
	$(BIN)/python benchmarks/bench_api.py
	$(BIN)/python benchmarks/bench_abuse.py

# Regenerate the locks (needs uv); they name packages, versions and hashes only.
lock:
	uv pip compile $(LOCK_FLAGS) --extra build pyproject.toml -o requirements.lock
	uv pip compile $(LOCK_FLAGS) --extra build --extra dev pyproject.toml -o requirements-dev.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
