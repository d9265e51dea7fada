# Two entry points: `make demo` and `make test`. Both build .venv themselves (pip, not uv:
# pip takes the pinned torch/torchvision from local disk).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint clean bench-synth

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) on PATH (set PY=python3.11 to another interpreter)"; exit 1; }
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,lite,geo]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/crossview demo --out demo_out

# one pytest-xdist worker per core (each pinned to its core, one thread: tests/conftest.py); TEST_WORKERS=0 runs
# the suite in this process
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)

test: $(STAMP)
	$(BIN)/python -m pytest -q -rs -n $(TEST_WORKERS)

# the edit-test loop: everything not marked slow
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -rs -m "not slow" -n $(TEST_WORKERS)

lint: $(STAMP)
	$(BIN)/ruff check crossview tests benchmarks

bench-synth: $(STAMP)
	$(BIN)/python -m benchmarks.bench_synth

clean:
	rm -rf demo_out .pytest_cache
