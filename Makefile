# Two entry points, both self-bootstrapping on a fresh machine:
#   make repro [PROFILE=tiny|demo|demo-realistic|base] [OVERRIDES='key=value ...']   create .venv if missing, install, run the pipeline
#   make test                             same bootstrap, then the linter and the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= demo
BIN := $(VENV)/bin
# The stamp is named after pyproject.toml's content: re-running install into an
# existing venv is a no-op until the pins change.
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
# Build prerequisites of fairseq-fixed, with the pins taken from pyproject.toml.
PREREQS := $(shell $(PYTHON) -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print(' '.join(d for d in deps if d.split('==')[0] in ('torch', 'torchaudio', 'numpy', 'cython')))")
FAIRSEQ := $(shell $(PYTHON) -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print(next(d for d in deps if d.startswith('fairseq')))")
export PATH := $(abspath $(BIN)):$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install params repro test bench metrics-diff ci-gate ci-baseline exp-show demo-report

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q $(PREREQS)
	$(BIN)/pip install -q --no-build-isolation $(FAIRSEQ)
	$(BIN)/pip install -q --no-build-isolation -e '.[dev,hf]'
	rm -f $(VENV)/.installed-*
	touch $@

# Compose params.yaml from params/ for PROFILE (what `dvc exp run -S profile=...` does),
# plus any Hydra overrides in OVERRIDES (what further -S flags do).
OVERRIDES ?=
params: install
	$(BIN)/python -m stages.compose_params profile=$(PROFILE) $(OVERRIDES)

repro: params
	$(BIN)/dvc repro

# The linter first (rules in pyproject.toml): it fails in seconds, the suite takes minutes.
# Two pytest-xdist workers (one per core), each process one torch thread: two workers whose
# training subprocesses each spun two threads on two cores ran slower than one worker. The modules
# that share one expensive run stay together on one worker (tests/conftest.py, SHARED_RUNS).
# TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
test: install
	$(BIN)/ruff check .
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

# What the last committed change to metrics/ did, as a Markdown table (CI prints
# it after the tests). BASE=<rev> compares the workspace with another revision.
BASE ?= $(shell git log -n1 --format=%H -- metrics 2>/dev/null)~1
metrics-diff: install
	@if git rev-parse -q --verify '$(BASE)^{commit}' >/dev/null; then \
		echo "dvc metrics diff $(BASE) (workspace):"; $(BIN)/dvc metrics diff --md '$(BASE)'; \
	else echo "metrics-diff: revision $(BASE) is not in this clone; nothing to compare"; fi

# The headline of `dvc exp show` (python -m hubert.experiments): the params that differ
# between the rows and the metrics that answer the project's questions, as Markdown.
# ARGS go to `dvc exp show`, e.g. ARGS=-A for every commit.
ARGS ?=
exp-show: install
	$(BIN)/python -m hubert.experiments $(ARGS)

# The CI metrics gate: the tiny pipeline in a throwaway clone of HEAD, its metrics diff
# against the committed baseline of this CPU (.ci/tiny/metrics-<capability>) and a failure beyond
# .ci/tolerance.yaml. ci-baseline replaces this CPU's baseline with a fresh tiny run of HEAD (commit
# first, then commit .ci/tiny); on another kind of CPU, run it there too.
ci-gate: install
	.ci/tiny_run.sh

ci-baseline: install
	.ci/tiny_run.sh --update

# The committed demo run's report (docs/demo-report: index.md, its figures, index.html), made
# from the committed params.yaml, metrics/ and dvclive/; tests/test_demo_report.py fails when it is stale.
demo-report: install
	$(BIN)/python -m hubert.report.committed

bench: install
	$(BIN)/python -m bench.features --corpus data/corpus --manifests data/manifests
