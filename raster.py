"""GDAL helpers shared by every command: open with clear errors, north-up grids, read as [H, W, C],
encodings, atomic outputs, validity masks."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from osgeo import gdal, gdal_array, osr

from errors import SR4RSError

gdal.UseExceptions()

# OTB pixel type names (as the original sr.py accepts them) and GDAL/numpy names, to GDAL types.
ENCODINGS = {
    "unsigned_char": gdal.GDT_Byte, "uint8": gdal.GDT_Byte, "byte": gdal.GDT_Byte,
    "short": gdal.GDT_Int16, "int16": gdal.GDT_Int16,
    "unsigned_short": gdal.GDT_UInt16, "uint16": gdal.GDT_UInt16,
    "int": gdal.GDT_Int32, "int32": gdal.GDT_Int32,
    "unsigned_int": gdal.GDT_UInt32, "uint32": gdal.GDT_UInt32,
    "float": gdal.GDT_Float32, "float32": gdal.GDT_Float32,
    "double": gdal.GDT_Float64, "float64": gdal.GDT_Float64,
}


@contextlib.contextmanager
def gdal_errors(message: str) -> Iterator[None]:
    """Turn a GDAL/OGR/OSR error (RuntimeError, with exceptions on) inside the block into
    SR4RSError(f"{message} ({GDAL's message})"), e.g. `with gdal_errors(f"{path}: read failed"):`."""
    try:
        yield
    except RuntimeError as err:
        raise SR4RSError(f"{message} ({str(err).strip()})") from None


def open_raster(path: str, update: bool = False) -> gdal.Dataset:
    """Open a raster with GDAL, or raise SR4RSError naming the file.

    Args:
        path: any GDAL-readable path.
        update: open for writing.
    """
    if not path:
        raise SR4RSError("an image path is empty")
    require_file(path)
    with gdal_errors(f"{path}: not a readable raster"):
        ds = gdal.Open(path, gdal.GA_Update if update else gdal.GA_ReadOnly)
    if ds is None or ds.RasterCount == 0:
        raise SR4RSError(f"{path}: not a readable raster")
    return ds


def require_file(path: str) -> None:
    """Refuse a local path that does not exist (URLs and GDAL /vsi paths are left to the driver)."""
    if "://" not in path and not path.startswith("/vsi") and not os.path.exists(path):
        raise SR4RSError(f"{path}: no such file")


@dataclass(frozen=True)
class Grid:
    """A north-up pixel grid: top-left corner, signed pixel sizes (px > 0, py < 0), size in pixels,
    spatial reference (None without a CRS)."""

    x0: float
    y0: float
    px: float
    py: float
    width: int
    height: int
    srs: osr.SpatialReference | None = field(default=None, compare=False)

    @classmethod
    def of(cls, ds: gdal.Dataset, label: str) -> Grid:
        """The grid of a dataset, or SR4RSError naming `label` when it has no geotransform or is rotated.

        Args:
            ds: the image.
            label: how the errors name it (e.g. its path).
        """
        gt = ds.GetGeoTransform(can_return_null=True)
        if gt is None:
            raise SR4RSError(f"{label}: the image has no georeferencing (geotransform)")
        if gt[2] != 0 or gt[4] != 0 or gt[1] <= 0 or gt[5] >= 0:
            raise SR4RSError(f"{label}: only north-up images are supported (geotransform {tuple(gt)}; warp "
                             "it with gdalwarp)")
        return cls(gt[0], gt[3], gt[1], gt[5], ds.RasterXSize, ds.RasterYSize,
                   srs_from_wkt(ds.GetProjection()))

    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax)."""
        return self.x0, self.y0 + self.py * self.height, self.x0 + self.px * self.width, self.y0

    def centre(self, col: np.ndarray | float, row: np.ndarray | float) -> tuple:
        """Map coordinates of a fractional pixel position (col, row measured from the top-left corner)."""
        return self.x0 + np.asarray(col) * self.px, self.y0 + np.asarray(row) * self.py


def _read(ds: gdal.Dataset, *args: int, **kwargs: int) -> np.ndarray:
    """`ds.ReadAsArray(*args, **kwargs)` as [rows, cols, bands] (a view), with a clear error."""
    with gdal_errors(f"{ds.GetDescription()}: read failed"):
        arr = ds.ReadAsArray(*args, **kwargs)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    return np.moveaxis(arr, 0, -1)


def read_array(ds: gdal.Dataset, xoff: int = 0, yoff: int = 0, xsize: int | None = None,
               ysize: int | None = None) -> np.ndarray:
    """Read a window of every band as an array [rows, cols, bands] in the file's data type.

    Args:
        ds: the image.
        xoff, yoff: top-left pixel of the window.
        xsize, ysize: window size (default: to the right / bottom edge).
    """
    xsize = ds.RasterXSize - xoff if xsize is None else xsize
    ysize = ds.RasterYSize - yoff if ysize is None else ysize
    return np.ascontiguousarray(_read(ds, xoff, yoff, xsize, ysize))


