PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test lint bench clean db-migrate lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

# Every machine installs the same versions: requirements.lock constrains what pyproject.toml asks for.
$(STAMP): $(BIN)/python pyproject.toml requirements.lock
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/commerce serve

test: $(STAMP)
	$(BIN)/python -m pytest -q

db-migrate: $(STAMP)
	$(BIN)/commerce migrate

lock: $(STAMP)
	( echo "# Exact versions that make dev and make test install (as constraints, with the extras of pyproject.toml)."; \
	  echo "# Regenerate after changing dependencies: make lock"; \
	  $(BIN)/pip freeze --exclude-editable ) > requirements.lock

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The event store, then the HTTP benchmark (needs wrk: apt-get install wrk); each prints its table.
# Servers: COMMERCE_DATABASE_URL / COMMERCE_REDIS_URL, else the defaults of bench/common.py, else embedded.
BENCH_HTTP_ARGS ?= --duration 15 --repeat 3 --concurrency 32 1

bench: $(STAMP)
	$(BIN)/python -m bench.event_store --repeat 3
	$(BIN)/python -m bench.http_load $(BENCH_HTTP_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
