# Two commands on a fresh machine: `make up` starts the local stack, `make test` runs every test.
# Each installs what it needs first (a virtualenv from the lock file, and the CDK CLI from npm).
# One tier at a time: `make unit` (moto in-process), `make integration` (over HTTP against a
# local stack each test session starts), `make cdk` (synthesizes the CDK app).

# The newest Python 3.11+ that actually runs (a version manager may list shims that do not).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
NODE_INSTALLED := node_modules/.installed
PORT ?= 4242

.PHONY: install browser up test lint unit integration cdk bench clean

$(INSTALLED): requirements.lock pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(NODE_INSTALLED): package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(INSTALLED)

# Debian's Chromium and ChromeDriver, for the tests that drive pages in a real browser. Never
# a downloaded browser. Where apt cannot be used, those tests skip and say why.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian's chromium and chromium-driver for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else \
		echo "WARNING: cannot install Debian's chromium here (no root, no apt): browser tests will be skipped"; \
	fi

up: $(INSTALLED)
	$(BIN)/clearline up --port $(PORT)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(INSTALLED) $(NODE_INSTALLED) browser lint
	$(BIN)/pytest -q -p no:cacheprovider

unit: $(INSTALLED)
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

integration: $(INSTALLED) browser
	$(BIN)/pytest -q -p no:cacheprovider tests/integration

cdk: $(INSTALLED) $(NODE_INSTALLED)
	$(BIN)/pytest -q -p no:cacheprovider tests/cdk

bench: $(INSTALLED)
	$(BIN)/python bench/charge_path.py
	$(BIN)/python bench/fraud_screening.py
	$(BIN)/python bench/vault_path.py
	$(BIN)/python bench/dispute_path.py
	$(BIN)/python bench/cold_start.py
	$(BIN)/python bench/balance_and_lists.py
	$(BIN)/python bench/cost.py

clean:
	rm -rf $(VENV) node_modules cdk.out .mypy_cache .ruff_cache .pytest_cache
