# Set-up and everyday commands. Each target installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch and torchvision must come as a matching pair (else torchvision fails to import).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# Where the pair comes from: empty means the configured package index (PyPI: the CUDA
# build on Linux). A CPU-only host that reaches PyTorch's own index can take its CPU build,
# a fifth of the size: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH_FROM := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

.PHONY: install demo test lint docs bench real clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_FROM) $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/radpath demo --out demo-out

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -n 2 -q
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# Regenerate the generated pages (configuration reference, results tables), then build
# the site into site/ (open site/index.html).
docs: $(STAMP)
	$(BIN)/python scripts/gen_docs.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/preprocess.py

# The real data of ../shared/data: ingest, pseudo-pair, split by patient, train on 2 CPUs.
REAL_DATA ?= ../shared/data
REAL_OUT ?= runs/real-data
real: $(STAMP)
	for source in mias ucsb breakhis; do \
	  $(BIN)/radpath ingest $$source $(REAL_DATA)/$$source --out $(REAL_OUT)/$$source/manifest.csv || exit 1; \
	done
	$(BIN)/radpath pair $(REAL_OUT)/mias/manifest.csv $(REAL_OUT)/ucsb/manifest.csv \
	  $(REAL_OUT)/breakhis/manifest.csv --out $(REAL_OUT)/cohort.csv --fractions 0.65,0.35,0.0
	$(BIN)/radpath train --config configs/real-cpu.yaml --manifest $(REAL_OUT)/cohort.csv \
	  --out runs/real-cpu

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo-out site
