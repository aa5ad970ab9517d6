# Production Control: the Makefile is the operations interface (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Resolved at use, so a uv installed by the `uv` target a moment earlier is found.
UV = $(or $(shell command -v uv 2>/dev/null),$(HOME)/.local/bin/uv)
RUN = $(UV) run --frozen
S3_PORT ?= 9000
Q ?= fast
P ?= all
# `make run`'s supervisord: control socket, pid file (see ops/supervisord.conf).
export PC_RUN_DIR ?= $(CURDIR)/.run
CTL = $(RUN) supervisorctl --configuration ops/supervisord.conf

export PYTHONUNBUFFERED := 1

.PHONY: help
help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: uv
uv: ## install uv with pip when it is missing
	@command -v uv >/dev/null 2>&1 || test -x "$(HOME)/.local/bin/uv" || \
	  python3 -m pip install --quiet --user uv 2>/dev/null || \
	  python3 -m pip install --quiet --user --break-system-packages uv 2>/dev/null || \
	  python3 -m pip install --quiet uv

.PHONY: sync
# Bytecode compiled up front: with PYTHONDONTWRITEBYTECODE set (common in images and CI)
# every api, worker and scheduler process would otherwise recompile its imports (~1.5 s).
sync: uv ## install the locked dependencies into .venv
	@$(UV) sync --frozen --compile-bytecode

.PHONY: migrate
migrate: sync ## apply database migrations
	$(RUN) alembic upgrade head

.PHONY: revision
revision: sync ## create a migration: make revision m="what changed"
	$(RUN) alembic revision --autogenerate -m "$(m)"

.PHONY: run
run: migrate ## everything locally under supervisord: api, a worker per queue, scheduler, local S3
	@# A local S3 (moto's server) only when no S3_ENDPOINT_URL is configured; see ops/.
	S3_PORT=$(S3_PORT) $(RUN) python -m ops.supervise

.PHONY: ps
ps: ## the processes of `make run` with their state, pid and uptime
	@$(CTL) status

.PHONY: restart
restart: ## restart processes of `make run`: make restart P=api (or P=workers:heavy, P='workers:*', P=all)
	$(CTL) restart $(P)

.PHONY: stop
stop: ## stop `make run` from another terminal (like Ctrl-C: every process stops cleanly)
	$(CTL) shutdown

.PHONY: api
api: sync ## the api alone
	$(RUN) python -m app

.PHONY: worker
worker: sync ## one worker group: make worker Q=heavy
	$(RUN) python -m workers --queues $(Q)

.PHONY: scheduler
scheduler: sync ## the scheduler alone
	$(RUN) python -m scheduler

.PHONY: test
test: sync ## the whole suite against the real PostgreSQL, RabbitMQ and a local S3
	$(RUN) pytest

.PHONY: test-unit
test-unit: sync ## the tests that need no services (PostgreSQL and RabbitMQ may be stopped)
	DATABASE_URL=postgresql+asyncpg://root@127.0.0.1:1/none RABBITMQ_URL=amqp://guest:guest@127.0.0.1:1/ \
	  $(RUN) pytest tests/unit

.PHONY: lint
lint: sync ## ruff format check + lint, mypy
	$(RUN) ruff format --check .
	$(RUN) ruff check .
	$(RUN) mypy

.PHONY: fmt
fmt: sync ## format and autofix
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

.PHONY: bench
bench: sync ## benchmarks -> bench/results.json; make bench ARGS="--only single,core --scale 0.5"
	$(RUN) python -m bench $(ARGS)

.PHONY: chaos
chaos: sync ## fault run of the whole stack (3 min); flags: make chaos ARGS="--duration 60 --seed 7"
	$(RUN) python -m chaos $(ARGS)

.PHONY: rabbit-ui
rabbit-ui: ## enable the RabbitMQ management console and print its URL
	@rabbitmq-plugins enable rabbitmq_management >/dev/null && echo "RabbitMQ console: http://127.0.0.1:15672 (guest/guest)"

.PHONY: queues
queues: sync ## depth of every queue with its delay (.DQ) and dead-letter (.XQ) queue
	$(RUN) python -m app.queues

.PHONY: dlq
dlq: sync ## list dead-lettered messages
	$(RUN) python -m workers.dead_letters list

.PHONY: dlq-requeue
dlq-requeue: sync ## move dead-lettered messages back to their queues
	$(RUN) python -m workers.dead_letters requeue

.PHONY: api-key
api-key: sync ## create an API key (printed once; stored hashed): make api-key name=1c
	$(RUN) python -m app.api_keys create "$(or $(name),default)"

.PHONY: scheduler-run
scheduler-run: sync ## fire one scheduled job now: make scheduler-run JOB=close_expired_batches
	@$(RUN) python -m scheduler run $(JOB)

.PHONY: up
up: ## compose: the whole stack in containers
	docker compose --profile app up -d --build

.PHONY: monitoring
monitoring: ## compose: the stack plus Prometheus (:9090) and Grafana (:3000)
	docker compose --profile app --profile monitoring up -d --build

.PHONY: down
down: ## compose: stop the stack
	docker compose --profile app --profile monitoring down

.PHONY: logs
logs: ## compose: follow logs
	docker compose --profile app logs -f
