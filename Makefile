# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PORT ?= 8080

.PHONY: install run test lint format bench clean

PLUGINS := plugins/weather plugins/calculator

# The host first, then the example plugin packages (the files in examples/ need only the
# host); editable, so their entry points are real package metadata.
$(STAMP): setup.cfg setup.py $(addsuffix /pyproject.toml,$(PLUGINS))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q $(addprefix -e ,$(PLUGINS))
	# The official AsyncAPI JSON Schemas, to validate /asyncapi.json in the tests, and the
	# official AG-UI client, run against /agui/{agent} in the tests.
	npm install --silent --no-audit --no-fund --prefix $(VENV)/npm @asyncapi/specs@6.11.1 \
		@ag-ui/client@1.0.0
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/myagent-ws server examples/ws_weather_agent.py --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest -q

# One comparison run against the bare aiohttp reference (fresh processes, loopback):
# prints the table and writes bench/RESULTS.md. A few minutes.
bench: install
	$(BIN)/python bench/run.py

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
