# The two commands: `make demo` and `make test`. Everything runs from .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
SRC := src tests bench examples docs

.PHONY: install demo test lint format unit integration e2e bench bench-all clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) examples/demo.py

lint: install
	$(VENV)/bin/ruff check $(SRC)
	$(VENV)/bin/ruff format --check $(SRC)
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix $(SRC)
	$(VENV)/bin/ruff format $(SRC)

test: lint
	$(VENV)/bin/pytest -W error --cov --cov-branch --cov-report=term:skip-covered tests

unit: install
	$(VENV)/bin/pytest -W error tests/unit

integration: install
	$(VENV)/bin/pytest -W error tests/integration

e2e: install
	$(VENV)/bin/pytest -W error tests/e2e

bench: install
	$(PY) bench/gateway.py

# Every benchmark of bench/README.md, one after the other (about half an hour; needs the
# PostgreSQL and Redis servers, nginx, wrk, and npm for oidc-provider).
bench-all: install
	$(PY) bench/gateway.py --only a,b,c,d,e,f
	$(PY) bench/revocation.py
	$(PY) bench/ratelimit.py
	$(PY) bench/authserver.py
	$(PY) bench/scanner.py --secure

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
