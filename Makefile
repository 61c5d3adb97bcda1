# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# FHIR R4 (4.0.1) models live only in fhir.resources 6.4, which needs pydantic 1: a separate,
# small environment that the FHIR export test runs its validator in (see tests/api/test_fhir.py).
FHIR_R4_VENV ?= .venv-fhir-r4

.PHONY: demo test bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

$(FHIR_R4_VENV)/.installed:
	$(PYTHON) -m venv $(FHIR_R4_VENV)
	$(FHIR_R4_VENV)/bin/pip install --quiet "fhir.resources==6.4.0" "pydantic>=1.10,<2"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/mipd demo

test: $(VENV)/.installed-test $(FHIR_R4_VENV)/.installed
	MIPD_FHIR_R4_PYTHON=$(FHIR_R4_VENV)/bin/python $(BIN)/python -m pytest

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/ingest.py --quick

clean:
	rm -rf $(VENV) $(FHIR_R4_VENV) mipd-data .pytest_cache
