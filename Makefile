# The two commands of the README: `make up` (the whole stack) and `make test` (every test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install test labs lint format bench up clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# setuptools' notes on editable installs (BuildBackendWarning) are not for a newcomer's screen
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Every test but the workshop as written (the nine lab pages, a real stack each, and the
# README's payment-hang --compare: `make labs`, run by CI).
test: $(STAMP)
	$(BIN)/python -m pytest -m "not labs" $(PYTEST_ARGS)

labs: $(STAMP)
	$(BIN)/python -m pytest -m labs $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py

up: $(STAMP)
	$(BIN)/python manage.py stack up --foreground

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .hypothesis
