# The two commands of the README: `make demo` and `make test`.
# Both set everything up on a fresh Debian machine (as root): system servers
# with apt, a virtual environment with the project and its test extras.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: test demo lint docs bench system venv clean

test: system venv docs
	$(PY) -m ruff check conductor jobboard tests bench
	$(PY) -m mypy conductor jobboard
	$(PY) -m pytest $(PYTEST_ARGS)

# The documentation site (mkdocs.yml, docs/): a strict build fails on any warning.
docs: venv
	$(PY) -m mkdocs build --strict --quiet --site-dir build/site

demo: venv
	$(VENV)/bin/conductor demo

lint: venv
	$(PY) -m ruff check conductor jobboard tests bench
	$(PY) -m mypy conductor jobboard

# Figures, not tests, on private servers the bench starts (see docs/benchmarks.md):
# throughput with the TaskFlow peer, failover, latency, idle cost, herd, backlog.
# Bound a run with BENCH_ARGS, e.g. make bench BENCH_ARGS="--quick --skip-peer".
BENCH_ARGS ?=
bench: system venv
	$(PY) -m bench $(BENCH_ARGS)

# redis-server and ZooKeeper for the integration tests (skipped when present).
system:
	@bash deploy/install-system-deps.sh

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV) || (bash deploy/install-system-deps.sh --venv && $(PYTHON) -m venv $(VENV))
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,metrics,redis,web]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
