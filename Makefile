# `make demo` and `make test` work on a fresh machine: each installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Starts the local Kafka and PostgreSQL unless GROUPBUY_* variables point at running ones.
UP = eval "$$($(BIN)/python -m infra.local up)"

.PHONY: install up down status demo lint test test-unit soak bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v java >/dev/null || { echo "installing Java 17 for Kafka" >&2; apt-get update -q >&2 && apt-get install -y -q openjdk-17-jre-headless >&2; }
	@command -v mvn >/dev/null || { echo "installing Maven to fetch Kafka" >&2; apt-get update -q >&2 && apt-get install -y -q maven >&2; }
	@command -v openssl >/dev/null || { echo "installing openssl for the TLS PostgreSQL's key" >&2; apt-get update -q >&2 && apt-get install -y -q openssl >&2; }
	@command -v chromium >/dev/null || { echo "installing Chromium for the browser tests" >&2; apt-get update -q >&2 && apt-get install -y -q chromium >&2; }
	$(PYTHON) -m venv $(VENV) >&2
	$(BIN)/pip install -q --upgrade pip >&2
	$(BIN)/pip install -q -e '.[dev]' >&2
	@$(MAKE) -s $(BIN)/compose-spec
	@touch $@

# The Compose Specification's own loader, which tests/unit/test_deploy.py checks
# deploy/compose.yaml with (there is no Docker engine to ask); built with Go from its module.
COMPOSE_SPEC := github.com/compose-spec/compose-go/v2/cmd@v2.16.2
$(BIN)/compose-spec:
	@if command -v go >/dev/null; then \
		echo "building compose-spec ($(COMPOSE_SPEC))" >&2; \
		GOBIN=$(abspath $(BIN)) go install $(COMPOSE_SPEC) >&2 && mv $(BIN)/cmd $@ \
			|| echo "compose-spec could not be built: the compose file's check is skipped" >&2; \
	else echo "no Go here: the compose file's check is skipped" >&2; fi

# `eval "$(make -s up)"` exports GROUPBUY_KAFKA_BOOTSTRAP and GROUPBUY_DATABASE_URL.
up: install
	@$(BIN)/python -m infra.local up

down:
	@$(BIN)/python -m infra.local down

status:
	@$(BIN)/python -m infra.local status

# The whole system on local services with three simulated sites, about a minute;
# e.g. `make demo DEMO_ARGS="--speed 5 --orders 1000"` runs it bigger and faster.
DEMO_ARGS ?=
demo: install
	@$(UP) && $(BIN)/groupbuy demo $(DEMO_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test-unit: install
	$(BIN)/pytest tests/unit

test: lint
	@$(UP) && $(BIN)/pytest --durations=20  # the slowest named: the run should stay near 15 min

# The fault-injection tests at length: 20 kills of each service, broker and database
# restarts, a minute's database freeze, thousands of orders (`make test` runs them short).
soak: install
	@$(UP) && GROUPBUY_SOAK=1 $(BIN)/pytest tests/reliability -m soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
