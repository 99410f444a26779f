# SR4RS on top of the public OTBTF GPU image (OTB + OTBTF's PatchesExtraction and TensorflowModelServe,
# TensorFlow, GDAL), so that `sr.py --engine auto` serves models with OTB's TensorflowModelServe.
#
# What the base image already has (remicres/otbtf, the Dockerfile of the r4.3.x releases: TF v2.14.0,
# OTB release-9.0, Ubuntu 22.04 "Jammy" whose python3 is 3.10; doc/docker_use.md lists the
# mdl4eo/otbtf:<version>-gpu images, Jammy, TF r2.12 from 4.0.0 to 4.2.2):
# - TensorFlow, built from source and pip-installed under /opt/otbtf, checked by `import tensorflow`;
# - GDAL with its Python bindings (OTB SuperBuild, USE_SYSTEM_GDAL=OFF), checked by `from osgeo import gdal`,
#   with numpy support (the image's otbtf/utils.py reads rasters with ReadAsArray);
# - numpy and tqdm: `pip install ... tqdm ... numpy ...` in its base stage; `python` -> python3;
# - OTB's otbApplication binding and the OTBTF applications (PATH, PYTHONPATH, OTB_APPLICATION_PATH set);
# - default user otbuser (UID 1000), default workdir /home/otbuser.
# So only Dask is installed here: requirements.txt's tensorflow-cpu/tensorboard/pytest/ruff are for plain
# machines (TensorBoard comes with the image's TensorFlow). The RUN below fails the build if one is missing.
# The project's tests (the OTB ones aside) pass with TensorFlow 2.14.1 and numpy 1.26; another OTBTF GPU
# tag >= 4.0 (TensorFlow >= 2.12) can be tried: docker build --build-arg OTBTF_TAG=4.2.2-gpu -t sr4rs .
ARG OTBTF_TAG=4.3.1-gpu
FROM mdl4eo/otbtf:${OTBTF_TAG}

# The project (see .dockerignore: no tests, bench, .venv, .otb, demo_out), readable by any user.
WORKDIR /opt/sr4rs
COPY *.py requirements.txt README.md Makefile ./
COPY demo/ demo/
COPY scripts/ scripts/
# Dask (sr.py --workers / --scheduler) is the one dependency the OTBTF image lacks: installed for every user,
# the versions of what the image has frozen (pip fails rather than change them).
USER root
RUN python -m pip freeze > /tmp/image.txt && \
    python -m pip install --no-cache-dir -c /tmp/image.txt "dask[distributed]==2026.8.0" && rm /tmp/image.txt
USER otbuser
RUN python -c "import tqdm, numpy, tensorflow, otbApplication, dask.distributed; \
from osgeo import gdal, gdal_array; import train, sr, extract_patches, evaluate, region, demo.run, demo.scene"

# Build, then run the tools on data in the current folder, mounted at /data (the image runs as otbuser,
# UID 1000: if yours differs, add -u "$(id -u):$(id -g)" so that the results are yours and writable):
#   docker build -t sr4rs .
#   docker run --gpus all --rm -v "$PWD":/data sr4rs python extract_patches.py \
#     --lr /data/lr_10m.tif --hr /data/hr_2.5m.tif --lr_patchsize 32 --step 16 \
#     --out_lr /data/lr_patches.tif --out_hr /data/hr_patches.tif
#   docker run --gpus all --rm -v "$PWD":/data sr4rs python train.py \
#     --lr_patches /data/lr_patches.tif --hr_patches /data/hr_patches.tif --save_ckpt /data/ckpts/ \
#     --logdir /data/logs/ --savedmodel /data/savedmodel
#   docker run --gpus all --rm -v "$PWD":/data sr4rs python sr.py \
#     --input /data/lr_10m.tif --savedmodel /data/savedmodel --output /data/sr_2.5m.tif
#   docker run --gpus all --rm -v "$PWD":/data sr4rs python evaluate.py \
#     --sr /data/sr_2.5m.tif --ref /data/hr_2.5m.tif --lr /data/lr_10m.tif --out /data/metrics.json
#   docker run --gpus all --rm -v "$PWD":/data sr4rs python -m demo --out /data/demo_out
# evaluate.py --png and the demo draw PNG quicklooks with Pillow, which the OTBTF image may not have:
# then `pip install pillow` in the container first (nothing else needs it).
# OTBTF's applications are there too:
#   docker run --rm sr4rs otbcli_PatchesExtraction -help
