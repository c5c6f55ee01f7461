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

demo: $(STAMP)
	$(VENV)/bin/ceta2vec ingest $(SAMPLE) --labels $(SAMPLE)/labels.csv --site sample --workspace $(WORKSPACE)
	$(VENV)/bin/ceta2vec pretrain --preset tiny --chunks 3 --steps-per-chunk 30 --workspace $(WORKSPACE)
	$(VENV)/bin/ceta2vec embed --workspace $(WORKSPACE)
	$(VENV)/bin/ceta2vec evaluate --label-column species --workspace $(WORKSPACE)
	$(VENV)/bin/ceta2vec status --workspace $(WORKSPACE)
	@seg=$$($(VENV)/bin/ceta2vec sql "SELECT min(segment_id) FROM segments" --format csv --workspace $(WORKSPACE) | tail -1); \
	echo; echo "figures: $(WORKSPACE)/reports/"; \
	echo "next:    $(VENV)/bin/ceta2vec similar $$seg -k 5 --workspace $(WORKSPACE)"; \
	echo "         $(VENV)/bin/ceta2vec sql \"SELECT * FROM unit_stats ORDER BY frames DESC LIMIT 10\" --workspace $(WORKSPACE)"
	$(VENV)/bin/ceta2vec report --workspace $(WORKSPACE)

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) bench/ingest.py
	$(PY) bench/pretrain.py
	$(PY) bench/embed.py
	$(PY) bench/search.py
	$(PY) bench/evaluate_real.py

clean:
	rm -rf $(WORKSPACE) .pytest_cache
