"""Step 3 of SR4RS: apply a SavedModel to a whole LR image and write the fake HR image (4x the pixels).

    python sr.py --input S2_10m.tif --savedmodel model/ --output S2_2.5m.tif

Two engines: OTBTF's TensorflowModelServe, as the original SR4RS (`--engine otb`), and a built-in
GDAL + TensorFlow one that needs no OTB (`--engine tf`). `--engine auto` takes OTB when it is there and
can take the input (otb_engine.refusal), the built-in engine otherwise.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import sys
from collections.abc import Sequence

import numpy as np
from osgeo import gdal

import constants
import otb_engine
import region as region_module
from cli import ArgumentParser, run_cli
from errors import SR4RSError
from folders import check_savedmodel, read_metadata
from inference_settings import InferenceSettings
from inputs import expand_inputs, open_inputs
from logs import get_logger, native_start_up, quiet_libraries, setup_logging
from otb_env import load_otb
from precision import PRECISIONS, choose_precision, enable_bfloat16, tensorflow_sees_a_gpu
from products import add_product_options
from raster import (
    check_creation_options,
    check_outputs,
    cog_output,
    gdal_type,
    is_plain_path,
    nodata_value,
    numpy_dtype,
    numpy_type_of,
    open_raster,
    read_sample,
    valid_mask,
)
from tile_memory import MEMORY_SHARE, auto_tile_size, available_memory, hr_channels, parse_memory, tile_bytes

logger = get_logger("sr")

CREATION_OPTION_PREFIX = "gdal:co:"
COG_OPTIONS = {"COMPRESS": "DEFLATE", "PREDICTOR": "YES", "BIGTIFF": "IF_SAFER"}  # --cog's defaults


def build_parser() -> ArgumentParser:
    """The command line of sr.py."""
    parser = ArgumentParser(
        description="Generate a fake HR image (4x the pixels) from a LR image with an SR4RS SavedModel.")
    parser.add_argument("--input", required=True, nargs="+", metavar="INPUT",
                        help="input LR image (any GDAL raster or dataset name), in the same dynamic as the "
                             "LR patches the model was trained on; or a Sentinel-2 product: ESA L2A/L1C "
                             "(.SAFE folder, .zip or MTD_MSIL*.xml; 10 m bands, reflectance x 10000 without "
                             "the BOA/radiometric offset) or THEIA L2A (folder or .zip). Several inputs or "
                             "glob patterns ('tiles/*.tif') are mosaicked: same CRS, pixel size and grid")
    add_product_options(parser, "--input", "",
                        "the model's bands (sr4rs.json), else B4,B3,B2,B8 as the original SR4RS")
    parser.add_argument("--savedmodel", required=True, help="SavedModel directory")
    parser.add_argument("--output", required=True,
                        help="output HR GeoTIFF; OTB extended filenames work: out.tif?&gdal:co:COMPRESS=ZSTD")
    parser.add_argument("--ts", type=tile_size, default=512,
                        help="tile size in HR pixels, a multiple of 4 (default %(default)s): larger is "
                             "faster and needs more memory; auto: the largest multiple of 64 that fits "
                             "--max_memory (an estimate from the model's width)")
    parser.add_argument("--max_memory", type=parse_memory, metavar="SIZE",
                        help="memory for --ts auto, e.g. 8G or 500M (default: half of the available "
                             "memory; with --workers N, shared between the workers)")
    parser.add_argument("--pad", type=int, default=64, choices=constants.PADS,
                        help="margin in HR pixels computed around each tile and dropped, i.e. the model "
                             "output output_<pad> (default %(default)s); must cover the model's receptive "
                             "field for seamless tiles")
    parser.add_argument("--encoding", default="auto",
                        help="output data type: auto (the input's, default), uint8, int16, uint16, int32, "
                             "uint32, float32, float64, or OTB names (unsigned_char, short, unsigned_short, "
                             "int, unsigned_int, float, double); integers are rounded and clamped")
    parser.add_argument("--engine", default="auto", choices=("auto", "otb", "tf"),
                        help="otb: OTBTF TensorflowModelServe (output shrunk by the margins); tf: built-in "
                             "GDAL + TensorFlow engine (whole input extent, borders mirrored); auto "
                             "(default): otb when otbApplication with TensorflowModelServe can be imported "
                             "and can take the input, else tf")
    parser.add_argument("--nodata", type=float,
                        help="input nodata value (default: the input's own); nodata, NaN and infinite "
                             "pixels are filled before inference and set to nodata in the output")
    parser.add_argument("--co", action="append", default=[], metavar="KEY=VALUE",
                        help="GeoTIFF creation option, repeatable (default: TILED=YES, COMPRESS=DEFLATE, "
                             "PREDICTOR, BIGTIFF=IF_SAFER)")
    parser.add_argument("--precision", default="float32", choices=PRECISIONS,
                        help="built-in engine: float32 (default: the original's numbers, the same as the OTB "
                             "engine), bfloat16 (TensorFlow's oneDNN rewrite: several times faster on CPUs "
                             "with AVX512-BF16 or AMX, slightly different values, see README), or "
                             "auto (bfloat16 where the CPU has it natively and no GPU is used)")
    parser.add_argument("--cog", action="store_true",
                        help="write a Cloud Optimized GeoTIFF (GDAL's COG driver: tiled, with overviews, "
                             "readable by QGIS over HTTP); --co options then go to the COG driver (default: "
                             "COMPRESS=DEFLATE, PREDICTOR=YES, BIGTIFF=IF_SAFER)")
    parser.add_argument("--batch", type=int, default=1,
                        help="tiles per model call, tf engine (default %(default)s): more can help on GPUs "
                             "with small tiles")
    region = parser.add_argument_group("large regions on a Dask cluster (built-in engine)")
    region.add_argument("--workers", type=int, metavar="N",
                        help="compute the output in parts on a local Dask cluster of N worker processes "
                             "(the cores are shared between them), resumable: a rerun computes only the "
                             "missing parts (in <output>.parts/)")
    region.add_argument("--scheduler", metavar="ADDRESS",
                        help="the same on a running Dask cluster, e.g. tcp://10.0.0.1:8786 (dask-jobqueue, "
                             "dask-kubernetes...): its workers need SR4RS and a shared file system")
    region.add_argument("--part_size", type=int, default=region_module.DEFAULT_PART_SIZE, metavar="PIXELS",
                        help="HR pixels a side of a part, rounded up to whole tiles (default "
                             "%(default)s); an output named *.vrt is the VRT of the parts, which are kept")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar; SR4RS's warnings and errors only, TensorFlow's and OTB's "
                             "errors only")
    return parser


def split_extended_filename(name: str) -> tuple[str, dict[str, str], list[str]]:
    """Split an OTB extended filename `out.tif?&gdal:co:KEY=VALUE&other=...` into the path, the GDAL
    creation options and the other options (`key=value` strings).

    Args:
        name: the --output value.
    """
    path, _, extended = name.partition("?")
    options: dict[str, str] = {}
    others = []
    for item in filter(None, extended.split("&")):
        if item.startswith(CREATION_OPTION_PREFIX) and "=" in item:
            key, value = item[len(CREATION_OPTION_PREFIX):].split("=", 1)
            options[key.upper()] = value
        else:
            others.append(item)
    return path, options, others


def creation_options(user: dict[str, str], gdal_type_code: int, ts: int) -> dict[str, str]:
    """Tiled, compressed GeoTIFF by default (blocks aligned with the tiles when possible); the user's
    options win.

    Args:
        user: KEY -> VALUE given by --co and the extended filename.
        gdal_type_code: output GDAL data type.
        ts: tile size.
    """
    block = next((b for b in (512, 256, 128, 64) if ts % b == 0), 256)
    options = {"TILED": "YES", "BLOCKXSIZE": str(block), "BLOCKYSIZE": str(block), "COMPRESS": "DEFLATE",
               "BIGTIFF": "IF_SAFER"}
    if "COMPRESS" not in user:
        options["PREDICTOR"] = "3" if np.issubdtype(numpy_type_of(gdal_type_code), np.floating) else "2"
    options.update(user)
    return options


def parse_co(items: Sequence[str]) -> dict[str, str]:
    """--co KEY=VALUE items -> {KEY: VALUE}.

    Args:
        items: the --co values.
    """
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SR4RSError(f"--co {item}: expected KEY=VALUE (e.g. --co COMPRESS=ZSTD)")
        options[key.upper()] = value
    return options


def output_nodata(nodata: float | None, input_dtype: np.dtype, out_dtype: np.dtype) -> float | None:
    """The nodata value the output declares: the input's; NaN for a float input and output without one;
    refused when the output type cannot hold it.

    Args:
        nodata: input nodata value, or None.
        input_dtype: input data type.
        out_dtype: output data type.
    """
    floats = np.issubdtype(out_dtype, np.floating)
    if nodata is None:
        return math.nan if floats and np.issubdtype(input_dtype, np.floating) else None
    if not floats:
        info = np.iinfo(out_dtype)
        if math.isnan(nodata) or nodata != round(nodata) or not info.min <= nodata <= info.max:
            raise SR4RSError(f"the nodata value {nodata} cannot be stored as {out_dtype}: "
                             "choose another --encoding or --nodata")
    return nodata


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse bad values before any work.

    Args:
        args: the parsed command line.
    """
    if args.max_memory is not None and args.ts != "auto":
        logger.warning("--max_memory only chooses the tile size of --ts auto: ignored with --ts %s", args.ts)
    if args.ts != "auto" and (args.ts <= 0 or (args.ts + 2 * args.pad) % constants.SCALE):
        raise SR4RSError(f"--ts {args.ts}: ts + 2*pad must be a positive multiple of {constants.SCALE} "
                         f"(the LR window is (ts + 2*pad)/{constants.SCALE} pixels): use e.g. "
                         f"--ts {max(constants.SCALE, args.ts // constants.SCALE * constants.SCALE)}")
    if args.batch < 1:
        raise SR4RSError(f"--batch {args.batch}: give at least 1")
    if args.workers is not None and args.workers < 1:
        raise SR4RSError(f"--workers {args.workers}: give at least 1")
    if args.workers is not None and args.scheduler:
        raise SR4RSError("--workers starts a local Dask cluster, --scheduler uses a running one: give one")
    if args.part_size < 1:
        raise SR4RSError(f"--part_size {args.part_size}: give a positive number of HR pixels")
    distributed = args.workers is not None or bool(args.scheduler)
    if distributed and args.engine == "otb":
        raise SR4RSError("--workers and --scheduler run the built-in engine: use --engine tf (or auto)")
    if args.output.lower().endswith(".vrt") and not distributed:
        raise SR4RSError(f"--output {args.output}: a VRT output is the VRT of the parts that --workers or "
                         "--scheduler compute; give a .tif name, or one of those options")
    if args.output.lower().endswith(".vrt") and args.cog:
        raise SR4RSError(f"--output {args.output}: --cog writes a GeoTIFF: give a .tif name")


