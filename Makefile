# Two commands on a fresh clone with a bare Python 3.11+ and pip:
#   make demo   - the offline demo: sandbox Langfuse + TLM, real SDKs, real Prefect, the flow twice
#   make test   - the test suite
# uv is installed with pip when missing (python3 -m uv), then `uv sync` builds .venv from uv.lock,
# with its .pyc files: where PYTHONDONTWRITEBYTECODE=1 is set, every process would otherwise
# compile Prefect from source (3-4 CPU s each; the tests start a hundred or so).

PYTHON ?= python3
UV := $(PYTHON) -m uv
# test files spread over this many processes (each starts its own Prefect test server); the
# tests spend much of their time waiting on servers and subprocesses: 4 keep 2 CPUs busy.
# Everything but the tests marked `timing` first, in parallel: the end-to-end files (real
# `prefect server`s, workers, subprocesses) go to the workers first, then the longest files
# (tests/conftest.py LONGEST_FIRST), hence --no-loadscope-reorder (xdist would order them by
# their number of tests). Then the `timing` ones (real leases and rate limits), one at a time.
TEST_WORKERS ?= 4
# offline by default: no telemetry from the Prefect servers the demo and the tests start
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: setup demo test test-fast test-unit lint check sandbox prefect serve bench bench-ceiling sizing screenshots

setup:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv>=0.5"
	@$(UV) sync --locked --quiet --compile-bytecode

demo: setup
	$(UV) run --locked python -m sandbox.demo

# the tests' own .pyc files (this checkout's modules, pytest's rewritten tests) are written even
# where PYTHONDONTWRITEBYTECODE=1 is set: else every process compiles them again (collecting the
# suite: 11 s -> 5 s)
test: export PYTHONDONTWRITEBYTECODE =
test: setup  ## everything: in parallel, then the few tests that need real time, one at a time
	$(UV) run --locked pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not timing" --durations=10
	$(UV) run --locked pytest -q -m timing --durations=6

lint: setup
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .
	$(UV) run --locked mypy .

check: lint test

test-fast: setup  ## the unit and contract layers: no Prefect server, no flow runs
	$(UV) run --locked pytest -q -n $(TEST_WORKERS) --dist loadfile tests/unit tests/contract

test-unit: setup  ## pure functions only: no sockets, no servers (seconds)
	$(UV) run --locked pytest -q tests/unit

sandbox: setup
	$(UV) run --locked python -m sandbox

prefect: setup  ## local Prefect server + process worker + prefect.yaml deployments (Ctrl-C stops)
	$(UV) run --locked python -m deployments.local

serve: setup  ## the same deployments without a work pool (needs PREFECT_API_URL)
	$(UV) run --locked python -m deployments.serve

bench: setup  ## benchmarks: our flow vs the seed's approach vs the floor (BENCH_ARGS to narrow)
	$(UV) run --locked python -m benchmarks.run $(BENCH_ARGS)
bench-ceiling: setup  ## what the shared TLM ceiling costs (benchmarks/tlm_ceiling.py, ~15 min)
	$(UV) run --locked python -m benchmarks.tlm_ceiling $(BENCH_ARGS)
sizing: setup  ## the sizing table of docs/SCALING.md, from the committed benchmark results
	$(UV) run --locked python -m benchmarks.sizing $(SIZING_ARGS)

screenshots: setup  ## docs/images/*.png: the Prefect UI after real runs on the sandboxes (needs chromium)
	$(UV) run --locked python -m sandbox.screenshots
