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

$(STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: it takes the CPU build; unpinned pulls GBs of CUDA wheels.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[embeddings,local,dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# The official MCP Inspector CLI (Node >= 22 from npm's node@22) for the router conformance test.
INSPECTOR := 0.21.2
NODE_STAMP := .node/.installed-inspector-$(INSPECTOR)
$(NODE_STAMP):
	mkdir -p .node
	if command -v npm >/dev/null; then \
	  cd .node && npm install --prefix . --no-audit --no-fund --silent node@22 @modelcontextprotocol/inspector@$(INSPECTOR) \
	  && touch $(abspath $(NODE_STAMP)); \
	else echo "npm not found: the MCP Inspector test will be skipped" >&2; fi

install: $(STAMP) $(NODE_STAMP)

demo: $(STAMP)
	$(VENV)/bin/neonblue demo

test: $(STAMP) $(NODE_STAMP)
	$(PY) -m pytest -m "not slow and not clickhouse_server" -q

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) bench/run_all.py --output bench/results/latest.md

clean:
	rm -rf $(VENV) .pytest_cache
