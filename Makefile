# Two commands do everything: `make book` and `make test` (each creates .venv first).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= _build/demo-run
export KERAS_BACKEND ?= jax
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0

.PHONY: book test test-envs venv lock clean demo-run browser-test chromium experiment experiment-paper compat

venv: $(STAMP)

# uv installs the pinned environments (`make venv`: 28 s against pip's 67 s, cold caches) where pip
# can install uv; pip installs them where uv is missing or fails. uv reads no pip.conf (it takes
# PyPI, or $UV_DEFAULT_INDEX); `make UV_VERSION= ...` installs with pip only.
UV_VERSION ?= 0.13.9
UV := $(BIN)/uv
UV_STAMP := $(VENV)/.uv-$(UV_VERSION)
$(UV_STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -z "$(UV_VERSION)" || $(BIN)/python -m pip install --quiet uv==$(UV_VERSION) \
	  || echo "uv $(UV_VERSION) not installable here: pip installs the environments" >&2
	@touch $@

# $(call install,python,requirements file): uv where it works, else pip (bytecode compiled either way).
define install
if test -n "$(UV_VERSION)" && test -x $(UV) && $(UV) pip install --quiet --compile-bytecode --python $(1) -r $(2); \
then :; else test -z "$(UV_VERSION)" || echo "uv did not install $(2): pip does" >&2; \
  $(1) -m pip install --quiet -r $(2) \
  && { $(1) -m compileall -q -j0 $$($(1) -c 'import sysconfig; print(sysconfig.get_path("purelib"))') >/dev/null || :; }; fi
endef

$(STAMP): requirements.lock pyproject.toml | $(UV_STAMP)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(call install,$(BIN)/python,requirements.lock)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

# The pipeline on the demo survey (quick profile); chapters read its outputs.
demo-run: $(STAMP)
	$(BIN)/carmenes-dtl run --demo --profile quick --seed 42 --out $(RUN_DIR)

# Does fine-tuning help, at the published settings and at the quick profile's old ones? The
# factorial (issue 25): the published arm at 4 gap settings x 10 seeds first, then every arm
# (fine-tuning published / quick_v1 x CNN inputs raw / standardised) at none, shared and paper
# (= both families at the book's default level) x 8 seeds (quick profile), published with its
# provenance header into data/results/ (chapter 4 reads it); resumes finished cells and stages.
# About 2 h on 2 cores.
EXPERIMENT_DIR ?= _build/experiment
EXPERIMENT_JOBS ?= 2
EXPERIMENT_OPTIONS = --out $(EXPERIMENT_DIR) --profile quick --jobs $(EXPERIMENT_JOBS) --quiet
experiment: $(STAMP)
	$(BIN)/carmenes-dtl experiment $(EXPERIMENT_OPTIONS) --settings none,shared,paper,strong --arms published-raw \
	  --seeds 1,2,3,4,5,6,7,8,9,10
	$(BIN)/carmenes-dtl experiment $(EXPERIMENT_OPTIONS) --settings none,shared,paper --factorial \
	  --seeds 1,2,3,4,5,6,7,8 --results data/results/factorial_experiment.csv

# The published method at the published schedule and sizes per node: the paper profile on 40 seeded
# nodes (520 synthetic spectra) with the published sample of 286 demo stars, at none and shared x 3
# seeds, into data/results/paper_nodes_experiment*.csv. About 2.5 h on 2 cores (3 cells at a time).
experiment-paper: $(STAMP)
	$(BIN)/carmenes-dtl experiment --out _build/paper-nodes --profile paper --nodes 40 --set n_stars=286 \
	  --settings none,shared --seeds 1,2,3 --jobs 3 --quiet --results data/results/paper_nodes_experiment.csv

book: demo-run
	rm -rf _build/html _build/jupyter_execute
	CARMENES_DTL_RUN=$(abspath $(RUN_DIR)) $(BIN)/jupyter-book build . -W --keep-going
	@echo "Book: $(abspath _build/html/index.html)"

# The lowest versions pyproject.toml allows (requirements-lowest.txt) in Python 3.12, Colab's:
# the tiny pipeline runs there, and each environment opens the other's model bundle. `make test`
# builds this environment too where python3.12 exists (tests/integration/test_lowest.py).
LOWEST_PYTHON ?= $(shell python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null || \
  PYENV_VERSION=$$(pyenv versions --bare 2>/dev/null | grep '^3\.12' | tail -1) \
  python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null)
LOWEST := .venv-lowest
LOWEST_STAMP := $(LOWEST)/.installed
$(LOWEST_STAMP): requirements-lowest.txt | $(UV_STAMP)
	@test -x $(LOWEST)/bin/python || $(LOWEST_PYTHON) -m venv $(LOWEST)
	$(call install,$(LOWEST)/bin/python,requirements-lowest.txt)
	@touch $(LOWEST_STAMP)
ifneq ($(LOWEST_PYTHON),)
LOWEST_ENV := $(LOWEST_STAMP)
export CARMENES_DTL_LOWEST_PYTHON := $(abspath $(LOWEST))/bin/python
endif

compat: $(STAMP) $(LOWEST_STAMP)
	rm -rf _build/wheel && $(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation -w _build/wheel .
	$(LOWEST)/bin/python -m pip install --quiet --no-deps --force-reinstall _build/wheel/*.whl
	rm -rf _build/compat && $(BIN)/python scripts/compat.py $(LOWEST)/bin/python _build/compat

# The test environments, built side by side (on 2 cores, cold caches: 44 s).
test-envs:
	@$(MAKE) --no-print-directory $(if $(filter -j%,$(MAKEFLAGS)),,-j3) --output-sync=target $(STAMP) $(LOWEST_ENV) chromium

# Lint (ruff: package, tests, scripts, chapters), then the whole suite; the browser test opens
# every page of a book built on a tiny run.
test: test-envs
	$(BIN)/ruff check carmenes_dtl tests scripts benchmarks book
	$(BIN)/python -m pytest -q -n auto --dist loadfile

# The browser test on the site `make book` built (screenshots in _build/screenshots/).
browser-test: $(STAMP) chromium
	CARMENES_DTL_SITE=$(abspath _build/html) $(BIN)/python -m pytest -q tests/integration/test_browser.py

chromium:
	@bash scripts/install_chromium.sh

# Regenerate the lock from the current venv and mirror it into environment.yml.
lock: $(STAMP)
	( echo '# Pinned environment for make/Binder/CI; regenerate with `make lock`.'; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v -e '^carmenes-dtl' -e '^uv==' ) > requirements.lock
	$(BIN)/python scripts/sync_environment.py

clean:
	rm -rf _build
