# The two commands a newcomer needs are `make demo` and `make test`.
.PHONY: test demo soak bench install services-up services-down clean

SAGAS ?= 1000

test: ## install, start PostgreSQL + RabbitMQ, run ruff, mypy and every test, stop the servers
	scripts/test.sh

demo: ## install only what the demo needs (.demo-venv), play the loan example, simulated time
	scripts/demo.sh

soak: ## the chaos soak on real servers: make soak SAGAS=10000
	scripts/soak.sh --sagas $(SAGAS)

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
	rm -rf .venv .demo-venv .mypy_cache .ruff_cache .pytest_cache build *.egg-info
