# Two commands matter: `make demo` (the main job end to end) and `make test`.
# Both create the virtual environment they need in .venv.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
SHARED_UTK := ../shared/data/utkface/UTKFace
DATA ?= $(if $(wildcard $(SHARED_UTK)),$(SHARED_UTK),)
OUT ?= build/demo
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

demo: venv
	@if [ -z "$(DATA)" ]; then \
	  echo "make demo needs UTKFace images: make demo DATA=<dir with [age]_[gender]_[race]_[date].jpg.chip.jpg files>"; \
	  echo "(UTKFace 'Aligned & Cropped Faces': https://susanqq.github.io/UTKFace/ -- non-commercial research use only)"; \
	  exit 2; fi
	$(PY) -m pipeline.build_records --input="$(DATA)" --output_dir=$(OUT)/records

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: venv
	$(PY) -m benchmarks.build_records

clean:
	rm -rf build .pytest_cache
