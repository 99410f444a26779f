"""OTB engine: the original's call of OTBTF TensorflowModelServe (docs/DESIGN.md §8), the fix of its
output origin, and the same input and output handling as the built-in engine.

OTB's output starts `pad` HR pixels inside the input's corner (the first place where a whole LR window
fits) and covers 4 times the input minus the margins, rounded down to a multiple of the tile size
(`otb_output_size`); the built-in engine covers the whole input extent. OTBTF (r4.3.1, and master to
date) declares that origin off by a fraction of a pixel (`include/otbTensorflowMultisourceModelFilter.hxx`,
"Set final origin" goes to a pixel centre with half the *input* spacing, from an extent shrunk by
floor(rfield / 2) LR pixels). Measured with an exact x4 model: 1.5 HR pixels right and down when the
receptive field (ts + 2*pad)/4 is even (the defaults: 160), 0.5 HR pixel left and up when it is odd
(e.g. --ts 100). `fixed_geotransform` puts the origin where the content is.

OTB casts to integer types by truncation and knows nothing of NaN, infinities or the built-in engine's
nodata handling, so `run` gives it what the built-in engine gives the model (invalid input pixels
filled, `fill_input`) and takes float32 from it, then writes the output block by block as the built-in
engine does (`encode_output`: rounding, clamping, nodata).
"""
from __future__ import annotations

import os
import tempfile
from types import ModuleType
from typing import Any

import numpy as np
from osgeo import gdal

import constants
from errors import SR4RSError
from inference_settings import UNMARKED_INVALID, InferenceSettings
from logs import get_logger
from otb_env import load_otb
from raster import (
    Grid,
    atomic_output,
    block_windows,
    close_dataset,
    create_geotiff,
    numpy_dtype,
    numpy_type_of,
    open_raster,
    read_array,
    read_window,
    to_encoding,
    valid_mask,
    write_window,
)

logger = get_logger("otb_engine")

# OTBTF r4.3.1's origin error is 1.5 output pixels or less (measured); more means something else.
MAX_ORIGIN_ERROR = 2.0
# The float32 files OTB reads and writes, in a temporary folder next to the output: quick to write.
SCRATCH_OPTIONS = {"TILED": "YES", "BLOCKXSIZE": "256", "BLOCKYSIZE": "256", "COMPRESS": "DEFLATE",
                   "ZLEVEL": "1", "PREDICTOR": "3", "BIGTIFF": "IF_SAFER"}


