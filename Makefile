# The two set-up commands of the README are these targets:
#   make demo   create .venv, install, run the main job
#   make test   create .venv, install, run the whole (fast) suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# Runs from the repo's own files only: no hand-installed tools assumed.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export ANONYMIZED_TELEMETRY := False

.PHONY: install demo test test-slow lint bench clean

# pip's own output is off (hundreds of lines); each step says what it does and how long it takes.
# `make install PIP_QUIET=` shows everything pip does.
PIP_QUIET ?= --quiet
# Where the CPU build of torch comes from. Empty: pip's own configuration (on the build machine a local
# wheel directory holds torch-2.13.0+cpu). With only PyPI, set TORCH_INDEX=https://download.pytorch.org/whl/cpu.
TORCH_INDEX ?=

$(STAMP):
	@echo "==> [1/4] virtualenv $(VENV) (first run only)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "==> [2/4] upgrading pip"
	@$(PY) -m pip install $(PIP_QUIET) --upgrade pip
	@# torch first and pinned to the CPU build: PyPI's Linux torch pulls GBs of CUDA wheels (README, "Installing").
	@echo "==> [3/4] torch 2.13.0, CPU build$(if $(TORCH_INDEX), from $(TORCH_INDEX),) (30 s from a local wheel, longer to download)"
	@$(PY) -m pip install $(PIP_QUIET) $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),) "torch==2.13.0"
	@$(PY) -c "import sys, torch; v = torch.__version__; cuda = sys.platform == 'linux' and '+cpu' not in v; print('    torch', v, '(a CUDA build: GBs of nvidia wheels; see the README, Installing, for TORCH_INDEX)' if cuda else '')"
	@echo "==> [4/4] neonblue and its dependencies, editable (about 2 minutes; setuptools prints an"
	@echo "          'Editable installation' notice at the end: expected, nothing to do)"
	@$(PY) -m pip install $(PIP_QUIET) -e ".[embeddings,local,dev]"
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)
	@echo "==> installed. The command is $(VENV)/bin/neonblue (not on your PATH): call it by that path,"
	@echo "    or run 'source $(VENV)/bin/activate' once per shell to type plain 'neonblue'."

# Node >= 22 (npm's node@22) with two pinned third-party MCP clients for the router tests:
# the official MCP Inspector CLI (stdio) and the official conformance suite (HTTP, requirement set
# 2026-07-28). Without npm both tests skip; an npm that fails stops make (no silent skip).
INSPECTOR   := 0.21.2
CONFORMANCE := 0.2.0-alpha.11
NODE_STAMP  := .node/.installed-inspector-$(INSPECTOR)-conformance-$(CONFORMANCE)
$(NODE_STAMP):
	@mkdir -p .node
	@if command -v npm >/dev/null; then \
	  echo "==> node 22, MCP Inspector $(INSPECTOR) and conformance suite $(CONFORMANCE) under .node/ (npm)"; \
	  cd .node && npm install --prefix . --no-audit --no-fund --silent --save-exact node@22 \
	    @modelcontextprotocol/inspector@$(INSPECTOR) @modelcontextprotocol/conformance@$(CONFORMANCE) \
	  && rm -f .installed-* && touch $(abspath $(NODE_STAMP)); \
	else echo "npm not found: the MCP Inspector and conformance tests will be skipped" >&2; fi

install: $(STAMP) $(NODE_STAMP)

demo: $(STAMP)
	$(VENV)/bin/neonblue demo

test: $(STAMP) $(NODE_STAMP)
	$(PY) -m pytest -m "not slow and not clickhouse_server" -q --durations=25

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) bench/run_all.py --output bench/results/latest.md

clean:
	rm -rf $(VENV) .pytest_cache
