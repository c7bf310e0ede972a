# pie: one target per stage. CONFIG picks the experiment, ROOT the work root:
#   make demo                      # everything on the embedded Fashion-MNIST
#   make train CONFIG=my.toml ROOT=/data/pie
# Unset, they are left to pie: $PIE_CONFIG / $PIE_ROOT from the environment, else
# <root>/config.toml if present, else the packaged configs/fashion-mnist.toml; root ./work.
# Every stage is idempotent: a rerun does only what is missing.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
CONFIG ?=
ROOT ?=
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist

PIE := $(VENV)/bin/pie
ARGS := $(if $(CONFIG),--config $(CONFIG)) $(if $(ROOT),--root $(ROOT))
STAMP := $(VENV)/.installed

.PHONY: help env data browser demo ingest corrupt train compress infer analytics export summary report \
        test test-slow lint format bench gpu-wheels gpu-check clean

help:
	@echo "make demo    set up, run every stage on Fashion-MNIST, print the summary"
	@echo "make test    fast tests (make test-slow: the slow ones too)"
	@echo "stages:      make ingest | corrupt | train | compress | infer | analytics | export | summary |"
	@echo "             report"
	@echo "options:     CONFIG=FILE (else \$$PIE_CONFIG, else <root>/config.toml if present,"
	@echo "               else the packaged configs/fashion-mnist.toml)"
	@echo "             ROOT=DIR    (else \$$PIE_ROOT, else ./work)"
	@echo "other:       make lint | format | bench | clean"
	@echo "GPU check:   make gpu-wheels here, then make gpu-check on the GPU machine"

# -- environment ---------------------------------------------------------------------------
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
	  { echo "pie needs Python 3.11 (PYTHON=$(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

env: $(STAMP)

data:
	@test -f $(FMNIST_DIR)/t10k-images-idx3-ubyte.gz || { \
	  echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"; \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; }

# The report's browser test drives Debian's chromium (never a downloaded one); without it that
# one test is skipped, so a failed install only says so.
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing chromium (Debian package, for the report's browser test)"; \
	  { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } 2>/dev/null || \
	  echo "chromium could not be installed: the report's browser test will be skipped"; }

# -- stages --------------------------------------------------------------------------------
ingest: env data
	$(PIE) ingest fashion-mnist $(ARGS)

corrupt: env
	$(PIE) corrupt $(ARGS)

train: env
	$(PIE) train $(ARGS)

compress: env
	$(PIE) compress $(ARGS)

infer: env
	$(PIE) infer $(ARGS)

analytics: env
	$(PIE) analyze $(ARGS)

export: env
	$(PIE) export $(ARGS)
	$(PIE) export --non-pie $(ARGS)

summary: env
	@$(PIE) summary $(ARGS)

report: env
	@$(PIE) report $(ARGS)

demo: env data
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory ingest corrupt train compress infer analytics export summary report && \
	echo "demo: all stages done in $$(( $$(date +%s) - start )) s"

# -- quality -------------------------------------------------------------------------------
test: env data browser
	$(VENV)/bin/pytest -q

test-slow: env data
	$(VENV)/bin/pytest -q -m slow

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: env
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: env
	@for script in $(filter-out bench/gpu_check.py bench/synthetic.py,$(sort $(wildcard bench/*.py))); do \
	  echo "== $$script"; $(VENV)/bin/python $$script || exit 1; done

# -- the GPU check (bench/gpu_check.py) ------------------------------------------------------
# gpu-wheels: the packages pie's ingest, train and infer need that the GPU machine's python3
# (3.12, torch, torchvision, numpy, pyarrow, typer, rich, pillow, scipy) lacks, at this venv's
# versions, as Python 3.12 manylinux x86_64 wheels in .whl/ (ignored by git; about 25 MB).
# gpu-check: there, with .whl/ beside the checkout; pie runs from the checkout, not installed.
GPU_WHEELS := duckdb webdataset braceexpand
GPU_PLATFORMS := manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
                 manylinux2014_x86_64 manylinux1_x86_64

gpu-wheels: env
	rm -rf .whl
	$(VENV)/bin/python -m pip download --quiet --no-deps --only-binary=:all: \
	  --python-version 3.12 --implementation cp $(addprefix --platform ,$(GPU_PLATFORMS)) -d .whl \
	  $$($(VENV)/bin/python -c 'import importlib.metadata as m, sys; \
	     print(*(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' $(GPU_WHEELS))
	@du -sh .whl

gpu-check:
	python3 bench/gpu_check.py

clean:
	rm -rf $(or $(ROOT),$(PIE_ROOT),work)
