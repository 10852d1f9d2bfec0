# Two commands set everything up on a fresh machine (see README.md):
#   make demo   - create .venv, install, run the offline demo (hypothesaes demo)
#   make test   - create .venv, install, run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is installed first and pinned by CONSTRAINTS so that nothing can swap in
# the multi-GB CUDA build on a CPU machine. GPU users: see docs/install.md.
TORCH_SPEC ?= torch==2.13.0
CONSTRAINTS ?= constraints.txt
EXTRAS ?= local,dev
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: setup demo test lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet $(TORCH_SPEC)
	$(PIP) install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[$(EXTRAS)]"
	$(PY) -c "import sys, shutil, torch; cuda = torch.version.cuda; \
	sys.exit(f'torch {torch.__version__} is a CUDA build but this machine has no NVIDIA GPU; reinstall the CPU build (docs/install.md).') \
	if cuda and not shutil.which('nvidia-smi') else print(f'torch {torch.__version__} (cuda={cuda})')"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/hypothesaes demo $(DEMO_ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check sklearn_hypothesaes tests benchmarks

bench: setup
	$(PIP) install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[$(EXTRAS),bench]"
	$(PY) -m benchmarks --list

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
