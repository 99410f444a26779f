"""OTB engine: the original's call of OTBTF TensorflowModelServe (docs/DESIGN.md §8), and the fix of its
output origin.

OTB's output starts `pad` HR pixels inside the input's corner (the first place where a whole LR window
fits) and covers 4 times the input minus the margins, rounded down to a multiple of the tile size
(`otb_output_size`); the built-in engine covers the whole input extent. OTBTF (r4.3.1, and master to
date) declares that origin off by a fraction of a pixel (`include/otbTensorflowMultisourceModelFilter.hxx`,
"Set final origin" goes to a pixel centre with half the *input* spacing, from an extent shrunk by
floor(rfield / 2) LR pixels). Measured with an exact x4 model: 1.5 HR pixels right and down when the
receptive field (ts + 2*pad)/4 is even (the defaults: 160), 0.5 HR pixel left and up when it is odd
(e.g. --ts 100). `fixed_geotransform` puts the origin where the content is.
"""
from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from osgeo import gdal

import constants
from errors import SR4RSError
from inference_settings import InferenceSettings
from logs import get_logger
from otb_env import load_otb
from raster import atomic_output, close_dataset, copy_band_metadata, gdal_errors, open_raster

logger = get_logger("otb_engine")

# GDAL data type -> suffix of OTB's ImagePixelType_* constants.
OTB_PIXEL_TYPES = {gdal.GDT_Byte: "uint8", gdal.GDT_Int16: "int16", gdal.GDT_UInt16: "uint16",
                   gdal.GDT_Int32: "int32", gdal.GDT_UInt32: "uint32", gdal.GDT_Float32: "float",
                   gdal.GDT_Float64: "double"}
# OTBTF r4.3.1's origin error is 1.5 output pixels or less (measured); more means something else.
MAX_ORIGIN_ERROR = 2.0


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


def output_filename(path: str, settings: InferenceSettings) -> str:
    """OTB output filename: path + extended filename (creation options, the user's other options, and
    tiled streaming by rows of `ts`).

    Args:
        path: the file to write.
        settings: creation options, extended filename options, tile size.
    """
    parts = [f"gdal:co:{key}={value}" for key, value in settings.creation_options.items()]
    parts += [*settings.extended, "streaming:type=tiled", "streaming:sizemode=height",
              f"streaming:sizevalue={settings.ts}"]
    return path + "?&" + "&".join(parts)


def parameters(settings: InferenceSettings, out: str) -> dict[str, Any]:
    """TensorflowModelServe parameters, as the original sr.py sets them (docs/DESIGN.md §8).

    Args:
        settings: input, SavedModel, tile size (= expression field), margin (output `output_<pad>`),
            input nodata value (OTB writes the background value where a whole receptive field is nodata).
        out: the output filename (with its extended filename, see output_filename).
    """
    ts, pad, nodata = settings.ts, settings.pad, settings.nodata
    rfield = (ts + 2 * pad) // constants.SCALE
    params: dict[str, Any] = {
        "source1.il": [settings.input],
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
    if nodata is not None and not math.isnan(nodata):
        params["source1.nodata"] = float(nodata)
        params["output.bv"] = float(nodata)
    return params


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


def _serve(otb: ModuleType, params: dict[str, Any], gdal_type: int, quiet: bool) -> None:
    """Run TensorflowModelServe; its output file is closed when this returns (the application, which
    holds it, is released).

    Args:
        otb: the otbApplication module.
        params: the application's parameters (see parameters).
        gdal_type: output GDAL data type.
        quiet: without the application's log and progress.
    """
    registry = otb.Registry
    app = (registry.CreateApplicationWithoutLogger if quiet else registry.CreateApplication)(
        "TensorflowModelServe")
    pixel_type = getattr(otb, f"ImagePixelType_{OTB_PIXEL_TYPES[gdal_type]}")
    with gdal_errors("OTB TensorflowModelServe failed"):
        _set_parameters(app, params)
        app.SetParameterOutputImagePixelType("out", pixel_type)
        app.ExecuteAndWriteOutput()


def run(settings: InferenceSettings) -> None:
    """Super-resolve `settings.input` with OTB TensorflowModelServe into `settings.output` (written under
    a temporary name, renamed on success), then fix its origin.

    Args:
        settings: paths, tile size, margin, encoding, nodata, creation options, extended filename
            options, quiet (fill values and batch are the built-in engine's).
    """
    otb = load_otb()
    if otb is None:
        raise SR4RSError("the OTB engine needs otbApplication with TensorflowModelServe "
                         "(run `make otb`, or use the OTBTF Docker image), or use --engine tf")
    src = open_raster(settings.input)
    ts, pad = settings.ts, settings.pad
    size = otb_output_size(src.RasterXSize, src.RasterYSize, ts, pad)
    if min(size) <= 0:
        raise SR4RSError(f"the image ({src.RasterXSize} x {src.RasterYSize}) is too small for the OTB engine "
                         f"with --ts {ts} --pad {pad}: use a smaller --ts, or --engine tf")
    logger.info("OTB engine: the output covers %s x %s HR pixels (the input extent is %s x %s; "
                "--engine tf covers it all)", size[0], size[1],
                constants.SCALE * src.RasterXSize, constants.SCALE * src.RasterYSize)
    with atomic_output(settings.output) as tmp:
        _serve(otb, parameters(settings, output_filename(tmp, settings)), settings.gdal_type, settings.quiet)
        dst = open_raster(tmp, update=True)
        dst.SetGeoTransform(fixed_geotransform(dst.GetGeoTransform(), src.GetGeoTransform(), pad))
        copy_band_metadata(src, dst)
        if settings.out_nodata is not None:
            for b in range(1, dst.RasterCount + 1):
                dst.GetRasterBand(b).SetNoDataValue(settings.out_nodata)
        close_dataset(dst, f"{settings.output}: writing failed")
