# kubetune: `make demo` and `make test` work from a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: demo test lint install clean learn versus-trl

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	# torch first, pinned: the CPU wheel on local disk; nothing later may replace it.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev]"
	# tinker-cookbook's own trainers (bench/cookbook_smoke.py). --no-deps: its metadata asks for
	# torch>=2.10 and tml-renderers>=0.4.1 (not on the index; imported only for Inkling/Kimi models),
	# so its light dependencies are listed here instead (blobfile needs pycryptodomex and lxml).
	$(BIN)/pip install --quiet --no-deps "tinker-cookbook==0.6.1" "chz>=0.4" "blobfile>=3" \
		"pycryptodomex>=3.8" "lxml>=4.9" "pyrage>=1.4" "termcolor>=2" "tiktoken>=0.12"
	touch $(STAMP)

install: $(STAMP)

# trl only for the side-by-side benchmark; never part of the default install.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	touch $(BENCH_STAMP)

demo: $(STAMP)
	$(BIN)/kubetune demo

test: $(STAMP)
	$(BIN)/ruff check runtime components pipelines tests bench
	$(BIN)/python -m pytest -q

# SFT -> PPO and SFT -> DPO on the embedded task; records docs/benchmarks.md (~10 min on 2 cores).
learn: $(STAMP)
	$(BIN)/python bench/learning.py

versus-trl: $(BENCH_STAMP)
	$(BIN)/python bench/versus_trl.py

lint: $(STAMP)
	$(BIN)/ruff check runtime components pipelines tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
