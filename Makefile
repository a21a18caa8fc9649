# The two set-up commands of the README: `make run` and `make test`. Both set up .venv/ first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: setup run test ingest calibrate clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first: an unpinned torch would pull a CUDA build of several GB.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# Build or refresh the index (exit 2 only means some files were rejected; they are listed).
ingest: setup
	$(BIN)/casebot ingest || [ $$? -eq 2 ]

run: ingest
	$(BIN)/casebot serve

test: setup
	$(BIN)/pytest

calibrate: ingest
	$(BIN)/python bench/calibrate_gate.py

clean:
	rm -rf .casebot
