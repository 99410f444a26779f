"""What sr.py reads: one input, or several (names or glob patterns) mosaicked into one VRT, each a GDAL
raster or a Sentinel-2 product (products.open_input).

Several inputs must share their CRS, pixel size and pixel grid, and their band count (for example the
Sentinel-2 tiles of one UTM zone): the mosaic is a VRT of the inputs as they are, without resampling.
Where they overlap, the later input's valid pixels win (the inputs' nodata pixels are transparent).
"""
from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterator, Sequence

from osgeo import gdal

from errors import SR4RSError
from logs import get_logger
from products import open_input
from raster import close_dataset, gdal_errors, is_plain_path, open_raster, srs_from_wkt

logger = get_logger("inputs")

GLOB_CHARACTERS = "*?["
GRID_TOLERANCE = 1e-6  # of a pixel: origins further from the first input's pixel grid are refused


def expand_inputs(names: Sequence[str]) -> list[str]:
    """The inputs the user gave: names, and glob patterns (e.g. `tiles/*.tif`) that match no file by
    their own name, each replaced by its matches in sorted order.

    Args:
        names: the --input values.
    """
    inputs: list[str] = []
    for name in names:
        if is_plain_path(name) and any(c in name for c in GLOB_CHARACTERS) and not os.path.exists(name):
            matches = sorted(glob.glob(name))
            if not matches:
                raise SR4RSError(f"{name}: no file matches this pattern")
            inputs.extend(matches)
        else:
            inputs.append(name)
    duplicates = sorted({name for name in inputs if inputs.count(name) > 1})
    if duplicates:
        raise SR4RSError(f"{duplicates[0]}: given twice as an input")
    return inputs


def check_same_grid(paths: Sequence[str], sources: Sequence[str]) -> None:
    """Refuse inputs that cannot be mosaicked without resampling: other CRS, pixel size, band count,
    rotation, or pixel grid than the first input's.

    Args:
        paths: what GDAL opens for each input.
        sources: the inputs' names as the user gave them (for messages).
    """
    first = open_raster(paths[0])
    gt0, srs0 = first.GetGeoTransform(can_return_null=True), srs_from_wkt(first.GetProjection())
    for path, source in zip(paths, sources, strict=True):
        ds = open_raster(path)
        gt, srs = ds.GetGeoTransform(can_return_null=True), srs_from_wkt(ds.GetProjection())
        if gt is None or srs is None:
            raise SR4RSError(f"{source}: no georeferencing: several inputs are placed by their coordinates")
        if gt[2] or gt[4]:
            raise SR4RSError(f"{source}: rotated (not north-up): cannot be mosaicked with other inputs")
        types = {gdal.GetDataTypeName(d.GetRasterBand(1).DataType) for d in (ds, first)}
        if len(types) > 1:
            raise SR4RSError(f"{source}: data type {' vs '.join(sorted(types))} of {sources[0]}: give inputs "
                             "of one data type (gdal_translate -ot)")
        if ds.RasterCount != first.RasterCount:
            raise SR4RSError(f"{source}: {ds.RasterCount} band(s), but {sources[0]} has {first.RasterCount}")
        if srs0 is None or not srs.IsSame(srs0):
            raise SR4RSError(f"{source}: another CRS than {sources[0]}: super-resolve each CRS (e.g. UTM "
                             "zone) on its own, or warp the inputs to one CRS (gdalwarp -t_srs ... -tap)")
        if any(abs(gt[i] - gt0[i]) > GRID_TOLERANCE * abs(gt0[i]) for i in (1, 5)):
            raise SR4RSError(f"{source}: pixels of {gt[1]:g} x {abs(gt[5]):g}, but {sources[0]} has "
                             f"{gt0[1]:g} x {abs(gt0[5]):g}: give inputs of one resolution")
        shift = ((gt[0] - gt0[0]) / gt0[1], (gt[3] - gt0[3]) / gt0[5])
        if any(abs(s - round(s)) > GRID_TOLERANCE for s in shift):
            raise SR4RSError(f"{source}: its pixels are not on the pixel grid of {sources[0]} (shifted by "
                             f"{shift[0] % 1:.3f}, {shift[1] % 1:.3f} pixel): align them (gdalwarp -tap)")


def mosaic(paths: Sequence[str], sources: Sequence[str], path: str) -> str:
    """Write the VRT of several inputs (checked by check_same_grid) and return its name.

    Args:
        paths: what GDAL opens for each input.
        sources: the inputs' names as the user gave them.
        path: the VRT to write.
    """
    check_same_grid(paths, sources)
    # absolute names, so that the VRT finds its sources from any working directory (Dask workers too)
    absolute = [os.path.abspath(p) if is_plain_path(p) else p for p in paths]
    message = f"cannot mosaic {', '.join(sources)}"
    with gdal_errors(message):
        vrt = gdal.BuildVRT(path, absolute)
    if vrt is None:
        raise SR4RSError(message)
    close_dataset(vrt, message)
    ds = open_raster(path)
    logger.info("%s input(s) mosaicked: %s x %s LR pixels", len(paths), ds.RasterXSize, ds.RasterYSize)
    return path


@contextlib.contextmanager
def open_inputs(names: Sequence[str], workdir: str | None = None, **product_options: object) -> Iterator[str]:
    """Open the inputs (products.open_input each) and yield what GDAL opens: the input itself, or the
    mosaic of several.

    Args:
        names: the inputs, globs expanded (expand_inputs).
        workdir: where the VRTs are written and kept (e.g. for Dask workers); None: a temporary folder.
        **product_options: open_input's band, mask, EPSG and reflectance options.
    """
    with contextlib.ExitStack() as stack:
        if workdir is None and len(names) > 1:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="sr4rs-inputs."))
        images = [stack.enter_context(open_input(name, workdir=workdir, **product_options)) for name in names]
        if len(images) == 1:
            yield images[0].path
            return
        yield mosaic([image.path for image in images], list(names), os.path.join(workdir, "mosaic.vrt"))
