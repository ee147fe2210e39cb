# PocketPay: `make up` runs it, `make test` checks it. Both install what they need into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up install lock test lint typecheck contracts pytest bench migrate check fmt clean demo

# Installs the exact versions of requirements.lock (what the tests passed with), then the
# package itself without resolving anything again.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet pip==26.3
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

# Rewrites requirements.lock from pyproject.toml, keeping the versions it already pins where
# they still fit (add or bump a dependency in pyproject.toml, then run this).
lock:
	$(BIN)/uv pip compile --quiet pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

up: $(STAMP)
	$(BIN)/pocketpay up

migrate: $(STAMP)
	$(BIN)/pocketpay migrate

check: $(STAMP)
	$(BIN)/pocketpay check

# The README's walk-through (scripts/demo.sh) twice in a row against a temporary SQLite server
# (`make test` runs it too, as tests/e2e/test_demo.py).
demo: $(STAMP)
	scripts/demo.sh --server 2

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

contracts: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test: lint typecheck contracts pytest

fmt: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
