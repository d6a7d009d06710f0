# The two commands a newcomer needs:  make demo  and  make test
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
STAMP  := $(VENV)/.installed-dev

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/vigil demo

test: setup
	PY=$(VENV)/bin/python scripts/test.sh

bench: setup
	$(VENV)/bin/python benchmarks/bench_hashing.py
	$(VENV)/bin/python benchmarks/bench_lookup.py
	$(VENV)/bin/python benchmarks/bench_updates.py

clean:
	rm -rf $(VENV) vigil-data .pytest_cache
