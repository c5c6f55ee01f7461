# Two commands for a newcomer:  `make demo`  and  `make test`.
# Both create .venv on first use; the project's own files install everything.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
SAMPLE := data/sample
WORKSPACE ?= ceta2vec-workspace

.PHONY: setup setup-test demo test bench clean

# What the pipeline needs, nothing more: the demo and the benchmarks run on this.
setup: $(STAMP)

# torch first: the machine's local CPU wheel; a resolver left alone would pull CUDA builds.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e .
	touch $(STAMP)

# The tests add pytest, selenium and moto, and Debian's Chromium and ChromeDriver: the report's
# browser tests drive a real browser. Only the tests need them.
setup-test: $(TEST_STAMP)

$(TEST_STAMP): $(STAMP)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium chromium-driver; }
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $(TEST_STAMP)

# The whole pipeline in one command: ingest, pretrain, embed, evaluate, HTML report; it prints
# the report's path and commands to try next.
demo: $(STAMP)
	$(VENV)/bin/ceta2vec run $(SAMPLE) --labels $(SAMPLE)/labels.csv --label-column species --site sample \
	  --preset tiny --chunks 3 --steps-per-chunk 30 --workspace $(WORKSPACE)
	@echo
	@echo "To put ceta2vec and prefect on your PATH in this shell:  source $(VENV)/bin/activate"

# Three workers on two cores: much of the suite waits on Prefect servers, subprocesses and a
# browser. A module's tests stay on one worker, so its fixtures are built once.
test: $(TEST_STAMP)
	$(PY) -m pytest -q -n 3 --dist loadfile --no-loadscope-reorder tests

bench: $(STAMP)
	$(PY) bench/ingest.py
	$(PY) bench/pretrain.py
	$(PY) bench/embed.py
	$(PY) bench/search.py
	$(PY) bench/evaluate_real.py

clean:
	rm -rf $(WORKSPACE) .pytest_cache
