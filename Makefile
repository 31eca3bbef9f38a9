# Every target sets itself up: `make demo` and `make test` work on a fresh machine.
# The venv is (re)installed only when pyproject.toml or constraints.txt changes (stamp file):
# pyproject.toml states compatible ranges, constraints.txt the exact tested versions.
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-fast lint clean-data

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,lora,sweeps,ann]"
	touch $(STAMP)

install: $(STAMP)

# MovieLens-100K (titles + posters) -> frozen MiniLM + EfficientNet-Lite0 caches -> IISAN.
demo: $(STAMP)
	$(BIN)/recsys-prep data=movielens
	$(BIN)/recsys-cache data=movielens
	$(BIN)/recsys-train experiment=demo

test: $(STAMP)
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25

test-fast: $(STAMP)
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check recsys data_prep tests experiments

clean-data:
	rm -rf data outputs multirun
