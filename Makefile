# `make demo` and `make test` set everything up in a virtual environment on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow bench clean

$(STAMP): setup.cfg pyproject.toml scripts/install_torch.sh
	test -x $(PY) || python3 -m venv $(VENV)
	bash scripts/install_torch.sh $(PY)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VENV)/bin/hf-recunlearn demo --output-dir runs/demo --json runs/demo/results.json

# Tiny models: one intra-op thread per process is faster, and several processes never oversubscribe the cores.
test: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q

test-slow: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -m slow

# Every unlearning method side by side on the synthetic data set (about 10 minutes on 2 cores): table on stdout.
bench: $(STAMP)
	@OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VENV)/bin/hf-recunlearn bench --output-dir runs/bench --json runs/bench/results.json --plots runs/bench/plots

clean:
	rm -rf runs .pytest_cache
