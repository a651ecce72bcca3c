# The two commands a newcomer needs are `make demo` and `make test`.
.PHONY: test fuzz demo docs soak bench install services-up services-down clean relay-faults

SAGAS ?= 1000

test: ## install, start PostgreSQL + RabbitMQ, run ruff, mypy and every test, stop the servers
	scripts/test.sh

fuzz: ## as test, for the worker's fuzz tests alone, with the long hypothesis profile
	SAGABOX_FUZZ_PROFILE=fuzz scripts/test.sh tests/test_fuzz_worker.py tests/test_fuzz_return_address.py -q

demo: ## install only what the demo needs (.demo-venv), play the loan example, simulated time
	scripts/demo.sh

docs: ## build the documentation site into site/, warnings as errors (`mkdocs serve` to browse)
	scripts/bootstrap.sh
	.venv/bin/python -m pip install --quiet --disable-pip-version-check --group docs
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict

soak: ## the chaos soak on real servers: make soak SAGAS=10000
	scripts/soak.sh --sagas $(SAGAS)

relay-faults: ## the relay fault test at 100,000 rows on both databases (servers from services-up)
	eval "$$(scripts/services.sh env)" && SAGABOX_RELAY_FAULT_ROWS=100000 \
		SAGABOX_RELAY_FAULT_BACKENDS=postgresql,sqlite .venv/bin/pytest tests/test_relay_faults.py -q

bench: ## every benchmark on durable PostgreSQL + RabbitMQ; saves bench/results/DATE.md
	scripts/bench.sh

install: ## create .venv with sagabox and the dev tools
	scripts/bootstrap.sh

services-up: ## start PostgreSQL and RabbitMQ on 127.0.0.1 for manual use
	scripts/services.sh up
	@echo 'eval "$$(scripts/services.sh env)" exports their URLs'

services-down: ## stop them
	scripts/services.sh down

clean:
	rm -rf .venv .demo-venv .mypy_cache .ruff_cache .pytest_cache build site *.egg-info