def otb_output_size(width: int, height: int, ts: int, pad: int) -> tuple[int, int]:
    """HR size of OTB's output: 4 times the input minus the margins (plus 3, from OTB's extent
    arithmetic), rounded down to a multiple of the tile size.

    Args:
        width: input columns.
        height: input rows.
        ts: tile size (HR pixels).
        pad: margin (HR pixels).
    """
    return tuple((constants.SCALE * n - 2 * pad + constants.SCALE - 1) // ts * ts for n in (width, height))


def refusal(src: gdal.Dataset, ts: int, pad: int, fixed_bands: bool = True) -> str | None:
    """Why the OTB engine cannot take an input (None when it can): an image without north-up
    georeferencing (OTBTF fails on it, or drops the rotation), smaller than one LR window of
    (ts + 2*pad)/4 pixels (OTB's output would be empty), or a model whose signature leaves the band
    count open (OTBTF fails on it).

    Args:
        src: the input image.
        ts: tile size (HR pixels).
        pad: margin (HR pixels).
        fixed_bands: whether the model's signature fixes the band count.
    """
    try:
        Grid.of(src, src.GetDescription())
    except SR4RSError as err:
        return str(err)
    if min(otb_output_size(src.RasterXSize, src.RasterYSize, ts, pad)) <= 0:
        window = (ts + 2 * pad) // constants.SCALE
        return (f"the image ({src.RasterXSize} x {src.RasterYSize}) is too small for the OTB engine with "
                f"--ts {ts} --pad {pad}, which needs {window} x {window} pixels (a smaller --ts needs fewer)")
    if not fixed_bands:
        return "the model's signature leaves the band count open, which OTB cannot serve"
    return None


def output_filename(path: str, ts: int) -> str:
    """OTB's output filename: path + extended filename (float32 scratch creation options, tiled
    streaming by rows of `ts`).

    Args:
        path: the file to write.
        ts: tile size.
    """
    parts = [f"gdal:co:{key}={value}" for key, value in SCRATCH_OPTIONS.items()]
    parts += ["streaming:type=tiled", "streaming:sizemode=height", f"streaming:sizevalue={ts}"]
    return path + "?&" + "&".join(parts)


def parameters(settings: InferenceSettings, source: str, out: str) -> dict[str, Any]:
    """TensorflowModelServe parameters, as the original sr.py sets them (docs/DESIGN.md §8).

    Args:
        settings: SavedModel, tile size (= expression field), margin (output `output_<pad>`).
        source: the image OTB reads (the input, or its filled copy: see fill_input).
        out: the output filename (with its extended filename, see output_filename).
    """
    ts, pad = settings.ts, settings.pad
    rfield = (ts + 2 * pad) // constants.SCALE
    return {
        "source1.il": [source],
        "source1.rfieldx": rfield,
        "source1.rfieldy": rfield,
        "source1.placeholder": constants.LR_INPUT_NAME,
        "model.dir": settings.savedmodel,
        "model.fullyconv": True,
        "output.names": [constants.output_name(pad)],
        "output.efieldx": ts,
        "output.efieldy": ts,
        "output.spcscale": 1.0 / constants.SCALE,
        "optim.tilesizex": ts,
        "optim.tilesizey": ts,
        "optim.disabletiling": True,
        "out": out,
    }


def fixed_geotransform(out_gt: tuple[float, ...], in_gt: tuple[float, ...], pad: int) -> tuple[float, ...]:
    """The geotransform of OTB's output with the origin where its content sits: `pad` output pixels
    inside the input's corner. OTB's own origin is off by a fraction of a pixel (see the module doc);
    one more than `MAX_ORIGIN_ERROR` output pixels away is unexpected and left alone, with a warning.

    Args:
        out_gt: geotransform written by OTB.
        in_gt: geotransform of the input.
        pad: the margin (HR pixels).
    """
    x, y = in_gt[0] + pad * out_gt[1], in_gt[3] + pad * out_gt[5]
    if max(abs(x - out_gt[0]) / abs(out_gt[1]), abs(y - out_gt[3]) / abs(out_gt[5])) > MAX_ORIGIN_ERROR:
        logger.warning("OTB's output origin (%s, %s) is unexpectedly far from (%s, %s): left as OTB wrote it",
                       out_gt[0], out_gt[3], x, y)
        return tuple(out_gt)
    return (x, out_gt[1], out_gt[2], y, out_gt[4], out_gt[5])


def fill_input(src: gdal.Dataset, settings: InferenceSettings, path: str) -> str:
    """Write the input as the built-in engine gives it to the model: float32, invalid pixels (nodata,
    NaN, +-inf) replaced by the fill values; block by block. Returns `path`.

    Args:
        src: the input image.
        settings: nodata and fill values.
        path: the file to write.
    """
    dst = create_geotiff(path, src, (src.RasterXSize, src.RasterYSize), gdal.GDT_Float32, SCRATCH_OPTIONS,
                         src.GetGeoTransform())
    message = f"{settings.output}: writing failed"
    try:
        for x, y, w, h in block_windows(dst):
            write_window(dst, settings.filled(read_array(src, x, y, w, h))[0], x, y, message)
    finally:
        close_dataset(dst, message)
    return path


def encode_output(served: str, src: gdal.Dataset, settings: InferenceSettings, path: str) -> None:
    """Write OTB's float32 output as the built-in engine writes its tiles, block by block: rounded and
    clamped to the output type, nodata where the input pixel below is invalid; the origin fixed.

    Args:
        served: OTB's output.
        src: the input image.
        settings: margin, output type, nodata values, creation options.
        path: the file to write.
    """
    hr = open_raster(served)
    dst = create_geotiff(path, src, (hr.RasterXSize, hr.RasterYSize), settings.gdal_type,
                         settings.creation_options,
                         fixed_geotransform(hr.GetGeoTransform(), src.GetGeoTransform(), settings.pad),
                         settings.out_nodata)
    dtype, message, unmarked = numpy_type_of(settings.gdal_type), f"{settings.output}: writing failed", False
    try:
        for x, y, w, h in block_windows(dst):
            # output pixel (x, y) is HR pixel (x + pad, y + pad) of the input's extent (the module doc)
            rows = (np.arange(y, y + h) + settings.pad) // constants.SCALE
            cols = (np.arange(x, x + w) + settings.pad) // constants.SCALE
            valid = valid_mask(read_window(src, rows, cols), settings.nodata)
            unmarked |= settings.out_nodata is None and not valid.all()
            encoded = to_encoding(read_array(hr, x, y, w, h), valid, dtype, settings.out_nodata)
            write_window(dst, encoded, x, y, message)
    finally:
        close_dataset(dst, message)
    if unmarked:
        logger.warning(UNMARKED_INVALID)


def _set_parameters(app: Any, params: dict[str, Any]) -> None:
    """Set each parameter with the setter of its Python type.

    Args:
        app: an OTB application.
        params: parameter key -> value (list of strings, bool, int, float or string).
    """
    for key, value in params.items():
        if isinstance(value, list):
            app.SetParameterStringList(key, value)
        elif isinstance(value, bool):
            app.SetParameterInt(key, int(value))
        elif isinstance(value, int):
            app.SetParameterInt(key, value)
        elif isinstance(value, float):
            app.SetParameterFloat(key, value)
        else:
            app.SetParameterString(key, value)


def _serve(otb: ModuleType, params: dict[str, Any], quiet: bool) -> None:
    """Run TensorflowModelServe, float32 output; its output file is closed when this returns (the
    application, which holds it, is released). OTB's (multi-line) errors become one-line SR4RSErrors.

    Args:
        otb: the otbApplication module.
        params: the application's parameters (see parameters).
        quiet: without the application's log and progress.
    """
    registry = otb.Registry
    app = (registry.CreateApplicationWithoutLogger if quiet else registry.CreateApplication)(
        "TensorflowModelServe")
    try:
        _set_parameters(app, params)
        app.SetParameterOutputImagePixelType("out", otb.ImagePixelType_float)
        app.ExecuteAndWriteOutput()
    except RuntimeError as err:
        raise SR4RSError(f"OTB TensorflowModelServe failed ({' '.join(str(err).split())})") from None


def run(settings: InferenceSettings) -> None:
    """Super-resolve `settings.input` with OTB TensorflowModelServe into `settings.output` (written under
    a temporary name, renamed on success), with the built-in engine's input and output handling (see the
    module doc). Float32 scratch files (the filled input, OTB's output) live in a temporary folder next
    to the output.

    Args:
        settings: paths, tile size, margin, encoding, nodata, fill values, creation options, quiet
            (batch is the built-in engine's).
    """
    otb = load_otb()
    if otb is None:
        raise SR4RSError("the OTB engine needs otbApplication with TensorflowModelServe "
                         "(run `make otb`, or use the OTBTF Docker image), or use --engine tf")
    src = open_raster(settings.input)
    reason = refusal(src, settings.ts, settings.pad)  # sr.py checks the model too, before choosing OTB
    if reason:
        raise SR4RSError(f"{reason}: use --engine tf")
    size = otb_output_size(src.RasterXSize, src.RasterYSize, settings.ts, settings.pad)
    logger.info("OTB engine: the output covers %s x %s HR pixels (the input extent is %s x %s; "
                "--engine tf covers it all)", size[0], size[1],
                constants.SCALE * src.RasterXSize, constants.SCALE * src.RasterYSize)
    with atomic_output(settings.output) as tmp:
        folder, part = os.path.split(tmp)
        with tempfile.TemporaryDirectory(prefix=os.path.splitext(part)[0] + ".", dir=folder) as scratch:
            source = settings.input
            if settings.nodata is not None or np.issubdtype(numpy_dtype(src), np.floating):
                source = fill_input(src, settings, os.path.join(scratch, "filled.tif"))
            served = os.path.join(scratch, "served.tif")
            _serve(otb, parameters(settings, source, output_filename(served, settings.ts)), settings.quiet)
            encode_output(served, src, settings, tmp)
