# Two entry points a fresh machine needs: `make demo` and `make test`.
# Both create or refresh the virtual environment first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test clean

venv: $(STAMP)

# torch first and pinned (a CPU wheel is on disk here); an unpinned torch would pull
# a multi-GB CUDA build. Everything else comes from pyproject.toml.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/kneealign demo

test: $(STAMP)
	$(BIN)/python -m pytest -q Testing

clean:
	rm -rf $(VENV) build *.egg-info
