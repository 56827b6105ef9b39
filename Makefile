# `make run`  : the main job on the embedded default data (no download).
# `make test` : the whole test suite.
# Both create/refresh .venv first when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
RUN_ARGS ?=
TEST_ARGS ?=

.PHONY: run test venv lint

$(VENV)/.stamp: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.stamp

run: $(VENV)/.stamp
	$(PY) -m pgnm_monai run $(RUN_ARGS)

test: $(VENV)/.stamp
	$(PY) -m pytest -n 2 --dist loadscope --no-loadscope-reorder $(TEST_ARGS)

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check pgnm_monai tests