def numpy_dtype(ds: gdal.Dataset) -> np.dtype:
    """The numpy data type of the first band."""
    return np.dtype(gdal_array.GDALTypeCodeToNumericTypeCode(ds.GetRasterBand(1).DataType))


def gdal_type(encoding: str) -> int:
    """GDAL data type of an encoding name (OTB names like `unsigned_short` or GDAL ones like `uint16`)."""
    key = encoding.lower()
    if key not in ENCODINGS:
        raise SR4RSError(f"unknown encoding '{encoding}' (choose one of {', '.join(ENCODINGS)})")
    return ENCODINGS[key]


def numpy_type_of(gdal_type_code: int) -> np.dtype:
    """The numpy data type of a GDAL data type."""
    return np.dtype(gdal_array.GDALTypeCodeToNumericTypeCode(gdal_type_code))


def nodata_value(ds: gdal.Dataset) -> float | None:
    """The nodata value of the first band, or None."""
    return ds.GetRasterBand(1).GetNoDataValue()


def check_output_path(path: str) -> None:
    """Refuse an output whose directory does not exist (before any long work starts)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise SR4RSError(f"{path}: the output directory {folder} does not exist")


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """Yield a temporary name next to `path`; rename it to `path` on success, delete it on failure.

    A failed or interrupted run thus never leaves a half-written `path` behind.
    """
    check_output_path(path)
    folder, base = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(base)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".part{ext}", dir=folder)
    os.close(fd)
    os.remove(tmp)  # GDAL drivers want to create the file themselves
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        for leftover in (tmp, tmp + ".aux.xml", tmp + ".ovr"):
            if os.path.exists(leftover):
                os.remove(leftover)
        raise
    aux = tmp + ".aux.xml"
    if os.path.exists(aux):
        os.replace(aux, path + ".aux.xml")
    elif os.path.exists(path + ".aux.xml"):
        os.remove(path + ".aux.xml")  # statistics of the file this one replaced


def read_sample(ds: gdal.Dataset, max_size: int = 512) -> np.ndarray:
    """A decimated read of the whole image (nearest neighbour, at most max_size pixels a side), as
    [rows, cols, bands]: cheap statistics on images of any size.

    Args:
        ds: the image.
        max_size: the largest side of the sample.
    """
    step = max(1.0, max(ds.RasterXSize, ds.RasterYSize) / max_size)
    cols, rows = max(1, round(ds.RasterXSize / step)), max(1, round(ds.RasterYSize / step))
    return _read(ds, buf_xsize=cols, buf_ysize=rows)


def valid_mask(array: np.ndarray, nodata: float | None) -> np.ndarray:
    """True where a value is valid: not NaN and not equal to the nodata value (when there is one)."""
    valid = ~np.isnan(array) if np.issubdtype(array.dtype, np.floating) else np.ones(array.shape, bool)
    if nodata is not None and not np.isnan(nodata):
        valid &= array != nodata
    return valid


def dilate(mask: np.ndarray, radius: int = 1) -> np.ndarray:
    """Binary dilation of a 2-D mask by a (2 radius + 1) square (beyond the edges counts as False),
    e.g. to grow nodata by a resampling kernel's reach.

    Args:
        mask: [rows, cols] booleans.
        radius: half-size of the square, in pixels.
    """
    rows, cols = mask.shape
    padded = np.pad(mask, radius)
    tall = np.zeros((rows, cols + 2 * radius), dtype=bool)
    for dy in range(2 * radius + 1):  # the square is a vertical then a horizontal segment
        tall |= padded[dy:dy + rows]
    out = np.zeros((rows, cols), dtype=bool)
    for dx in range(2 * radius + 1):
        out |= tall[:, dx:dx + cols]
    return out


def copy_band_metadata(src: gdal.Dataset, dst: gdal.Dataset) -> None:
    """Copy band descriptions and colour interpretations from src to dst (same band count)."""
    for b in range(1, min(src.RasterCount, dst.RasterCount) + 1):
        src_band, dst_band = src.GetRasterBand(b), dst.GetRasterBand(b)
        if src_band.GetDescription():
            dst_band.SetDescription(src_band.GetDescription())
        dst_band.SetColorInterpretation(src_band.GetColorInterpretation())


def srs_from_wkt(wkt: str) -> osr.SpatialReference | None:
    """A spatial reference in traditional GIS axis order (x = easting/longitude), or None for no CRS."""
    if not wkt:
        return None
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs
