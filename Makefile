# qtt developer commands. `make demo` and `make test` work on a fresh checkout (they install first).
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
DEMO_DATA = examples/data/digits
DEMO_RUN  = runs/demo
DEMO_BUDGET ?= 10m
DEMO_STEPS  ?= 12

.PHONY: install demo test test-fast bench lint clean

$(BIN)/qtt: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# Pinned torch/torchvision first: these versions come from local wheels, others download gigabytes.
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -e '.[dev]'
	touch $(BIN)/qtt

install: $(BIN)/qtt

$(DEMO_DATA): | install
	$(BIN)/python examples/make_dataset.py digits $(DEMO_DATA) --layout split

demo: install $(DEMO_DATA)
	$(BIN)/qtt tune $(DEMO_DATA) --budget $(DEMO_BUDGET) --max-steps $(DEMO_STEPS) --hub tiny --space examples/space-demo.yaml \
		--weights random --max-input-size 32 --max-epochs 4 --delta-t 1 --out $(DEMO_RUN) --seed 0
	$(BIN)/qtt leaderboard $(DEMO_RUN) --top 10 --test $(DEMO_DATA)/test
	$(BIN)/qtt export-best $(DEMO_RUN) --out $(DEMO_RUN)/export --overwrite
	$(BIN)/qtt predict $(DEMO_RUN)/export $$(ls $(DEMO_DATA)/test/3/* | head -n 2)

test: install
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow"

bench: install
	$(BIN)/python benchmarks/bench_decode_cache.py
	$(BIN)/python benchmarks/bench_step.py
	$(BIN)/python benchmarks/bench_threads.py
	$(BIN)/python benchmarks/bench_spg_hvp.py
	$(BIN)/python benchmarks/bench_surrogate_latency.py
	$(BIN)/python benchmarks/bench_optimizer_latency.py
	$(BIN)/python benchmarks/bench_parallel.py --ray

lint: install
	$(BIN)/ruff check qtt_cli tests examples benchmarks

clean:
	rm -rf $(VENV) runs examples/data .pytest_cache
