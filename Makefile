# Two commands do everything on a fresh Debian 12 machine (as root):
#   make demo   - the course notes' three-tier scenario on the bundled example
#   make test   - the whole test suite (root tests create and remove their own netns)
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup lock demo test test-unit bench bench-quick docs clean

setup:
	@./scripts/setup.sh

# Re-resolve every Python dependency of pyproject.toml (all extras, the build backend) in a
# throw-away venv and rewrite requirements.lock; the next `make setup` installs it.
lock:
	python3 scripts/lock.py

demo: setup
	@./scripts/demo.sh

test: setup
	$(VENV)/bin/pytest -q tests

test-unit: setup
	$(VENV)/bin/pytest -q tests/unit

bench: setup
	$(PY) -m benchmarks.run

bench-quick: setup
	$(PY) -m benchmarks.run --quick

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
