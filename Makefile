# The two set-up commands of the README: `make run` and `make test`. Both set up .venv/ first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: the core install (what `make run` needs) and the full one with the test and llamacpp extras
# (what `make test` needs). Either order works: `make test` after `make run` adds the extras only, and
# `make run` after `make test` installs nothing.
CORE_STAMP := $(VENV)/.core-installed
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False
export GRADIO_ANALYTICS_ENABLED := False
# llama-cpp-python (the llamacpp extra) compiles llama.cpp at install: for any x86-64 CPU by default, not only this
# one (a wheel cached with -march=native crashes elsewhere). `make setup LLAMA_CMAKE_ARGS=-DGGML_NATIVE=ON` is faster here.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF

.PHONY: setup run test ingest eval calibrate bench clean

$(CORE_STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first: an unpinned torch would pull a CUDA build of several GB.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	touch $(CORE_STAMP)

$(STAMP): $(CORE_STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --quiet -e '.[test,llamacpp]'
	touch $(STAMP)

# The browser tests drive Debian's chromium (Playwright never downloads a browser); installed only when missing.
/usr/bin/chromium:
	apt-get update && apt-get install -y chromium

# The feedback tests start Debian's PostgreSQL server (their own, on a loopback port); installed only when missing.
PG_CTL ?= /usr/lib/postgresql/15/bin/pg_ctl
$(PG_CTL):
	apt-get update && apt-get install -y postgresql

setup: $(STAMP) /usr/bin/chromium $(PG_CTL)

# Build or refresh the index (exit 2 only means some files were rejected; they are listed).
ingest: $(CORE_STAMP)
	$(BIN)/casebot ingest || [ $$? -eq 2 ]

run: ingest
	$(BIN)/casebot serve

test: setup
	$(BIN)/pytest

# The scripted test prompts of evals/ against the bundled library: reports/ (git-ignored) gets report.json,
# report.md, report.html and junit.xml; exit 1 when a test failed.
eval: ingest
	$(BIN)/python -m bot eval evals/*.yaml --report reports --junit reports/junit.xml

calibrate: ingest
	$(BIN)/casebot calibrate --show

# Latency at 50 / 1,000 / 10,000 cases, ingest against raw encode, retrieval modes, start-up, memory:
# prints a table and writes bench/results.md (about 25 minutes on 2 cores; run it on a quiet machine).
bench: $(CORE_STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf .casebot
