# The README's two commands are `make demo` and `make test`; both bootstrap what they need.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint sim clean

$(STAMP): pyproject.toml constraints.txt
	bash .ci/system-deps
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	bash .ci/services
	$(BIN)/checus-worker demo

test: $(STAMP)
	bash .ci/services
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

sim: $(STAMP)
	$(BIN)/checus-worker sim

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .checus-sim
