# pgseek: the user interface. `make help` lists the targets.
# Every database target uses DATABASE_URL, defaulting to the embedded cluster
# (make db-up), so the same commands work against any PostgreSQL you point them at.

SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
# DATABASE_URL passes through untouched, from the environment or the command line: make
# would expand a `$` in a password (and the shell a `"` or a backquote) if its value were
# written into a recipe. DB_URL is shell code that reads it at run time, falling back to
# the local cluster's URL (asked for only by the targets that use it).
ifneq ($(origin DATABASE_URL),undefined)
override DATABASE_URL := $(value DATABASE_URL)
export DATABASE_URL
endif
DB_URL = "$${DATABASE_URL:-$$(scripts/cluster.sh url 2>/dev/null)}"
export PGSEEK_PG_MAJOR ?= 15

.PHONY: help demo install db-up db-down db-status db-url db-ready psql migrate rollback migrate-status \
	migrate-sql migrations-freeze vector-index test lint bench eval load reliability clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

# DB_URL is read in sub-makes: make expands a recipe's lines before running the first,
# when the cluster may not be up yet. With DATABASE_URL set, that server is used instead.
demo: ## the quick start: install, start, migrate, load the PostgreSQL manual, search
	@scripts/install.sh
	@$(if $(DATABASE_URL),:,scripts/cluster.sh up)
	@$(MAKE) -s --no-print-directory migrate
	@DATABASE_URL="$$($(MAKE) -s --no-print-directory db-url)" $(PY) scripts/demo.py

install: ## install PostgreSQL packages, pgvector, .venv and the in-database Python library
	@scripts/install.sh

db-up: ## start the embedded local cluster (a no-op when running)
	@scripts/cluster.sh up

db-down: ## stop the embedded local cluster
	@scripts/cluster.sh down

db-status: ## is the embedded cluster running, and where
	@scripts/cluster.sh status

db-url: ## print the connection URL (use with make -s)
	@printf '%s\n' $(DB_URL)

# bench, eval and load start the embedded cluster (as demo does) unless DATABASE_URL names
# a server. A prerequisite's recipe runs before the target's recipe is expanded, so
# their DB_URL sees the started cluster.
db-ready:
	@$(if $(DATABASE_URL),:,scripts/cluster.sh up >/dev/null)

psql: ## open psql on DATABASE_URL
	@psql $(DB_URL)

migrate: ## migrate to head (or TARGET=rev) and apply changed sql/ objects
	@DATABASE_URL=$(DB_URL) $(PY) scripts/migrate.py upgrade $(TARGET)

rollback: ## downgrade one revision (or TARGET=rev|base)
	@DATABASE_URL=$(DB_URL) $(PY) scripts/migrate.py downgrade $(TARGET)

migrate-status: ## applied revision, head and pending revisions
	@DATABASE_URL=$(DB_URL) $(PY) scripts/migrate.py status

migrate-sql: ## print the migration SQL (RANGE=base:head) without touching a database
	@$(PY) scripts/migrate.py sql $(RANGE)

migrations-freeze: ## record new revisions as released in migrations/frozen.txt
	@$(PY) scripts/migrate.py freeze

vector-index: ## (re)build the vector index that pgseek.config asks for, concurrently
	@DATABASE_URL=$(DB_URL) $(PY) scripts/migrate.py vector-index

# A fresh clone has no $(VENV): `make lint` and `make test` install what is missing first,
# as `make demo` does (scripts/install.sh, idempotent).
$(VENV)/bin/sqlfluff:
	@scripts/install.sh

lint: $(VENV)/bin/sqlfluff ## sqlfluff, pgspot and squawk over SQL, ruff over Python, frozen migrations
	@$(VENV)/bin/sqlfluff lint --disable-progress-bar sql migrations/versions
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(PY) scripts/migrate.py freeze --check
	@$(PY) scripts/pgspot_check.py
	@$(VENV)/bin/squawk --reporter gcc migrations/versions/*.sql
	@$(VENV)/bin/hadolint Dockerfile docker/pgbouncer/Dockerfile

test: lint ## lint, then the whole test suite against a real cluster
	@scripts/install.sh --plpython-only
	@$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: db-ready ## benchmarks -> bench/report.md (QUICK=1 smoke run, ONLY=a,b sections, CORPUS=dir)
	@DATABASE_URL=$(DB_URL) $(PY) scripts/bench.py $(if $(QUICK),--quick) $(if $(ONLY),--only $(ONLY)) \
		$(if $(CORPUS),--corpus $(CORPUS))

reliability: ## bad input, injection and fault tests -> RELIABILITY.md (QUICK=1: fewer examples)
	@scripts/install.sh --plpython-only
	@$(PY) scripts/reliability.py $(if $(QUICK),--quick)

eval: db-ready ## retrieval quality on dbpedia-entity-5k -> bench/eval.md (CORPUS=dir)
	@DATABASE_URL=$(DB_URL) $(PY) scripts/evaluate.py $(if $(CORPUS),--corpus $(CORPUS))

load: db-ready ## mixed load with pgbench, direct and through PgBouncer, then a lost-rows check (DURATION=60 CLIENTS=8)
	@DATABASE_URL=$(DB_URL) $(PY) scripts/load.py --seconds $(or $(DURATION),60) --clients $(or $(CLIENTS),8)

clean: ## stop and delete the embedded cluster, build files and .venv
	@scripts/cluster.sh destroy
	@rm -rf .build $(VENV)