def choose_engine(name: str, otb_refusal: str | None) -> str:
    """'otb' or 'tf' for --engine auto/otb/tf: auto takes OTB when it is there and can take the input.

    Args:
        name: the --engine value.
        otb_refusal: why the OTB engine cannot take this input, or None (see otb_engine.refusal).
    """
    if name == "tf":
        return "tf"
    if load_otb() is None:
        if name == "otb":
            raise SR4RSError("--engine otb: otbApplication with TensorflowModelServe cannot be imported "
                             "(run `make otb`, or use the OTBTF Docker image), or use --engine tf")
        logger.info("OTB's TensorflowModelServe is not available: using the built-in engine")
        return "tf"
    if otb_refusal is None:
        return "otb"
    if name == "otb":
        raise SR4RSError(f"--engine otb: {otb_refusal}: use --engine tf")
    logger.info("the OTB engine cannot take this input (%s): using the built-in engine", otb_refusal)
    return "tf"


def main(argv: Sequence[str] | None = None) -> int:
    """Run sr.py.

    Args:
        argv: the arguments (default: the command line).
    """
    args = build_parser().parse_args(argv)
    setup_logging(verbose=not args.quiet)
    quiet_libraries(args.quiet)
    check_arguments(args)
    output, user_options, extended = split_extended_filename(args.output)
    if extended:
        logger.warning("extended filename options other than gdal:co: are ignored: %s", "&".join(extended))
    user_options.update(parse_co(args.co))
    inputs = expand_inputs(args.input)
    check_outputs({"--output": output}, {f"--input {name}": name for name in inputs})
    model = (read_metadata(args.savedmodel) if os.path.isdir(args.savedmodel) else None) or {}
    distributed = args.workers is not None or bool(args.scheduler)
    workdir = region_module.inputs_folder(output) if distributed else None
    with open_inputs(inputs, workdir, bands=args.bands, mask=args.mask, epsg=args.epsg,
                     theia_reflectance=args.theia_reflectance, default_bands=model.get("bands")) as path:
        return super_resolve(args, output, user_options, path, model)


