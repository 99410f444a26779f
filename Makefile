# SR4RS: two commands on a fresh machine, `make demo` and `make test`. Both install what they need.
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

.PHONY: install test lint otb demo clean
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

test: install
	@if [ -d "$(OTBTF_SRC)" ] && [ -d "$(OTB_SWIG_SRC)" ]; then $(MAKE) --no-print-directory otb; \
	  else echo "OTBTF sources not found ($(OTBTF_SRC)): OTB tests will be skipped (see README, 'OTB engine')"; fi
	$(PY) -m pytest $(PYTEST_ARGS)

# OTBTF's PatchesExtraction + TensorflowModelServe and the otbApplication binding, built into $(OTB_DIR)
# against $(VENV)'s TensorFlow (scripts/build_otbtf.sh; does nothing when already up to date).
otb: install
	@OTBTF_SRC="$(OTBTF_SRC)" OTB_SWIG_SRC="$(OTB_SWIG_SRC)" bash scripts/build_otbtf.sh "$(OTB_DIR)" "$(PY)"

demo: install
	$(PY) -m demo --out $(DEMO_OUT)

clean:
	rm -rf $(VENV) $(OTB_DIR) demo_out .pytest_cache
