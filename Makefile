# moo-opt: `make demo` runs the main job, `make test` runs the suite; both install first if needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
PHOTOS := data/photos/photos.json
PIP := $(PY) -m pip install --disable-pip-version-check -c constraints.txt

.PHONY: install demo test test-thorough bench reproduce docs photos pretrained clean \
	gpu-wheels gpu-rehearsal

install: $(STAMP)

# Re-install only when the project's dependency files change: a second `make install` is quick.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip setuptools wheel
	$(PIP) -e '.[dev]'
	touch $(STAMP)

# The demo fine-tunes the shipped models on the photographs (fetched once, see `photos`).
demo: install $(PHOTOS)
	$(PY) examples/lic_demo.py

test: install
	$(PY) -m ruff check moo_opt plugins tests examples benchmarks docs
	$(PY) -m ruff format --check moo_opt plugins tests examples benchmarks docs
	$(PY) -m pytest

test-thorough: install
	MOO_OPT_HYPOTHESIS_PROFILE=thorough $(PY) -m pytest tests/solvers

bench: install
	$(PY) benchmarks/solvers.py
	$(PY) benchmarks/step_overhead.py --forward-modes

# The paper's comparison on the photographs, two seeds (hours on 2 cores; resumable: run it again to continue).
reproduce: install $(PHOTOS)
	$(PY) benchmarks/reproduce.py --out repro-out

photos: $(PHOTOS)

# The photographs' record is written last, so its presence means the folder is complete.
$(PHOTOS): | $(STAMP)
	$(PY) -m plugins.lic.photos data/photos

# Re-trains the shipped models (hours on 2 cores; resumable: run it again to continue).
pretrained: photos
	$(PY) -m plugins.lic.pretrained.build --photos data/photos --runs runs/pretrained

docs: install
	$(PY) -m sphinx -W -b html docs docs/_build/html

# The GPU check (benchmarks/gpu_check.sh) runs on a machine without a package registry: these are
# the wheels it installs there when an import is missing (--no-deps: name every one). The default
# list is what such a CUDA image lacks besides torch/torchvision (they come with the machine);
# scs is left out (43 MB; cvxpy imports without it and the tests use Clarabel). Both Pythons by
# default: pip picks the file that fits the machine's. Keep .gpu-wheels under the 64 MiB the
# working tree may carry (about 6 MB as listed).
GPU_WHEELS ?= .gpu-wheels
GPU_PYTHONS ?= 3.12 3.11
GPU_WHEEL_PACKAGES ?= compressai pytorch-msssim cvxpy clarabel osqp bjontegaard torchjd
GPU_PLATFORMS := --platform manylinux2014_x86_64 \
	$(foreach n,17 24 27 28 31 34 35 39,--platform manylinux_2_$(n)_x86_64)
GPU_PIP := $(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m pip

gpu-wheels:
	for v in $(GPU_PYTHONS); do \
	  $(GPU_PIP) download --disable-pip-version-check -q --no-deps --only-binary=:all: \
	    -c constraints.txt --implementation cp --python-version $$v $(GPU_PLATFORMS) \
	    -d $(GPU_WHEELS) $(GPU_WHEEL_PACKAGES) || exit 1; \
	done
	du -sh $(GPU_WHEELS)

# The GPU check's rehearsal: every stage on the CPU at tiny sizes (gpu-check-out/summary.md).
gpu-rehearsal: install
	PYTHON=$(PY) bash benchmarks/gpu_check.sh --dry-run

clean:
	rm -rf $(VENV) docs/_build .pytest_cache .hypothesis
