# Two commands on a fresh machine: `make test` and `make demo`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.botaclip-installed

.PHONY: test demo setup clean

setup: $(STAMP)

# Re-install whenever pyproject.toml changes; the stamp keeps repeated runs fast.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The lint gate first (seconds): ruff (pyproject.toml) and the function size/parameter budget (tools/code_shape.py).
# Then the suite on every core (pytest-xdist); the Ray tests share one worker (their `xdist_group`). The 20 slowest
# tests are listed at the end: CI must stay under 15 minutes on 2 cores.
test: $(STAMP)
	$(BIN)/ruff check botaclip bench tests tools
	$(BIN)/python tools/code_shape.py --check
	$(BIN)/python -m pytest -q -n auto --dist loadgroup --durations=20

demo: $(STAMP)
	$(BIN)/botaclip demo

clean:
	rm -rf $(VENV) build *.egg-info
