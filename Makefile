# moo-opt: `make demo` runs the main job, `make test` runs the suite; both install first if needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
PHOTOS := data/photos/photos.json
PIP := $(PY) -m pip install --disable-pip-version-check -c constraints.txt

.PHONY: install demo test test-thorough bench reproduce docs photos pretrained clean

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

clean:
	rm -rf $(VENV) docs/_build .pytest_cache .hypothesis
