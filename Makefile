# Two commands: `make serve` runs the service, `make test` runs the tests.
# Each creates .venv if missing, installs the pinned dependencies and prepares
# the offline model first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8765
STORAGE ?= ./service-storage
MODEL ?= tiny.en

.PHONY: serve test setup model browser postgres nginx lint clean

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

# Two workers, one file each at a time; one torch/OpenMP thread per process,
# since two workers on two cores would otherwise spin against each other's
# threads (busy-waiting OpenMP barriers cost more than they save here).
test: model browser postgres nginx lint
	OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

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
	rm -rf $(VENV) .pytest_cache
