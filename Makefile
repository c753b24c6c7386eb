# P2Engine — the few verbs. `make run` and `make test` work on a fresh machine.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --frozen

.PHONY: install proto proto-check fmt lint typecheck test test-fast run up down all bench

# Bytecode compiled at install (as in the Dockerfile): a process that has to compile its
# imports (where PYTHONDONTWRITEBYTECODE is set, every time) takes ~0.8 s longer to start.
install:  ## install uv (if missing) and every workspace package into .venv
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --all-packages --group dev --compile-bytecode
	@$(RUN) python -m compileall -q -j0 libs services clients >/dev/null

proto: install  ## regenerate libs/proto/src from proto/
	$(RUN) scripts/gen_proto.sh

proto-check: install  ## fail when the committed generated code is stale
	@tmp=$$(mktemp -d); $(RUN) scripts/gen_proto.sh $$tmp && \
	  diff -r -x __pycache__ $$tmp/p2engine libs/proto/src/p2engine && echo "proto-check: generated code is current"; \
	  rc=$$?; rm -rf $$tmp; exit $$rc

fmt: install
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

lint: install  ## ruff, buf lint, buf breaking (against the previous commit)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) buf lint proto
	@if git cat-file -e HEAD~1:proto/buf.yaml 2>/dev/null; then \
	  $(RUN) buf breaking proto --against '.git#ref=HEAD~1,subdir=proto'; \
	else echo "buf breaking: no earlier contracts to compare with"; fi

typecheck: install
	$(RUN) pyright

test: install  ## every test (PostgreSQL tests skip when none is reachable, except in CI)
	$(RUN) pytest

run: install  ## start the local stack and run the offline demo chat
	$(RUN) p2engine up
	$(RUN) p2engine demo

up: install
	$(RUN) p2engine up

down:
	$(RUN) p2engine down

bench: install
	$(RUN) python bench/chat_turn.py

all: lint proto-check typecheck test
