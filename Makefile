# The two commands a newcomer types: `make demo` and `make test`. Both run `make setup` first.
PY := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup demo test test-fast lint bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m testbed.demo topologies/demo.yaml

test: setup
	.venv/bin/lint-imports
	$(PY) -m pytest -q --durations=60 tests

test-fast: setup
	.venv/bin/lint-imports
	$(PY) -m pytest -q -m "not slow" tests

lint: setup
	.venv/bin/ruff check .

bench: setup
	$(PY) bench/bringup.py
	$(PY) bench/shaping.py
	$(PY) bench/containers.py
	$(PY) bench/devices.py

clean:
	@echo "make clean removes no testbed: others on this host may be a colleague's."
	@echo "running: $$(ls /run/testbed 2>/dev/null | tr '\n' ' ')"
	@echo "remove yours with: .venv/bin/testbed down --name NAME"
