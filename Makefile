# make run   - install into .venv, migrate, serve the embedded default with a demo model
# make test  - install into .venv (with dev tools), lint, type-check, run the suite (what CI runs)
# make test-quick - between edits: lint, type-check, the tests but e2e and the slowest (< 2 min)
# make bench - the benchmarks (API ingest, unlearning, PGU's core space and cache pass, inference)
# make fuzz  - schemathesis against the served API, thousands of cases (prints the count),
#              then the hardening probe's cases at ten times the suite's scale
# make drills - the fault drills, DRILL_RUNS times each (prints runs and failures)
# make lock  - re-resolve requirements.lock (runtime) and requirements-dev.lock (+ dev tools)
#              from pyproject.toml, newest allowed versions, with hashes

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-quick lint lock bench fuzz drills clean

# Exactly the locked versions, each checked against its hash, then unlearnd and its Python
# client on top (their own dependencies are the lock's: `pip check` fails when a
# pyproject.toml names one the lock lacks, i.e. `make lock` was not run).
$(STAMP): requirements-dev.lock pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . -e clients/python
	$(BIN)/pip check
	touch $(STAMP)

PIP_COMPILE := $(BIN)/pip-compile --quiet --upgrade --generate-hashes --allow-unsafe \
	--strip-extras --no-header --no-emit-index-url --no-emit-find-links
lock: $(STAMP)
	$(PIP_COMPILE) --output-file requirements.lock pyproject.toml
	$(PIP_COMPILE) --extra dev --constraint requirements.lock \
		--output-file requirements-dev.lock pyproject.toml

# The development admin key of `make run` (refused when UNLEARN_ENVIRONMENT=production).
DEV_KEY := unlearnd-dev-admin-key-for-make-run

run: $(STAMP)
	$(BIN)/unlearnd migrate
	UNLEARN_DEMO_MODEL=$${UNLEARN_DEMO_MODEL:-true} \
	UNLEARN_BOOTSTRAP_ADMIN_KEY=$${UNLEARN_BOOTSTRAP_ADMIN_KEY:-$(DEV_KEY)} \
	$(BIN)/unlearnd serve --host 127.0.0.1 --port 8000

lint: $(STAMP)
	$(BIN)/ruff check ml service workers migrations tests benchmarks clients
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

# Between edits: not tests/e2e (whole runs: processes, a browser, docker-compose), nor the
# service tests that start serve processes (ingest), deliver callbacks with retries and an
# embedded runtime (callbacks) or train memorising models (the methods through the service).
QUICK_TESTS := tests/test_architecture.py tests/test_lock.py tests/test_links.py tests/ml \
	tests/workers tests/service tests/benchmarks tests/clients
QUICK_SKIP  := test_ingest test_callbacks \
	test_conmu_service test_dau_service test_ltu_service test_rfu_ss_service
test-quick: lint
	$(BIN)/python -m pytest -q -m "not slow and not drill" $(QUICK_TESTS) \
		$(foreach name,$(QUICK_SKIP),--ignore=tests/service/$(name).py)

bench: $(STAMP)
	$(BIN)/python -m benchmarks.api_ingest
	$(BIN)/python -m benchmarks.ingest_cpu
	$(BIN)/python -m benchmarks.polled_reads
	$(BIN)/python -m benchmarks.unlearning
	$(BIN)/python -m benchmarks.core_space
	$(BIN)/python -m benchmarks.cache_update
	$(BIN)/python -m benchmarks.inference

FUZZ_EXAMPLES ?= 400
PROBE_SCALE ?= 10
fuzz: $(STAMP)
	UNLEARN_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -s tests/e2e/test_fuzz.py
	UNLEARN_PROBE_SCALE=$(PROBE_SCALE) $(BIN)/python -m pytest -q -s tests/e2e/test_probe.py

DRILL_RUNS ?= 5
drills: $(STAMP)
	$(BIN)/python -m tests.e2e.drills --runs $(DRILL_RUNS)

clean:
	rm -rf $(VENV) .state .pytest_cache .mypy_cache .ruff_cache
