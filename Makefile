# joulestream — `make run` starts the embedded stack, `make test` runs the whole suite.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: run test lint format bench clean tools dashboard

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# The dashboard's chart library (uPlot) from the npm registry, copied into a git-ignored static dir: no CDN,
# no third-party code in the repository. Needs node/npm at install time only.
DASH       := api/dashboard
DASH_VENDOR := $(DASH)/static/vendor/uPlot.iife.min.js
$(DASH_VENDOR): $(DASH)/package.json $(DASH)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "npm not found: the dashboard will show tables without charts"; exit 1; }
	cd $(DASH) && npm ci --no-audit --no-fund --loglevel=error
	mkdir -p $(DASH)/static/vendor
	cp $(DASH)/node_modules/uplot/dist/uPlot.iife.min.js $(DASH)/node_modules/uplot/dist/uPlot.min.css \
		$(DASH)/node_modules/uplot/LICENSE $(DASH)/static/vendor/
dashboard: $(DASH_VENDOR)

run: $(STAMP) $(DASH_VENDOR)
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
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
		echo "chromium not available: the dashboard browser tests will skip"; }

test: $(STAMP) $(DASH_VENDOR) tools
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q -n 2 --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/pipeline.py

clean:
	rm -rf $(VENV) .joulestream .pytest_cache .ruff_cache $(DASH)/node_modules $(DASH)/static/vendor tests/artifacts
