# Two commands do everything on a fresh Debian 12 machine (as root):
#   make demo   - the course notes' three-tier scenario on the bundled example
#   make test   - the whole test suite (root tests create and remove their own netns)
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup lock k8s demo test test-unit bench bench-quick docs clean

setup:
	@./scripts/setup.sh

# Re-resolve every Python dependency of pyproject.toml (all extras, the build backend) in a
# throw-away venv and rewrite requirements.lock; the next `make setup` installs it.
lock:
	python3 scripts/lock.py

demo: setup
	@./scripts/demo.sh

# kube-apiserver, etcd and kubectl for tests/api (a real control plane on 127.0.0.1), built
# from the Go module proxy into a per-user cache (cold: ~18 min on 2 busy cores; warm: ~1 s).
# `make test` builds them when Go is installed; without Go the API tests skip, saying why.
k8s: setup
	@./scripts/build-k8s.sh

# Two pytest runs at once: tests/integration beside tests/unit + tests/api (the API tests
# mostly wait on a real API server), see tests/parallel.py. NETPOL_TEST_SERIAL=1 make test
# runs one pytest over everything.
test: setup $(if $(shell command -v go 2>/dev/null),k8s)
	$(PY) -m tests.parallel -q

test-unit: setup
	$(VENV)/bin/pytest -q tests/unit

bench: setup
	$(PY) -m benchmarks.run

bench-quick: setup
	$(PY) -m benchmarks.run --quick

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
