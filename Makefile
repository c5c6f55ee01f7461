# Two commands for a newcomer:  `make demo`  and  `make test`.
# Both create .venv on first use; the project's own files install everything.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SAMPLE := data/sample
WORKSPACE ?= ceta2vec-workspace

.PHONY: setup demo test bench clean

setup: $(STAMP)

# torch first: the machine's local CPU wheel; a resolver left alone would pull CUDA builds.
$(STAMP): pyproject.toml constraints.txt
	@# Debian's Chromium and ChromeDriver: the report's browser tests drive a real browser.
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium chromium-driver; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

# The whole pipeline in one command: ingest, pretrain, embed, evaluate, HTML report; it prints
# the report's path and commands to try next.
demo: $(STAMP)
	$(VENV)/bin/ceta2vec run $(SAMPLE) --labels $(SAMPLE)/labels.csv --label-column species --site sample \
	  --preset tiny --chunks 3 --steps-per-chunk 30 --workspace $(WORKSPACE)

# Three workers on two cores: much of the suite waits on Prefect servers, subprocesses and a
# browser. A module's tests stay on one worker, so its fixtures are built once.
test: $(STAMP)
	$(PY) -m pytest -q -n 3 --dist loadfile --no-loadscope-reorder tests

bench: $(STAMP)
	$(PY) bench/ingest.py
	$(PY) bench/pretrain.py
	$(PY) bench/embed.py
	$(PY) bench/search.py
	$(PY) bench/evaluate_real.py

clean:
	rm -rf $(WORKSPACE) .pytest_cache
