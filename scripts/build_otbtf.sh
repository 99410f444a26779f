#!/usr/bin/env bash
# Build OTBTF's PatchesExtraction and TensorflowModelServe applications and OTB's `otbApplication`
# Python binding into OUT_DIR, on Debian 12 / Ubuntu against the distribution's OTB 8.1.1 packages
# and the TensorFlow C++ libraries inside the `tensorflow-cpu` wheel of PYTHON.
# The build recipe of OTBTF's applications on Debian, with the sources given by variables, and a stamp.
#
# usage: OTBTF_SRC=path/to/otbtf OTB_SWIG_SRC=path/to/otb/Modules/Wrappers/SWIG/src \
#          scripts/build_otbtf.sh OUT_DIR PYTHON
#   OTBTF_SRC     a clone of remicres/otbtf at r4.3.1 (only CMakeLists.txt, otb-module.cmake,
#                 include/ and app/ are used)
#   OTB_SWIG_SRC  OTB 8.1.1's Modules/Wrappers/SWIG/src folder
#   PYTHON        an interpreter with tensorflow installed (e.g. .venv/bin/python)
#   JOBS          parallel compile jobs (default: nproc); FORCE=1 rebuilds even when up to date
# Result: OUT_DIR/apps (otbapp_*.so), OUT_DIR/bin (otbcli_PatchesExtraction, otbcli_TensorflowModelServe),
#         OUT_DIR/python (otbApplication.py, _otbApplication.so). To use them by hand:
#   export OTB_APPLICATION_PATH=OUT_DIR/apps:/usr/lib/x86_64-linux-gnu/otb/applications
#   export PATH=OUT_DIR/bin:$PATH PYTHONPATH=OUT_DIR/python
# Idempotent: OUT_DIR/.stamp records what the build depends on (sources, this script, TensorFlow,
# OTB packages, Python); when nothing changed, the script exits at once.
set -euo pipefail
if [ $# -ne 2 ]; then echo "usage: OTBTF_SRC=... OTB_SWIG_SRC=... $0 OUT_DIR PYTHON" >&2; exit 2; fi
SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
PY=$2
JOBS=${JOBS:-$(nproc)}
: "${OTBTF_SRC:?set OTBTF_SRC to a clone of remicres/otbtf at r4.3.1}"
: "${OTB_SWIG_SRC:?set OTB_SWIG_SRC to OTB 8.1.1 Modules/Wrappers/SWIG/src}"
for f in "$OTBTF_SRC/CMakeLists.txt" "$OTBTF_SRC/app/otbPatchesExtraction.cxx" "$OTB_SWIG_SRC/otbApplication.i"; do
  if [ ! -f "$f" ]; then echo "build_otbtf: $f not found (check OTBTF_SRC / OTB_SWIG_SRC)" >&2; exit 2; fi
done
OTBTF_SRC=$(cd "$OTBTF_SRC" && pwd)
OTB_SWIG_SRC=$(cd "$OTB_SWIG_SRC" && pwd)
SUDO=""; if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

# 1) system packages. libotb-dev alone is not enough: OTB's exported CMake targets reference
# /usr/bin/otbQgisDescriptor (otb-qgis) and link against the -dev symlinks of tinyxml and fftw3.
PKGS="libotb-dev otb-bin libotb-apps otb-qgis libtinyxml-dev libfftw3-dev cmake make g++ swig"
if ! dpkg -s $PKGS >/dev/null 2>&1; then
  echo "build_otbtf: installing $PKGS"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $PKGS
fi

# 2) TensorFlow of PYTHON (found without importing it: fast).
TF_DIR=$("$PY" -c 'import importlib.util as u; s = u.find_spec("tensorflow"); print(s.submodule_search_locations[0])')
for lib in libtensorflow_cc.so.2 libtensorflow_framework.so.2; do
  if [ ! -f "$TF_DIR/$lib" ]; then echo "build_otbtf: $TF_DIR/$lib not found (tensorflow-cpu wheel needed)" >&2; exit 2; fi
done

# 3) stamp: everything the build depends on. Same key as the last successful build: nothing to do.
KEY=$( {
  echo "script $(sha256sum < "$SCRIPT")"
  (cd "$OTBTF_SRC" && find CMakeLists.txt otb-module.cmake include app -type f -print0 | sort -z | xargs -0 sha256sum)
  (cd "$OTB_SWIG_SRC" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
  echo "tf $TF_DIR"; stat -c '%n %s %Y' "$TF_DIR"/libtensorflow_cc.so.2 "$TF_DIR"/libtensorflow_framework.so.2
  echo "python $("$PY" -c 'import sys, numpy; print(sys.version, sys.executable, numpy.__version__)')"
  dpkg-query -W -f '${Package} ${Version}\n' libotb-dev swig
} | sha256sum | cut -d' ' -f1)
STAMP="$OUT/.stamp"
if [ "${FORCE:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ] \
   && [ -f "$OUT/python/_otbApplication.so" ] && [ -f "$OUT/apps/otbapp_PatchesExtraction.so" ]; then
  echo "OTBTF is up to date in $OUT (FORCE=1 to rebuild)"
  exit 0
fi
rm -f "$STAMP"
echo "build_otbtf: building OTBTF into $OUT against $TF_DIR (logs: $OUT/configure.log, $OUT/make.log)"

# 4) The wheel lacks tensorflow/cc/saved_model/{tag,signature}_constants.h (OTBTF's Dockerfile copies
# them from the TensorFlow sources): recreate the constants OTBTF uses.
INC="$OUT/tf_extra_include/tensorflow/cc/saved_model"; mkdir -p "$INC"
cat > "$INC/tag_constants.h" <<'H'
#pragma once
namespace tensorflow {
constexpr char kSavedModelTagGpu[] = "gpu";
constexpr char kSavedModelTagTpu[] = "tpu";
constexpr char kSavedModelTagServe[] = "serve";
constexpr char kSavedModelTagTrain[] = "train";
}
H
cat > "$INC/signature_constants.h" <<'H'
#pragma once
namespace tensorflow {
static constexpr char kDefaultServingSignatureDefKey[] = "serving_default";
static constexpr char kPredictInputs[] = "inputs";
static constexpr char kPredictMethodName[] = "tensorflow/serving/predict";
static constexpr char kPredictOutputs[] = "outputs";
}
H

# 5) OTBTF sources, with two patches: (A) a standalone preamble, since upstream expects to sit inside an
# OTB source tree; (B) a default template argument repeated on a definition, an error with GCC 12.
SRC="$OUT/src"; if [ -d "$SRC" ]; then chmod -R u+w "$SRC"; rm -rf "$SRC"; fi; mkdir -p "$SRC"
cp -r "$OTBTF_SRC/CMakeLists.txt" "$OTBTF_SRC/otb-module.cmake" "$OTBTF_SRC/include" "$OTBTF_SRC/app" "$SRC/"
chmod -R u+w "$SRC"   # the sources may be read-only
"$PY" - "$SRC/CMakeLists.txt" <<'P'
import sys
p = sys.argv[1]; s = open(p).read()
block = """cmake_minimum_required(VERSION 3.10)
project(OTBTensorflow)
if(NOT OTB_SOURCE_DIR)
  find_package(Boost REQUIRED COMPONENTS filesystem serialization)
  find_package(OTB REQUIRED COMPONENTS OTBCommon OTBApplicationEngine OTBStreaming OTBExtendedFilename
               OTBImageIO OTBSupervised OTBIOXML OTBConversion OTBStatistics)
  list(APPEND CMAKE_MODULE_PATH ${OTB_CMAKE_DIR})
  include(${OTB_USE_FILE})
  include(OTBStandaloneModuleMacros)
  set(CMAKE_CXX_STANDARD 17)
  if(NOT COMMAND otb_module_warnings_disable)
    macro(otb_module_warnings_disable)
    endmacro()
  endif()
endif()
"""
if not s.startswith("project(OTBTensorflow)\n"):
    sys.exit(f"build_otbtf: {p} does not start with project(OTBTensorflow): not OTBTF r4.3.1?")
open(p, "w").write(s.replace("project(OTBTensorflow)\n", block, 1))
P
sed -i 's/^template <class TImage, class TValueType = typename TImage::InternalPixelType>$/template <class TImage, class TValueType>/' \
  "$SRC/include/otbTensorflowCopyUtils.cxx"

# 6) configure and build the two applications. --no-as-needed: otherwise the linker drops
# libtensorflow_cc.so.2 and the app fails at run time with "No session factory registered".
B="$OUT/build"; rm -rf "$B"
cmake -S "$SRC" -B "$B" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
  -DOTB_DIR=/usr/lib/x86_64-linux-gnu/cmake/OTB-8.1 -DOTB_USE_TENSORFLOW=ON \
  -Dtensorflow_include_dir="$TF_DIR/include" \
  -DTENSORFLOW_CC_LIB="$TF_DIR/libtensorflow_cc.so.2" -DTENSORFLOW_FRAMEWORK_LIB="$TF_DIR/libtensorflow_framework.so.2" \
  "-DCMAKE_CXX_FLAGS=-I$OUT/tf_extra_include -DEIGEN_MAX_ALIGN_BYTES=64 -D_GLIBCXX_USE_CXX11_ABI=1 -w" \
  "-DCMAKE_MODULE_LINKER_FLAGS=-Wl,--no-as-needed" >"$OUT/configure.log" 2>&1 \
  || { echo "build_otbtf: cmake failed, see $OUT/configure.log" >&2; tail -20 "$OUT/configure.log" >&2; exit 1; }
make -C "$B" -j"$JOBS" otbapp_TensorflowModelServe otbapp_PatchesExtraction >"$OUT/make.log" 2>&1 \
  || { echo "build_otbtf: make failed, see $OUT/make.log" >&2; tail -20 "$OUT/make.log" >&2; exit 1; }
rm -rf "$OUT/apps" && mkdir -p "$OUT/apps" "$OUT/bin"
cp "$B"/lib/otb/applications/otbapp_*.so "$OUT/apps/"
for app in TensorflowModelServe PatchesExtraction; do   # Debian ships one otbcli_<App> launcher per stock app
  cat > "$OUT/bin/otbcli_$app" <<L
#!/bin/sh
OTB_APPLICATION_PATH="$OUT/apps:/usr/lib/x86_64-linux-gnu/otb/applications\${OTB_APPLICATION_PATH:+:\$OTB_APPLICATION_PATH}"
export OTB_APPLICATION_PATH
exec /usr/bin/otbcli $app "\$@"
L
  chmod +x "$OUT/bin/otbcli_$app"
done

# 7) the otbApplication Python binding (Debian 12 ships none). SWIG 4.1 needs -flatstaticmethod, or
# `import otbApplication` fails on PythonLogOutput_New.
SW="$OTB_SWIG_SRC"; G="$OUT/swig"; rm -rf "$G" "$OUT/python"; mkdir -p "$G" "$OUT/python"
swig -python -c++ -flatstaticmethod -DOTB_SWIGNUMPY=1 -I"$SW" -I"$SW/python" -I/usr/include/OTB-8.1 \
  -I/usr/include/ITK-4.13 -outdir "$OUT/python" -o "$G/otbApplicationPYTHON_wrap.cxx" "$SW/otbApplication.i"
PYINC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
NPINC=$("$PY" -c 'import numpy; print(numpy.get_include())')
g++ -shared -fPIC -O2 -w -std=c++14 -DOTB_SWIGNUMPY=1 -I"$SW" -I"$SW/python" -I"$G" -I/usr/include/OTB-8.1 \
  -isystem /usr/include/ITK-4.13 -I/usr/include/gdal -I"$PYINC" -I"$NPINC" "$G/otbApplicationPYTHON_wrap.cxx" \
  "$SW/python/itkPyCommand.cxx" "$SW/python/otbPythonLogOutput.cxx" "$SW/python/otbProgressReporterManager.cxx" \
  -o "$OUT/python/_otbApplication.so" \
  -lOTBApplicationEngine-8.1 -lOTBCommon-8.1 -lOTBImageBase-8.1 -lOTBMetadata-8.1 -lITKCommon-4.13
rm -rf "$G" "$B"   # keep OUT small: only apps/, bin/, python/, src/ and the logs remain
echo "$KEY" > "$STAMP"
echo "built: $OUT/apps (TensorflowModelServe, PatchesExtraction), $OUT/bin, $OUT/python (otbApplication)"
