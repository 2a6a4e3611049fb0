# The two commands: `make demo` and `make test`. Both create .venv when it is missing and install
# the project with exact pins before doing their work.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
SYSSTAMP := $(VENV)/.sysdeps
DEMO_OUT ?= demo_out
PYTEST_ARGS ?=

.PHONY: demo test lint typecheck unit sysdeps install clean bench gpu-check

demo: $(STAMP)
	$(BIN)/fedresponse demo --out $(DEMO_OUT)

test: $(STAMP) $(SYSSTAMP) lint typecheck unit

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is installed first and alone so that pip takes the pinned CPU wheel where one is provided
# locally, instead of resolving a CUDA build through another package.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# System tools the tests drive for real: dciodvfy (Debian dicom3tools) validates generated DICOM,
# Debian's chromium renders the HTML report and prints its PDF, poppler-utils (pdfinfo, pdftoppm) reads the
# PDF back. Installed with apt when we are root; otherwise the
# tests that need them say so (and fail under CI=true).
$(SYSSTAMP): | $(BIN)/python
	@if command -v dciodvfy >/dev/null && command -v chromium >/dev/null && command -v pdftoppm >/dev/null \
	  && command -v Orthanc >/dev/null && [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dicom3tools chromium poppler-utils \
	    orthanc orthanc-dicomweb >/dev/null) \
	  || echo "warning: could not install dicom3tools/chromium"; \
	else echo "warning: dicom3tools/chromium missing and not root; related tests will be skipped"; fi
	touch $(SYSSTAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b --preset quick || exit 1; done

# On a CUDA machine: the CUDA-only tests, then radiomics / training / DP-SGD on GPU against CPU (< 5 min on
# one H200; non-zero exit on a CUDA error or a value beyond tolerance). Without CUDA it says so and exits 0.
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache
