"""GDAL helpers shared by every command: open with clear errors, north-up grids, read as [H, W, C],
encodings, atomic outputs, block-wise processing, validity masks."""
from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from osgeo import gdal, gdal_array, osr

from cli import os_error_text
from errors import SR4RSError
from logs import get_logger

logger = get_logger("raster")

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


def close_dataset(ds: Any, message: str) -> None:
    """Close a GDAL dataset or OGR data source now: GDAL writes what is left of it, and a failure (e.g. a
    full disk) raises SR4RSError(f"{message} ({GDAL's message})"). Left to Python, the close would come
    when the last reference goes (maybe held by a traceback), and a failure could only be printed as an
    "Exception ignored" traceback. `ds` must not be used afterwards.

    Args:
        ds: a gdal.Dataset or ogr.DataSource.
        message: what failed, e.g. f"{path}: writing failed".
    """
    with gdal_errors(message):
        # The SWIG destructor, as ogr.DataSource.Destroy() and GDAL 3.8's Dataset.Close() call it; the
        # Python object then no longer owns the dataset (nothing is closed twice).
        type(ds).__swig_destroy__(ds)


def is_plain_path(name: str) -> bool:
    """True for a file name; False for GDAL's other dataset names: URLs, /vsi... paths and driver prefixes
    such as `GTIFF_DIR:1:f.tif`, `NETCDF:"f.nc":var` or `HDF5:f.h5://group/data`."""
    return "://" not in name and not name.startswith("/vsi") and not re.match(r"[A-Za-z][A-Za-z0-9_]+:", name)


def open_dataset(opener: Callable[[str], Any], path: str, what: str) -> Any:
    """`opener(path)` (e.g. gdal.Open or ogr.Open), or SR4RSError naming the file: "no such file" when the
    open fails and `path` is a plain file name that does not exist, else "not a readable {what}" with
    GDAL's reason. GDAL decides first: its special names are not files.

    Args:
        opener: opens a dataset name, returns None or raises RuntimeError when it cannot.
        path: the dataset name.
        what: what it should be, for the message (e.g. "raster").
    """
    if not path:
        raise SR4RSError(f"an empty name was given for a {what}")
    try:
        ds, reason = opener(path), ""
    except RuntimeError as err:
        ds, reason = None, f" ({str(err).strip()})"
    if ds is not None:
        return ds
    if is_plain_path(path) and not os.path.exists(path):
        raise SR4RSError(f"{path}: no such file")
    raise SR4RSError(f"{path}: not a readable {what}{reason}")


def open_raster(path: str, update: bool = False) -> gdal.Dataset:
    """Open a raster with GDAL, or raise SR4RSError naming the file.

    Args:
        path: any GDAL dataset name (file, /vsi... path, GTIFF_DIR:..., NETCDF:..., URL).
        update: open for writing.
    """
    ds = open_dataset(lambda name: gdal.Open(name, gdal.GA_Update if update else gdal.GA_ReadOnly), path,
                      "raster")
    if ds.RasterCount == 0:
        raise SR4RSError(f"{path}: not a readable raster (no band)")
    return ds


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


def read_window(ds: gdal.Dataset, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The pixels [rows, cols, bands] at the given image rows and columns (any order, repeats allowed),
    read as the bounding box of those indices.

    Args:
        ds: the image.
        rows: image rows, in [0, ds.RasterYSize).
        cols: image columns, in [0, ds.RasterXSize).
    """
    c0, r0 = int(cols.min()), int(rows.min())
    block = read_array(ds, c0, r0, int(cols.max()) - c0 + 1, int(rows.max()) - r0 + 1)
    return block[np.ix_(rows - r0, cols - c0)]


def block_windows(ds: gdal.Dataset, max_values: int = 1 << 22) -> Iterator[tuple[int, int, int, int]]:
    """Windows (x, y, width, height) that cover a dataset, row by row, each made of whole blocks of its
    first band (so that each block is read or written once) and of at most about `max_values` values
    (all bands): bounded memory on images of any size.

    Args:
        ds: the image.
        max_values: the size of a window, in values.
    """
    bx, by = ds.GetRasterBand(1).GetBlockSize()
    rows = by * max(1, 64 // by)  # strips of a few rows are read 64 rows at a time
    cols = bx * max(1, max_values // (rows * bx * ds.RasterCount))
    for y in range(0, ds.RasterYSize, rows):
        for x in range(0, ds.RasterXSize, cols):
            yield x, y, min(cols, ds.RasterXSize - x), min(rows, ds.RasterYSize - y)


def write_window(ds: gdal.Dataset, array: np.ndarray, x: int, y: int, message: str) -> None:
    """Write an array [rows, cols, bands] at column x, row y, with a clear error.

    Args:
        ds: the image, open for writing.
        array: the pixels.
        x, y: top-left pixel of the window.
        message: what failed, e.g. f"{path}: writing failed".
    """
    with gdal_errors(message):
        ds.WriteArray(np.moveaxis(array, -1, 0), x, y)


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


def to_encoding(values: np.ndarray, valid: np.ndarray, dtype: np.dtype,
                out_nodata: float | None) -> np.ndarray:
    """Computed values -> output pixels: integers rounded (half to even) and clamped to the type's range;
    invalid pixels set to the output nodata (valid integer pixels that land on it are moved by one).

    Args:
        values: float values, e.g. a model output [rows, cols, bands].
        valid: True where a value comes from valid input pixels (same shape).
        dtype: output numpy type.
        out_nodata: output nodata value, or None.
    """
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
        if out_nodata is not None:
            values[valid & (values == out_nodata)] = out_nodata + (1 if out_nodata < info.max else -1)
    if out_nodata is not None:
        values = np.where(valid, values, out_nodata)
    return values.astype(dtype)


def create_geotiff(path: str, like: gdal.Dataset, size: tuple[int, int], gdal_type_code: int,
                   options: dict[str, str], geotransform: Sequence[float] | None,
                   nodata: float | None = None) -> gdal.Dataset:
    """Create a GeoTIFF with the band count, CRS, metadata items, band descriptions and colour
    interpretation of `like`.

    Args:
        path: the file to create.
        like: the image it derives from.
        size: (columns, rows).
        gdal_type_code: GDAL data type.
        options: creation options, KEY -> VALUE.
        geotransform: its geotransform (None: no georeferencing).
        nodata: the nodata value declared by every band, or None.
    """
    with gdal_errors(f"{path}: cannot create the output"):
        ds = gdal.GetDriverByName("GTiff").Create(path, *size, like.RasterCount, gdal_type_code,
                                                  [f"{key}={value}" for key, value in options.items()])
    if geotransform is not None:
        ds.SetGeoTransform(tuple(geotransform))
    if like.GetProjection():
        ds.SetProjection(like.GetProjection())
    copy_metadata(like, ds)
    if nodata is not None:
        for b in range(1, ds.RasterCount + 1):
            ds.GetRasterBand(b).SetNoDataValue(nodata)
    return ds


FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
              (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def check_output_path(path: str) -> str:
    """Refuse an output that cannot be written (before any long work starts): its directory is missing
    or not writable, or it exists and is not a regular file (a directory, a device, a FIFO...).

    Args:
        path: the output file; a symbolic link stands for its target.

    Returns:
        the file really written: `path` with its symbolic links resolved.
    """
    real = os.path.realpath(path)
    if os.path.exists(real):
        mode = os.stat(real).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in FILE_KINDS if test(mode)), "not a regular file")
            raise SR4RSError(f"{path}: the output exists and is {kind}, not a file: give a file name")
    folder = os.path.dirname(real)
    if not os.path.isdir(folder):
        raise SR4RSError(f"{path}: the output directory {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SR4RSError(f"{path}: permission denied (cannot write in {folder})")
    return real


def same_file(a: str, b: str) -> bool:
    """True when two names are the same file (symbolic links resolved, hard links compared)."""
    real_a, real_b = os.path.realpath(a), os.path.realpath(b)
    if real_a == real_b:
        return True
    try:
        return os.path.samefile(real_a, real_b)
    except OSError:  # one of them does not exist (or is a GDAL name that is no file)
        return False


def check_outputs(outputs: dict[str, str | None], inputs: dict[str, str | None]) -> None:
    """Refuse outputs that cannot be written (check_output_path), that are an input, or that are the same
    file as another output.

    Args:
        outputs: option or name (e.g. "--out") -> path (None: not given).
        inputs: option or name -> path (None: not given).
    """
    given = [(name, path) for name, path in outputs.items() if path]
    for i, (name, path) in enumerate(given):
        check_output_path(path)
        for in_name, in_path in inputs.items():
            if in_path and same_file(path, in_path):
                raise SR4RSError(f"{path}: {name} would overwrite the input {in_name}: give another file")
        for other_name, other in given[:i]:
            if same_file(path, other):
                raise SR4RSError(f"{path}: {name} and {other_name} are the same file: give different files")


def part_owner() -> str:
    """Who writes a temporary output, as its name says: "<host>-<pid>" (no dots in it)."""
    return f"{socket.gethostname().replace('.', '_')}-{os.getpid()}"


def remove_stale_parts(folder: str, stem: str) -> int:
    """Remove the temporary outputs `.<stem>.<host>-<pid>.*.part*` (files, OTB scratch folders) that a
    killed run of this machine left: those whose process is gone. Other machines' (a shared file system)
    and running processes' parts are left alone. Returns how many were removed."""
    host, removed = part_owner().rsplit("-", 1)[0], 0
    pattern = re.compile(rf"\.{re.escape(stem)}\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.part")
    for leftover in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(stem)}.*.part*")):
        owner = pattern.match(os.path.basename(leftover))
        if owner is None or owner["host"] != host:
            continue
        try:
            os.kill(int(owner["pid"]), 0)
            continue  # still running (or another user's process: PermissionError below)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(leftover) if os.path.isdir(leftover) else os.remove(leftover)
            removed += 1
    return removed


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """Yield a temporary name next to `path` (next to its target for a symbolic link); rename it to that
    file on success, delete it on failure: a failed or interrupted run never leaves a half-written output,
    and what a killed one left is removed by the next (remove_stale_parts).
    A system error in the block (e.g. a full disk) becomes an SR4RSError naming `path`.
    """
    real = check_output_path(path)
    folder, base = os.path.split(real)
    stem, ext = os.path.splitext(base)
    if remove_stale_parts(folder, stem):
        logger.info("removed the partial outputs of killed runs of %s", path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.{part_owner()}.", suffix=f".part{ext}", dir=folder)
    except OSError as err:
        raise SR4RSError(f"{path}: cannot write in {folder} ({os_error_text(err)})") from None
    os.close(fd)
    os.remove(tmp)  # GDAL drivers want to create the file themselves (with the umask's permissions)
    try:
        yield tmp
        os.replace(tmp, real)
    except BaseException as err:
        for leftover in (tmp, tmp + ".aux.xml", tmp + ".ovr"):
            if os.path.exists(leftover):
                os.remove(leftover)
        if isinstance(err, OSError):
            raise SR4RSError(f"{path}: writing failed ({os_error_text(err)})") from None
        raise
    aux = tmp + ".aux.xml"
    if os.path.exists(aux):
        os.replace(aux, real + ".aux.xml")
    elif os.path.exists(real + ".aux.xml"):
        os.remove(real + ".aux.xml")  # statistics of the file this one replaced


@contextlib.contextmanager
def cog_output(path: str, options: dict[str, str]) -> Iterator[str]:
    """Yield the name of a temporary tiled GeoTIFF to write the whole output to; on success, copy it as a
    Cloud Optimized GeoTIFF (GDAL's COG driver: tiles, overviews, metadata kept) to `path`, atomically;
    the temporary file goes either way.

    Args:
        path: the COG to write.
        options: the COG driver's creation options, KEY -> VALUE.
    """
    real = check_output_path(path)
    folder, base = os.path.split(real)
    stem = os.path.splitext(base)[0]
    prefix = f".{stem}.{part_owner()}."  # a killed run's folder is removed as a stale part
    with tempfile.TemporaryDirectory(prefix=prefix, suffix=".part", dir=folder) as scratch:
        tiled = os.path.join(scratch, "tiled.tif")
        yield tiled
        message = f"{path}: writing the COG failed"
        with atomic_output(path) as tmp:
            with gdal_errors(message):
                ds = gdal.Translate(tmp, tiled, format="COG",
                                    creationOptions=[f"{key}={value}" for key, value in options.items()])
            close_dataset(ds, message)


def check_creation_options(options: dict[str, str], gdal_type_code: int, driver: str = "GTiff") -> None:
    """Refuse GeoTIFF creation options that GDAL does not know or rejects (before any long work: GDAL
    would only warn about them, or fail when the output is created).

    Args:
        options: KEY -> VALUE.
        gdal_type_code: the output's GDAL data type (e.g. PREDICTOR=3 needs a floating-point type).
        driver: "GTiff", or "COG" (a Cloud Optimized GeoTIFF, made by copying a finished image).
    """
    problems: list[str] = []

    def collect(level: int, _code: int, text: str) -> None:
        if level >= gdal.CE_Warning:
            problems.append(text.strip())

    path = f"/vsimem/check_creation_options_{id(problems)}.tif"
    gdal.PushErrorHandler(collect)
    try:
        items = [f"{key}={value}" for key, value in options.items()]
        if driver == "COG":
            gdal.GetDriverByName("COG").CreateCopy(
                path, gdal.GetDriverByName("MEM").Create("", 1, 1, 1, gdal_type_code), options=items)
        else:
            gdal.GetDriverByName(driver).Create(path, 1, 1, 1, gdal_type_code, items)
    except RuntimeError:
        pass  # its message went to `collect`
    finally:
        gdal.PopErrorHandler()
        if gdal.VSIStatL(path) is not None:
            gdal.Unlink(path)
    if problems:
        kind = "COG" if driver == "COG" else "GeoTIFF"
        raise SR4RSError(f"bad {kind} creation option: {problems[0].removeprefix(path + ': ')}")


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
    """True where a value is valid: finite (not NaN, not +-inf) and not equal to the nodata value (when
    there is one)."""
    valid = np.isfinite(array) if np.issubdtype(array.dtype, np.floating) else np.ones(array.shape, bool)
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


def band_descriptions(ds: gdal.Dataset) -> tuple[str, ...]:
    """The description of every band ("" when a band has none), e.g. B4, B3, B2, B8."""
    return tuple(ds.GetRasterBand(b).GetDescription() for b in range(1, ds.RasterCount + 1))


def copy_metadata(src: gdal.Dataset, dst: gdal.Dataset) -> None:
    """Copy the metadata items (default domain: e.g. a Sentinel-2 product's date, tile and offsets), band
    descriptions and colour interpretations from src to dst (same band count)."""
    if src.GetMetadata():
        dst.SetMetadata({**src.GetMetadata(), **dst.GetMetadata()})
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
