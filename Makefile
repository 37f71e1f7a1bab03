# File Dropbox — the menu. `make run` runs the fleet; `make test` runs every test.
SHELL := /bin/bash
PY    ?= python3
VENV  := .venv
BIN   := $(VENV)/bin
# Test files run on WORKERS processes (pytest-xdist), a whole file per worker so that its
# fleet and fixtures are built once: most of the suite's time is waiting (leases, token
# expiry, windows), not CPU. WORKERS=0 runs everything in this one process.
WORKERS ?= 2
XDIST := $(if $(filter 0,$(WORKERS)),,-n $(WORKERS) --dist loadfile)
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | sha256sum | cut -c1-12)

.PHONY: help install lock run test test-fast test-unit test-integration test-e2e lint lint-js format bench sweep clean infra browser containers \
	images compose-up compose-down

help:
	@echo "make run        set up and run the fleet (foreground; Ctrl-C stops it)"
	@echo "                REPLICAS=N: N processes of each service behind HAProxy on 5000-5004"
	@echo "make test       set up and run the whole test suite (unit, integration, e2e, browser)"
	@echo "make test-fast  the suite without tests marked slow"
	@echo "make lint       ruff, mypy, import-linter (no service imports another), ESLint"
	@echo "make bench      benchmarks against a running fleet (make run in another shell)"
	@echo "make sweep      remove expired upload sessions (dry run: make sweep ARGS=--dry-run)"
	@echo "make images     build the fleet's image (and, with no registry, its base images from Debian)"
	@echo "make compose-up the fleet in containers on 5000-5004 (make compose-down removes it)"
	@echo "make clean      remove the virtualenv and local run data"

# pyproject.toml bounds the dependencies; requirements.lock pins the exact versions installed
# (regenerate with `make lock` after changing pyproject.toml).
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

lock: install
	$(BIN)/pip install --quiet --disable-pip-version-check 'pip-tools>=7.4,<8'
	$(BIN)/pip-compile --quiet --extra dev --strip-extras --no-emit-index-url --no-emit-find-links \
		-o requirements.lock pyproject.toml

infra: install
	$(BIN)/python -c "from devtools import infra; infra.ensure_all()"

browser:
	@bash devtools/ensure_browser.sh

containers:
	@bash devtools/ensure_containers.sh

# make run REPLICAS=2: two processes of each service behind HAProxy (installed when missing).
run: install
	$(BIN)/python -m devtools.fleet run $(if $(REPLICAS),--replicas $(REPLICAS))

# The gateway's unit tests build its app in-process (python-socketio in eventlet mode); a
# pytest process that did so and then drives Chromium through Playwright's sync API hangs
# (seen when xdist gave one worker both). They run in a process of their own, after the rest.
GATEWAY_UNIT := tests/unit/socket_gateway tests/unit/test_frontend_socket_contract.py
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider -q -rfEs

test: install browser containers
	$(BIN)/python -c "from devtools import infra; infra.ensure_all()"
ifeq ($(strip $(ARGS)),)
	$(PYTEST) --durations=25 $(XDIST) $(addprefix --ignore=,$(GATEWAY_UNIT))
	$(PYTEST) $(GATEWAY_UNIT)
else
	$(PYTEST) --durations=25 $(XDIST) $(ARGS)
endif

test-fast: install
ifeq ($(strip $(ARGS)),)
	$(PYTEST) -m "not slow" $(XDIST) $(addprefix --ignore=,$(GATEWAY_UNIT))
	$(PYTEST) -m "not slow" $(GATEWAY_UNIT)
else
	$(PYTEST) -m "not slow" $(XDIST) $(ARGS)
endif

test-unit: install
	$(BIN)/python -m pytest -q tests/unit $(ARGS)

test-integration: install
	$(BIN)/python -m pytest -q tests/integration $(ARGS)

test-e2e: install browser
	$(BIN)/python -m pytest -q tests/e2e $(ARGS)

lint: install
	$(BIN)/ruff check services client devtools examples bench tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(MAKE) --no-print-directory lint-js

# ESLint on the dashboard (frontend/package.json pins it; node_modules/ is not committed).
lint-js:
	cd frontend && (test -d node_modules || npm ci --no-audit --no-fund) && npx eslint .

format: install
	$(BIN)/ruff check --fix services client devtools examples bench tests

bench: install
	$(BIN)/python -m bench.fleet_bench $(ARGS)

sweep: install
	$(BIN)/python -m services.file_uploader.sweep $(ARGS)

# Containers (README "Containers"): the engine is started when none answers, base images are
# made from Debian packages when absent (cached in /var/lib/dropbox-docker), sizes printed.
images: install containers
	$(BIN)/python -m devtools.containers images

compose-up: install containers
	$(BIN)/python -m devtools.containers up

compose-down: install
	$(BIN)/python -m devtools.containers down

clean:
	rm -rf $(VENV) .run artifacts
