# SR4RS: two commands on a fresh machine, `make demo` and `make test`. Both install what they need.
# Also: `make test-fast` (the tests not marked slow), `make test-compat` (TensorFlow 2.14, the OTBTF image's).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PKGS := libgdal-dev gdal-bin
SHARED ?= ../shared
OTBTF_SRC ?= $(SHARED)/otbtf/otbtf-r4.3.1
OTB_SWIG_SRC ?= $(SHARED)/otbtf/otb-8.1.1-swig
OTB_DIR ?= .otb
PYTEST_ARGS ?=
# The OTBTF 4.3.1 image's TensorFlow, in a venv of its own (the other pins are requirements.txt's).
COMPAT_VENV ?= .venv-tf214
COMPAT_PY := $(COMPAT_VENV)/bin/python
COMPAT_STAMP := $(COMPAT_VENV)/.installed
COMPAT_TF := tensorflow-cpu==2.14.1 tensorboard==2.14.1

.PHONY: install test test-fast test-compat lint otb otb-if-found demo clean
DEMO_OUT ?= demo_out

install: $(STAMP)

$(STAMP): requirements.txt
	@dpkg -s $(APT_PKGS) >/dev/null 2>&1 || { $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $(APT_PKGS); }
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "numpy<2"
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-build-isolation "gdal==$$(gdal-config --version)"
	$(PY) -c "from osgeo import gdal, gdal_array; import tensorflow" 2>/dev/null
	@touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check .

test: otb-if-found
	$(PY) -m pytest $(PYTEST_ARGS)

# The edit-run loop: everything but the tests marked slow (pyproject.toml's markers).
test-fast: otb-if-found
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# The fast tests and a tiny extract -> train -> sr -> evaluate run of the installed wheel (marked compat),
# on TensorFlow 2.14. .otb/ is built against $(VENV)'s TensorFlow and cannot be loaded next to another
# one: SR4RS_OTB_DIR points elsewhere, so the OTB tests are skipped and sr.py uses the built-in engine.
test-compat: $(COMPAT_STAMP)
	SR4RS_OTB_DIR=$(COMPAT_VENV)/no-otb $(COMPAT_PY) -m pytest -m "not slow or compat" $(PYTEST_ARGS)

$(COMPAT_STAMP): requirements.txt | $(STAMP)
	@test -x $(COMPAT_PY) || python3 -m venv $(COMPAT_VENV)
	$(COMPAT_PY) -m pip install -q --upgrade pip
	grep -v -e '^tensorflow-cpu==' -e '^tensorboard==' -e '^ruff==' requirements.txt > $(COMPAT_VENV)/requirements.txt
	$(COMPAT_PY) -m pip install -q -r $(COMPAT_VENV)/requirements.txt $(COMPAT_TF)
	$(COMPAT_PY) -m pip install -q --no-build-isolation "gdal==$$(gdal-config --version)"
	$(COMPAT_PY) -c "from osgeo import gdal, gdal_array; import tensorflow" 2>/dev/null
	@touch $(COMPAT_STAMP)

# The OTB tests run when OTBTF's sources are there (`make otb`, once), and are skipped otherwise.
otb-if-found: install
	@if [ -d "$(OTBTF_SRC)" ] && [ -d "$(OTB_SWIG_SRC)" ]; then $(MAKE) --no-print-directory otb; \
	  else echo "OTBTF sources not found ($(OTBTF_SRC)): OTB tests will be skipped (see README, 'OTB engine')"; fi

# OTBTF's PatchesExtraction + TensorflowModelServe and the otbApplication binding, built into $(OTB_DIR)
# against $(VENV)'s TensorFlow (scripts/build_otbtf.sh; does nothing when already up to date).
otb: install
	@OTBTF_SRC="$(OTBTF_SRC)" OTB_SWIG_SRC="$(OTB_SWIG_SRC)" bash scripts/build_otbtf.sh "$(OTB_DIR)" "$(PY)"

demo: install
	$(PY) -m demo --out $(DEMO_OUT)

clean:
	rm -rf $(VENV) $(COMPAT_VENV) $(OTB_DIR) demo_out .pytest_cache
