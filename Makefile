# Two commands matter: `make demo` (the main job end to end) and `make test`.
# Both create the virtual environment they need in .venv.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
SHARED_UTK := ../shared/data/utkface/UTKFace
DATA ?= $(if $(wildcard $(SHARED_UTK)),$(SHARED_UTK),)
OUT ?= build/demo
KEEP_PAGE ?=
PYTEST_ARGS ?=

.PHONY: venv demo test test-fast bench clean

venv: $(VENV)/.installed

# Reinstall only when the declared dependencies change.
$(VENV)/.installed: setup.py
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or make PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# records -> train -> export -> local server -> REST/gRPC queries -> evaluation report ->
# the web page's address. KEEP_PAGE=1 keeps the page and the model server running until
# Ctrl-C. DEMO_ARGS passes options through, e.g. DEMO_ARGS="--limit=2000 -v".
demo: venv
	$(PY) scripts/demo.py $(if $(DATA),--data="$(DATA)") --output_dir=$(OUT) \
		$(if $(KEEP_PAGE),--keep_page) $(DEMO_ARGS)

# Test tiers (pytest.ini, tests/conftest.py): unit, integration, e2e. `make test` checks the
# import layers (.importlinter) and runs every tier, one pytest-xdist worker per core (a test
# file stays on one worker, so its module fixtures are built once; files are handed out in
# the order tests/conftest.py gives them, the longest first, not by their number of tests);
# `make test-fast` runs the unit tier only. Both list the 20 slowest tests, so one that
# grows shows in every CI log. TEST_WORKERS=0 runs in this process (for a debugger).
TEST_WORKERS ?= 2
TEST_FLAGS = -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=20

test: venv
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(TEST_FLAGS) $(PYTEST_ARGS)

test-fast: venv
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(TEST_FLAGS) -m "not e2e and not integration" $(PYTEST_ARGS)

bench: venv
	$(PY) -m benchmarks.build_records

clean:
	rm -rf build .pytest_cache