def tile_size(text: str) -> int | str:
    """--ts: a number of HR pixels, or "auto".

    Args:
        text: the option's value.
    """
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of HR pixels or auto, not {text!r}") from None


def choose_tile_size(args: argparse.Namespace, model: dict, src: gdal.Dataset) -> int:
    """The tile size: --ts, or for --ts auto the largest that fits --max_memory (tile_memory.py).

    Args:
        args: the parsed arguments.
        model: the SavedModel's sr4rs.json ({} when it has none).
        src: the input image.
    """
    if args.ts != "auto":
        return args.ts
    budget = args.max_memory or int(available_memory() * MEMORY_SHARE)
    per_process = budget // (args.workers or 1)
    ts = auto_tile_size(per_process, args.pad, args.batch, model,
                        (constants.SCALE * src.RasterXSize, constants.SCALE * src.RasterYSize))
    logger.info("--ts auto: %s (about %.1f GB per process, of %.1f GB)", ts,
                tile_bytes(ts, args.pad, args.batch, hr_channels(model)) / 2 ** 30, budget / 2 ** 30)
    return ts


def super_resolve(args: argparse.Namespace, output: str, user_options: dict[str, str],
                  input_path: str, model: dict) -> int:
    """The work of sr.py once its arguments are checked.

    Args:
        args: the parsed arguments.
        output: the output file (extended filename options removed).
        user_options: the user's creation options.
        input_path: what GDAL opens: the input, or the VRT of a product's bands (products.open_input).
        model: the SavedModel's sr4rs.json ({} when it has none).
    """
    src = open_raster(input_path)
    args.ts = choose_tile_size(args, model, src)
    out_type = gdal_type(args.encoding) if args.encoding != "auto" else src.GetRasterBand(1).DataType
    options = creation_options({} if args.cog else user_options, out_type, args.ts)
    check_creation_options(options, out_type)
    cog = {**COG_OPTIONS, **user_options} if args.cog else None
    if cog is not None:
        check_creation_options(cog, out_type, "COG")
    nodata = args.nodata if args.nodata is not None else nodata_value(src)
    out_nodata = output_nodata(nodata, numpy_dtype(src), numpy_type_of(out_type))
    check_savedmodel(args.savedmodel)
    with native_start_up(args.quiet):  # TensorFlow loads here, after the cheap checks
        import tiler
        from sr_model import band_statistics, check_input, inspect_savedmodel

    info = inspect_savedmodel(args.savedmodel)
    info.output_key(args.pad)
    sample = read_sample(src)
    stats = band_statistics(sample, valid_mask(sample, nodata))
    check_input(info, src.RasterCount, stats)
    settings = InferenceSettings(
        input=input_path, savedmodel=args.savedmodel, output=output, ts=args.ts, pad=args.pad,
        gdal_type=out_type, nodata=nodata, out_nodata=out_nodata,
        creation_options=options, fill=tuple(stats["mean"]), batch=args.batch, quiet=args.quiet)
    cluster = None
    if args.workers is not None or args.scheduler:
        engine = "tf"
        settings = dataclasses.replace(settings, input=absolute(input_path), output=os.path.abspath(output),
                                       savedmodel=os.path.abspath(args.savedmodel))
        cluster = region_module.ClusterOptions(args.workers, args.scheduler, args.part_size)
    else:
        refusal = otb_engine.refusal(src, args.ts, args.pad, info.nbands is not None)
        engine = choose_engine(args.engine, refusal)
    precision = choose_precision(args.precision, engine, tensorflow_sees_a_gpu())
    if precision == "bfloat16":
        enable_bfloat16()
    logger.info("%s -> %s with %s (engine %s, ts %s, pad %s, %s, %s%s%s)", " ".join(args.input), output,
                args.savedmodel, engine, args.ts, args.pad, precision, numpy_type_of(out_type),
                ", COG" if cog is not None else "", "" if cluster is None else ", on Dask")
    if cluster is not None:
        cluster = dataclasses.replace(cluster, precision=precision)
        run = functools.partial(region_module.run, options=cluster)
    else:
        run = otb_engine.run if engine == "otb" else tiler.run
    if cog is None:
        run(settings)
        return 0
    with cog_output(output, cog) as tiled:  # the whole image first, then its COG copy
        if cluster is None:
            run(dataclasses.replace(settings, output=tiled))
        else:  # the parts folder and the messages name the output; the parts are assembled into `tiled`
            run(settings, target=tiled)
    if cluster is not None:
        region_module.remove_parts(settings.output)  # only now that the COG exists
    return 0


def absolute(name: str) -> str:
    """A GDAL dataset name that a Dask worker can open whatever its working directory: a file's absolute
    path, other names (/vsizip/..., subdatasets) unchanged.

    Args:
        name: a GDAL dataset name.
    """
    return os.path.abspath(name) if is_plain_path(name) else name


if __name__ == "__main__":
    sys.exit(run_cli(main))
