# joulestream — `make run` starts the embedded stack, `make test` runs the whole suite.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: run test lint format bench clean tools

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/joulestream up

# pdftoppm (poppler-utils) renders receipt PDFs in the tests; docker-compose (Debian's, needs no daemon)
# validates docker-compose.yml (tests/deploy/test_compose.py). Installed when missing and we are root.
tools:
	@command -v pdftoppm >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && apt-get install -y -qq poppler-utils >/dev/null) || \
		echo "pdftoppm not available: the PDF render test will skip"; }
	@{ docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; } || \
		{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null) || \
		echo "no compose implementation: the compose validation test will skip"; }

test: $(STAMP) tools
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q -n 2

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/pipeline.py

clean:
	rm -rf $(VENV) .joulestream .pytest_cache .ruff_cache
