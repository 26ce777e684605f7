# FAME on DALI. Every target sets up the virtual environment on first use.
# `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
CUDA ?= 12
VENV ?= .venv
CONFIG ?= configs/synthetic.yaml
ARGS ?=
NPROC ?= 1
PY := $(VENV)/bin/python
REQS := $(if $(filter 13,$(CUDA)),requirements-cuda13.txt,requirements.txt)
# The CUDA-specific wheels of the other setting, removed before installing: both DALI wheels
# write the same nvidia/dali files, and CuPy refuses to run with two CuPy packages.
OTHER_CUDA_WHEELS := $(if $(filter 13,$(CUDA)),nvidia-dali-cuda120 cupy-cuda12x,nvidia-dali-cuda130 cupy-cuda13x)
STAMP := $(VENV)/.installed-cuda$(CUDA)
RUN := $(if $(filter 1,$(NPROC)),$(PY) -m,$(VENV)/bin/torchrun --standalone --nproc_per_node $(NPROC) -m)

.DEFAULT_GOAL := help
.PHONY: help setup test pretrain data-synth profile bench bench-fame bench-trainer sweep report visualize-masks mask-quality caam kernels linear finetune retrieve results clean benchmark

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo "  variables: CONFIG=configs/x.yaml ARGS=\"key=value ...\" NPROC=N CUDA=12|13"

$(STAMP): requirements.txt requirements-cuda13.txt requirements-common.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip uninstall --quiet --yes $(OTHER_CUDA_WHEELS) 2>/dev/null || true
	$(PY) -m pip install --quiet -r $(REQS)
	$(PY) -c "import torch, torchvision, nvidia.dali, av, skimage; torchvision.ops.nms"
	rm -f $(VENV)/.installed-cuda*
	touch $@

setup: $(STAMP)  ## create .venv and install requirements (CUDA=13 for the CUDA 13 wheels)

test: $(STAMP)  ## run the test suite (CPU; GPU tests run where a GPU exists)
	$(PY) -m pytest -q

pretrain: $(STAMP)  ## MoCo+FAME pretraining: CONFIG=... ARGS="key=value ..." NPROC=N
	$(RUN) runners.pretrain --config $(CONFIG) $(ARGS)

data-synth: $(STAMP)  ## generate the synthetic dataset of the config (default videos/synthetic)
	$(PY) -m runners.prepare synthetic --config $(CONFIG) $(ARGS)

profile: $(STAMP)  ## profile the DALI pretraining pipeline stage by stage: CONFIG=...
	$(PY) -m runners.profile --config $(CONFIG) $(ARGS)

bench-fame: $(STAMP)  ## clips/s of the FAME op (NumPy; CuPy where a GPU exists)
	$(PY) -m runners.bench_fame $(ARGS)

TRAINER_CONFIG ?= configs/ucf101_r21d_pretrain.yaml
bench-trainer: $(STAMP)  ## clips/s of the MoCo training step alone (random clips): the rate the pipeline must beat
	$(PY) -m runners.bench_trainer --config $(TRAINER_CONFIG) $(ARGS)

bench: bench-fame bench-trainer profile  ## all benchmarks

linear: $(STAMP)  ## linear probe: CONFIG=configs/ucf101_r21d_linear.yaml ARGS="pretrained=runs/<name>/backbone.pt"
	$(RUN) runners.classify --config $(CONFIG) eval.protocol=linear $(ARGS)

finetune: $(STAMP)  ## finetune: CONFIG=configs/ucf101_r21d_finetune.yaml ARGS="pretrained=..."
	$(RUN) runners.classify --config $(CONFIG) eval.protocol=finetune $(ARGS)

retrieve: $(STAMP)  ## video retrieval R@k: CONFIG=configs/ucf101_r21d_retrieval.yaml ARGS="pretrained=..."
	$(RUN) runners.retrieve --config $(CONFIG) $(ARGS)

results: $(STAMP)  ## collect runs/*/results.json into one markdown table (runs/results.md)
	$(PY) -m runners.results $(ARGS)

SWEEP ?= configs/sweeps/beta.yaml
SEEDS ?= 0
PARALLEL ?= 1
sweep: $(STAMP)  ## run an ablation grid locally: SWEEP=configs/sweeps/x.yaml CONFIG=... SEEDS=0,1,2 PARALLEL=N
	$(PY) -m runners.sweep --sweep $(SWEEP) --config $(CONFIG) --seeds $(SEEDS) --parallel $(PARALLEL) $(ARGS)

report: $(STAMP)  ## markdown table + PNG plot of a finished sweep: SWEEP=... CONFIG=... ARGS="<the sweep's overrides>"
	$(PY) -m runners.report --sweep $(SWEEP) --config $(CONFIG) $(ARGS)

BENCH_CONFIG ?= configs/benchmark.yaml
benchmark: $(STAMP)  ## background-bias benchmark: baseline vs FAME, linear probe + retrieval (SEEDS=0,1,2)
	$(PY) -m runners.benchmark --config $(BENCH_CONFIG) --seeds $(SEEDS) $(ARGS)

visualize-masks: $(STAMP)  ## Fig. 5: frames, seed region, soft mask, masks and merges of every variant
	$(PY) -m runners.visualize masks --config $(CONFIG) $(ARGS)

mask-quality: $(STAMP)  ## recall/precision of every variant's mask against the object's box (synthetic data)
	$(PY) -m runners.visualize mask-quality --config $(CONFIG) $(ARGS)

CKPT ?=
caam: $(STAMP)  ## Fig. 1: class-agnostic activation maps: CKPT="runs/a/backbone.pt runs/b/backbone.pt"
	$(PY) -m runners.visualize caam --config $(CONFIG) $(foreach c,$(CKPT),--ckpt $(c)) $(ARGS)

kernels: $(STAMP)  ## Fig. 3: temporal kernel violins of R(2+1)D checkpoints: CKPT="a.pt b.pt"
	$(PY) -m runners.visualize kernels --config $(CONFIG) $(foreach c,$(CKPT),--ckpt $(c)) model.backbone=r2plus1d_18 $(ARGS)

clean:  ## remove the virtual environment (runs/ and videos/ are kept)
	rm -rf $(VENV)
