# The two commands a newcomer types: `make demo` and `make test`. Both run `make setup` first.
PY := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup demo test test-fast lint bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m testbed.demo topologies/demo.yaml

test: setup
	$(PY) -m pytest -q tests

test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

lint: setup
	.venv/bin/ruff check .

bench: setup
	$(PY) bench/bringup.py
	$(PY) bench/shaping.py
	$(PY) bench/containers.py
	$(PY) bench/devices.py

clean:
	-.venv/bin/testbed down --all
