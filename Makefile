# The two commands a new user needs are `make demo` and `make test`; both build .venv first.
# `make demo` installs only the core (sagakit, typer, rich); `make test`, `lint` and `bench`
# install the dev tools as well. Each install leaves a stamp, so it is redone only when
# pyproject.toml changes; the dev install includes the core, so it stamps both.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
CREATED := $(VENV)/.created
CORE := $(VENV)/.core-installed
DEV := $(VENV)/.dev-installed
BENCH := $(VENV)/.bench-installed

.PHONY: demo test lint bench clean
.NOTPARALLEL:  # one pip at a time in .venv, even under `make -j`

$(CREATED):  # a .venv made before these stamps existed is kept, not made again
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	touch $@

$(CORE): pyproject.toml | $(CREATED)
	$(PIP) install --quiet -e .
	touch $@

$(DEV): pyproject.toml | $(CREATED)
	$(PIP) install --quiet -e '.[dev]'
	touch $@ $(CORE)

# The PostgreSQL benchmarks compare with DBOS, which is the `bench` extra, not a dev tool.
$(BENCH): pyproject.toml | $(DEV)
	$(PIP) install --quiet -e '.[bench]'
	touch $@

demo: $(CORE)
	rm -f demo.db demo.db-wal demo.db-shm
	$(BIN)/sagakit demo --db sqlite:///demo.db

# mermaid.js for the browser test that renders `sagakit graph` output, from the npm
# registry as its lock file pins it.
MERMAID := tests/browser/mermaid/node_modules/.package-lock.json
$(MERMAID): tests/browser/mermaid/package-lock.json
	npm ci --prefix tests/browser/mermaid --no-audit --no-fund --ignore-scripts --loglevel=error

# npm's redis client for the shipping service in Node.js that the foreign-service test
# (tests/integration/test_foreign_shipping.py) runs, as its lock file pins it.
SHIPPING_JS := tests/foreign/shipping/node_modules/.package-lock.json
$(SHIPPING_JS): tests/foreign/shipping/package-lock.json
	npm ci --prefix tests/foreign/shipping --no-audit --no-fund --ignore-scripts --loglevel=error

# The cloudevents SDK, whose official CloudEvents JSON schema (compiled for ajv) the envelope's
# contract test (tests/contract/test_cloudevents_schema.py) validates events with.
CLOUDEVENTS := tests/contract/cloudevents/node_modules/.package-lock.json
$(CLOUDEVENTS): tests/contract/cloudevents/package-lock.json
	npm ci --prefix tests/contract/cloudevents --no-audit --no-fund --ignore-scripts --loglevel=error

test: $(DEV) $(MERMAID) $(SHIPPING_JS) $(CLOUDEVENTS)
	$(BIN)/python -m pytest

# Each docs/examples/ directory is checked as one program of its own: their files are
# top-level modules, and two directories may both have, say, an `orders` module.
lint: $(DEV) $(BENCH)  # mypy reads the DBOS baseline too
	$(BIN)/ruff check src tests benchmarks docs/examples
	$(BIN)/ruff format --check src tests benchmarks docs/examples
	$(BIN)/mypy
	for examples in $(sort $(dir $(wildcard docs/examples/*/*.py))); do \
	    $(BIN)/mypy --strict "$$examples" || exit 1; done
	$(BIN)/lint-imports
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The PostgreSQL fleet also runs with BASELINE's sagakit in the same run: by default the
# code before the append-only log (issue 11), whose figures the speed-up is claimed against.
BASELINE ?= 9014b67
bench: $(DEV) $(BENCH)
	$(BIN)/python -m benchmarks $(if $(BASELINE),--baseline $(BASELINE))

clean:
	rm -rf $(VENV) site tests/browser/mermaid/node_modules tests/foreign/shipping/node_modules tests/contract/cloudevents/node_modules .pytest_cache .mypy_cache .ruff_cache .import_linter_cache demo.db*
