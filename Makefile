# Two commands do everything on a fresh machine:
#   make demo   install into .venv, run the whole DVC pipeline on the embedded demo data, print the table
#   make test   install into .venv, lint (ruff, mypy), run the test suite
# Both are idempotent: with nothing changed, a second run installs nothing and `dvc repro` does no work.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install demo lint test bench clean

install: $(STAMP)

# Pinned: direct dependencies in pyproject.toml, the whole tree in requirements.lock.
# pip (not uv/poetry) so torch==2.14.1 / torchvision==0.29.1 come from the machine's local wheels.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	@test -d .dvc || (echo "no .dvc folder: run from the dermdl repository root" && exit 1)
	dvc repro
	@cat outputs/summary.txt

# ruff (lint + format) and mypy: pyproject.toml holds their settings; `ruff format .` fixes formatting
lint: $(STAMP)
	$(BIN)/ruff check dermdl tests bench stages
	$(BIN)/ruff format --check dermdl tests bench stages
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup

bench: $(STAMP)
	$(BIN)/python bench/train_throughput.py

clean:
	rm -rf outputs data/demo
