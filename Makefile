# The two commands: `make demo` and `make test`. Everything runs from .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
SRC := src tests bench examples docs tools

.PHONY: install demo test lint format unit integration e2e bench bench-all clean native fastcheck

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

# The per-request modules compiled with mypyc (tools/build_native.py): what `make bench` runs.
NATIVE := build/native
$(NATIVE)/.built: $(VENV)/.installed tools/build_native.py $(shell find src/bastion -name '*.py')
	$(PY) tools/build_native.py $(NATIVE)

# The JSON fast path (bastion.openapi.fastcheck): a C++ extension on Debian's libsimdjson and
# libre2 (.ci/run installs libsimdjson-dev, libre2-dev and g++), installed into the venv.
FASTCHECK := $(VENV)/.fastcheck
$(FASTCHECK): $(VENV)/.installed native/fastcheck/fastcheck.cpp native/fastcheck/setup.py \
		native/fastcheck/pyproject.toml
	$(VENV)/bin/pip install -q ./native/fastcheck
	touch $@

fastcheck: $(FASTCHECK)

native: $(NATIVE)/.built $(FASTCHECK)

# The gateway's tests that run a second time, on the compiled build.
NATIVE_TESTS := tests/integration/test_native_build.py tests/integration/test_gateway_http.py \
	tests/integration/test_fuzz_gateway.py tests/integration/test_upstream_pool.py \
	tests/integration/test_gateway_backpressure.py tests/integration/test_tls.py \
	tests/integration/test_openapi_gateway.py tests/integration/test_saas_flaws_gateway.py \
	tests/integration/test_response_body_hook.py tests/integration/test_protect_asgi.py \
	tests/integration/test_config_reload.py tests/unit/test_forward.py \
	tests/unit/test_transport_layer.py tests/unit/test_cors_layer.py tests/unit/test_chain_order.py \
	tests/unit/test_paths.py tests/unit/test_authn_layer.py tests/unit/test_jwt_verifier.py \
	tests/unit/test_ratelimit_layer.py tests/unit/test_gcra.py tests/unit/test_authz_layer.py \
	tests/unit/test_openapi_layer.py tests/unit/test_openapi_spec.py tests/unit/test_response_filter.py \
	tests/unit/test_revocation.py tests/unit/test_clientip.py tests/unit/test_ipblocks.py \
	tests/unit/test_apikeys.py \
	tests/unit/test_freshness.py tests/unit/test_audit_lines.py tests/unit/test_audit_record.py \
	tests/unit/test_audit_writer.py tests/unit/test_audit_spool.py tests/unit/test_redact.py

# Tests that count calls by patching a method of a compiled class: compiled callers do not see
# the patch (the behaviour they pin is the same in both builds; they run in the first pass).
NATIVE_SKIP := --deselect "tests/unit/test_jwt_verifier.py::test_cache_hit_skips_the_lookups_until_something_is_revoked"

test: lint native
	BASTION_EXPECT_FASTCHECK=1 $(VENV)/bin/pytest -W error --cov --cov-branch --cov-report=term:skip-covered tests
	PYTHONPATH=$(NATIVE) BASTION_EXPECT_NATIVE=1 BASTION_EXPECT_FASTCHECK=1 $(VENV)/bin/pytest -W error -q -p no:cacheprovider \
		$(NATIVE_TESTS) $(NATIVE_SKIP)

unit: install
	$(VENV)/bin/pytest -W error tests/unit

integration: install
	$(VENV)/bin/pytest -W error tests/integration

e2e: install
	$(VENV)/bin/pytest -W error tests/e2e

bench: native
	$(PY) bench/gateway.py

# Every benchmark of bench/README.md, one after the other (about half an hour; needs the
# PostgreSQL and Redis servers, nginx, wrk, and npm for oidc-provider).
bench-all: native
	$(PY) bench/gateway.py --only a,b,c,d,e,f
	$(PY) bench/revocation.py
	$(PY) bench/ratelimit.py
	$(PY) bench/authserver.py
	$(PY) bench/scanner.py --secure

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage build native/fastcheck/build \
		native/fastcheck/*.egg-info
