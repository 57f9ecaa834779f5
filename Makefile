# Two commands do everything on a fresh machine:
#   make demo   install into .venv, run the whole DVC pipeline on the embedded demo data, print the table
#   make test   install into .venv, lint (ruff, mypy), run the test suite
# Both are idempotent: with nothing changed, a second run installs nothing and `dvc repro` does no work.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install demo reproduce lint lint-scripts test bench clean

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

# CI's experiment check (docs/reproduce.md): the demo from scratch (earlier outputs deleted, every stage
# forced, no DVC run-cache restore), `dvc metrics diff` against the metrics committed at HEAD (printed
# always), then a non-zero exit when a metric got worse than .ci/metrics-gate.yaml tolerates.
reproduce: $(STAMP)
	@test -d .dvc || (echo "no .dvc folder: run from the dermdl repository root" && exit 1)
	rm -rf outputs data/demo
	dvc repro --force --no-run-cache
	-dvc metrics diff --all HEAD
	$(BIN)/python -m dermdl.metrics_gate

# ruff (lint + format) and mypy: pyproject.toml holds their settings; `ruff format .` fixes formatting
lint: $(STAMP)
	$(BIN)/ruff check dermdl tests bench stages
	$(BIN)/ruff format --check dermdl tests bench stages
	$(BIN)/mypy
	$(MAKE) --no-print-directory lint-scripts

# hadolint on the Dockerfile; shellcheck on .ci/run and every tracked or new (untracked, not ignored) *.sh and
# *.sbatch file. No $(STAMP) prerequisite: `lint` installs the tools first (tests/test_container.py runs this
# target in a scratch repository against the project's venv).
lint-scripts:
	$(BIN)/hadolint Dockerfile
	git ls-files -z -co --exclude-standard '*.sh' '*.sbatch' | xargs -0 $(BIN)/shellcheck .ci/run

test: lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup

bench: $(STAMP)
	$(BIN)/python bench/train_throughput.py

clean:
	rm -rf outputs data/demo
