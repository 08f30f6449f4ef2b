# `make demo` and `make test` set everything up in a virtual environment on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

CHROMIUM ?= /usr/bin/chromium

.PHONY: install demo test test-slow bench clean space

$(STAMP): setup.cfg pyproject.toml scripts/install_torch.sh
	test -x $(PY) || python3 -m venv $(VENV)
	bash scripts/install_torch.sh $(PY)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VENV)/bin/hf-recunlearn demo --output-dir runs/demo --json runs/demo/results.json

# The browser tests need Chromium: installed here when missing (as root), or `make test` stops with what to do.
$(CHROMIUM):
	CHROMIUM=$(CHROMIUM) bash scripts/ensure_chromium.sh

# Tiny models: one intra-op thread per process is faster, and several processes never oversubscribe the cores.
test: $(STAMP) $(CHROMIUM)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q

test-slow: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -m slow

# Every unlearning method side by side on the synthetic data set (about 10 minutes on 2 cores): the table on stderr, results in JSON.
bench: $(STAMP)
	@OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VENV)/bin/hf-recunlearn bench --output-dir runs/bench --json runs/bench/results.json --plots runs/bench/plots

# The Space folder to upload (spaces/ plus a wheel of this checkout, which its requirements.txt installs).
space: $(STAMP)
	$(PY) scripts/build_space.py dist/space

clean:
	rm -rf runs .pytest_cache
