# Two commands for a fresh clone: `make serve` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SERVE_STAMP := $(VENV)/.installed-serve
STAMP := $(VENV)/.installed

.PHONY: install test serve lint clean

# torch 2.13.0 is pinned first: on these machines it resolves to a local CPU build (seconds), while
# an unpinned torch would pull a multi-GB CUDA build. GPU hosts install their own torch.
# Serving needs the package alone; the test tools (pytest, openai, ruff, deploy linters, schemathesis)
# come on top for `make test`.
$(SERVE_STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0" || $(PY) -m pip install -q torch
	$(PY) -m pip install -q -e .
	touch $(SERVE_STAMP)

$(STAMP): $(SERVE_STAMP)
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

serve: $(SERVE_STAMP)
	$(VENV)/bin/dllm serve --host 127.0.0.1 --port 8000

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
