# Two commands do everything from a fresh clone: `make demo` and `make test`.
# Each creates .venv if missing, installs the project with its dependencies, and
# (demo) synthesizes the default dataset if missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   := data/synth-sc
# torch 2.14.1 with torchaudio 2.11.0 is the verified pair (torchaudio's transforms and resampler).
TORCH  := "torch==2.14.1" "torchaudio==2.11.0"

.PHONY: demo test test-unit test-integration install data clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH) -e ".[test]"
	touch $@

data: $(DATA)/synth.json

$(DATA)/synth.json: | $(VENV)/.installed
	$(BIN)/pld data synth --out $(DATA) --speakers 150 --unknown-words 10

demo: install data
	$(BIN)/pld run configs/quickstart.yaml

test: install
	$(BIN)/python -m pytest

test-unit: install  # the fast tests of one module each (no Ray cluster)
	$(BIN)/python -m pytest tests/unit

test-integration: install  # real Ray and MLflow (minutes)
	$(BIN)/python -m pytest tests/integration

clean:
	rm -rf pld-runs mlflow.db mlruns mlartifacts
