# mirage: `make demo` and `make test` each install what they need on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU machines get the local CPU wheel (a bare `torch` would pull a multi-GB CUDA build);
# with a GPU driver present, any torch >= 2.6 from the index. Override: make install TORCH_SPEC=...
TORCH_SPEC ?= $(if $(shell command -v nvidia-smi 2>/dev/null),torch>=2.6,torch==2.13.0)
STAMP := $(VENV)/.installed
# Offline by default: no hub downloads, W&B writes local files.
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false
SEED ?= 42
SEEDS ?=
PYTEST_ARGS ?=

.PHONY: install test test-fast demo audit lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet "$(TORCH_SPEC)" -e ".[dev,launchers]"
	touch $(STAMP)

install: $(STAMP) ## create .venv with mirage (editable) and dev tools

test: $(STAMP) ## the full CPU test suite
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## skip the slow end-to-end runs
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP) ## the embedded default: the safety mirage (SFT vs NPO / RMU) on a 1M-parameter LLaVA, CPU
ifeq ($(strip $(SEEDS)),)
	$(BIN)/mirage-pipeline experiment=mirage_demo seed=$(SEED)
else
	$(BIN)/mirage-pipeline -m experiment=mirage_demo seed=$(shell echo $(SEEDS) | tr -s ' ' ',')
endif

audit: $(STAMP) ## the demo's models under every probe (reuses what `make demo` trained)
	$(BIN)/mirage-pipeline experiment=mirage_demo seed=$(SEED) audit_experiment=audit_demo_full

lint: $(STAMP) ## ruff, and the import layers (import-linter contracts in pyproject.toml)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

clean: ## remove caches and run outputs (keeps .venv)
	rm -rf logs data/cache .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +
