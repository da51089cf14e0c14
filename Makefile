# `make serve` runs the service; `make test` runs all the tests (what CI runs);
# `make check` lints and runs the in-process tests, for the edit loop. Each
# creates .venv if missing and installs the pinned dependencies; serve and
# test prepare the offline model first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8765
STORAGE ?= ./service-storage
MODEL ?= tiny.en

.PHONY: serve test check setup model browser postgres nginx lint typecheck all-tests in-process-tests clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

model: $(STAMP)
	$(BIN)/whisper-mcp prepare-model --model $(MODEL)

serve: model
	$(BIN)/whisper-mcp serve --host $(HOST) --port $(PORT) --storage $(STORAGE) --model $(MODEL)

# Lint and the type checker run beside the tests (make -j): they add little
# wall time, and a finding is reported with the tests' results rather than
# instead of them.
test: model browser postgres nginx
	@$(MAKE) --no-print-directory -j lint typecheck all-tests

# The edit loop, under a minute on two cores: lint, and every test that starts
# no server process, loads no real model, needs no PostgreSQL and runs no
# program, selected by mark: -m "not e2e and not slow". tests/conftest.py marks
# all of tests/e2e `e2e` and a unit test on the `server` or `postgres` fixture
# `slow`; other unit tests that start a program or load a real model carry
# @pytest.mark.slow themselves, and an unmarked one that starts a program fails.
check: setup
	@$(MAKE) --no-print-directory -j lint typecheck in-process-tests

# Three workers on two cores, one file each at a time, in the order
# tests/timings.py gives from tests/timings.json (the long computing files
# first, each with one that mostly waits beside it, the short in-process ones
# last to fill the end), not xdist's (files with the most tests first, which
# can start a long file last and leave a worker idle). The end-to-end tests spend much
# of their time waiting on servers, programs and timers; a third worker fills
# those waits (387 s against 428 s with two, measured). One torch/OpenMP
# thread per process, since workers would otherwise spin against each other's
# threads (busy-waiting OpenMP barriers cost more than they save here).
# Bytecode is cached, as for in-process-tests: the servers and commands the
# tests start import the package anew each time.
all-tests: $(STAMP)
	PYTHONDONTWRITEBYTECODE= OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -n 3 --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# Three workers on two cores: many of these tests wait on sockets, timers and
# threads, and a third worker fills those waits (faster than two, measured).
# Bytecode is cached (PYTHONDONTWRITEBYTECODE cleared, as Python's default):
# each worker imports every test module, and would otherwise compile them and
# the package, and rewrite the tests' asserts, anew each run (some 3 s of CPU
# a worker).
in-process-tests: $(STAMP)
	PYTHONDONTWRITEBYTECODE= OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -n 3 --dist loadfile -m "not e2e and not slow" tests/unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy over the package and the fake engine ([tool.mypy] in pyproject.toml).
typecheck: $(STAMP)
	$(BIN)/mypy

# The dashboard test drives Debian's chromium; it skips, saying so, where this fails.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium could not be installed: the browser test will skip"

# The replica tests run a real PostgreSQL server (started by the tests, as the
# postgres user, on a loopback port); they skip, saying so, where this fails.
postgres:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null) \
		|| echo "postgresql could not be installed: the PostgreSQL tests will skip"

# The replica test runs the README's nginx configuration in front of three
# replicas; without nginx that part skips, saying so.
nginx:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx \
		|| (apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null) \
		|| echo "nginx could not be installed: the load-balancer part of the replica test will skip"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
