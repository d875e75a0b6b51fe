# The two commands of the README's quick start: `make demo` and `make test`.
# Each creates .venv with pip if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	# CSAIL's own model code, the independent reference for ade20k-ppm (tests only);
	# its models import without its other requirements (opencv, yacs, scipy, tqdm).
	$(BIN)/pip install -q --no-deps mit-semseg==1.0.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/citylens demo

test: $(STAMP)
	$(BIN)/ruff check citylens tests bench jobs
	$(BIN)/pytest
	$(BIN)/pytest -m slow

test-fast: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check citylens tests bench jobs

bench: $(STAMP)
	$(BIN)/python bench/all.py --readme

clean-venv:
	rm -rf $(VENV)
