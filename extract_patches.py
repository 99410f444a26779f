"""Extract co-located LR and HR patches images (OTBTF format) from a LR and a HR image, or from one image
alone (--self_supervised: its LR side is the image degraded like a sensor, degradation.py).

The built-in replacement of OTBTF's PatchesExtraction for SR4RS (see `--help` and the README, Step 1).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np
from osgeo import gdal, gdal_array, ogr, osr
from tqdm import tqdm

from cli import ArgumentParser, os_error_text, run_cli
from constants import SCALE
from degradation import DEFAULT_MTF, DEGRADATIONS, Degradation, check_mtf, read_mirrored, to_image_type
from errors import SR4RSError
from logs import get_logger, setup_logging
from products import add_product_options, open_input
from raster import (
    Grid,
    atomic_output,
    check_outputs,
    close_dataset,
    copy_metadata,
    gdal_errors,
    gdal_type,
    numpy_type_of,
    open_dataset,
    open_raster,
    srs_from_wkt,
)

logger = get_logger("extract_patches")
ogr.UseExceptions()
osr.UseExceptions()

CENTERS_SUFFIX = "_centers.gpkg"
CENTERS_LAYER = "patch_centers"
RESAMPLINGS = ("nearest", "bilinear", "cubic", "cubicspline", "lanczos", "average")
# Tolerances: pixel sizes must match to this relative precision; grid origins to this fraction of a pixel.
PIXEL_SIZE_RTOL = 1e-6
ORIGIN_TOL = 1e-3
WRITE_CHUNK_ROWS = 4096
NODATA_NONE = "none"  # --lr_nodata/--hr_nodata none: ignore the file's nodata values and mask
# The centres are written this many LR pixels (a quarter HR pixel) right of and below the windows' centres,
# inside the LR and HR pixels PatchesExtraction must pick (docs/DESIGN.md §7).
CENTRE_NUDGE = 1.0 / (4 * SCALE)

DESCRIPTION = """\
Extract patches images in OTBTF format (N patches stacked vertically, width s,
height N*s, all bands) from a low-resolution image (LR) and a high-resolution image (HR) of the same
area, for `train.py --lr_patches/--hr_patches`. Patch i of the LR output and patch i of the HR output
cover exactly the same ground: the HR patch is the LR patch's window times 4.

Where patches are taken:
  --vec POINTS  one patch per point of a vector layer (any OGR format; reprojected to the LR image's
                CRS when it differs). MultiPoints give one patch per point; other geometries are an
                error. Patches keep the layer's feature order.
  --step N      a regular grid: LR windows at columns/rows 0, N, 2N, ... (top to bottom, left to right).

How a point becomes a patch (the same rule as OTBTF's PatchesExtraction, i.e. ITK's
TransformPhysicalPointToIndex): the point goes to the LR pixel (col, row) that contains it; a point
exactly on a pixel edge goes to the pixel on its right / below (ITK rounds the continuous pixel index
half up). The LR patch is columns [col - s//2, col - s//2 + s) and rows [row - s//2, row - s//2 + s).
With an even s, the patch centre is therefore the top-left corner of that pixel: a point on an LR
pixel corner (e.g. the centroid of a QGIS grid whose cell size is a multiple of the pixel size) is
exactly the patch centre. The HR patch is the same window in HR pixels (from 4*(col - s//2),
4*(row - s//2), size 4s, plus the HR grid's offset). OTBTF instead centres the HR patch on the HR pixel
containing the point, so its HR patch is the same as ours only when the point lies in the top-left HR
pixel of its LR pixel for an even s (for instance on an LR pixel corner, with pixel sizes exact in
binary such as 10/2.5, 6/1.5 or 2/0.5 m), or in the HR pixel right below its LR pixel's centre for an
odd s; elsewhere OTBTF's HR patch is shifted by up to 3 HR pixels from the ground of its LR patch.
The LR patches are the same as OTBTF's, bit for bit.

Skipped patches (counted and reported): windows outside either image, windows the HR image does not
cover (--resample_hr), and windows containing a nodata pixel (the file's nodata value per band, or
--lr_nodata/--hr_nodata), a NaN, or a masked pixel (GDAL mask or alpha band) in any band of the LR or
the HR image. `--lr_nodata none`/`--hr_nodata none` ignore the file's nodata values and mask (for a
nodata value that is also a real value, e.g. 255 on saturated pixels); NaN stays nodata.

Self-supervised (--self_supervised, no --hr; Wald protocol): the pairs come from the --lr image alone.
Its own pixels are the HR side, and its LR side is the image degraded like a sensor 4 times coarser:
blurred by a Gaussian PSF whose MTF at the Nyquist frequency of the LR grid is --mtf (default 0.3,
Sentinel-2's), or averaged over 4x4 blocks (--degradation mean), then decimated 4 times. LR pixel (i, j)
covers the image's pixels [4i, 4i+4) x [4j, 4j+4) (the PSF is centred on that block): the LR grid is the
image's grid with a 4 times larger pixel size and the same origin, and --lr_patchsize, --step and the
points of --vec refer to it. A model trained on these pairs (e.g. 40 m -> 10 m from a 10 m image) is then
applied to the image itself (10 m -> 2.5 m): this assumes that the relation between the two scales does
not depend on the scale. The PSF reaches beyond the 4x4 block; at the image's edges the image is mirrored
(edge pixel repeated), and a nodata, NaN or masked pixel (--lr_nodata) anywhere in the PSF's support makes
the LR pixel nodata (its patch is skipped). The LR patches have the image's data type: values are rounded
to the nearest integer for integer images, as a real LR image of that type (the one the model will be
applied to) stores them. The centres GeoPackage refers to that LR grid (PatchesExtraction cannot make
these pairs: it has no degraded image to read).

Outputs: --out_lr and --out_hr (GeoTIFF, data type of each input or --encoding), and a GeoPackage
of the patch centres (layer "patch_centers", fields `patch` = patch index in the patches images,
`source_fid` = FID of the point (grid mode: grid cell index), `lr_col`/`lr_row` = top-left LR pixel of
the patch, and the --field value), written next to --out_lr as <out_lr stem>_centers.gpkg unless
--out_centers is given. Each point, in the LR image's CRS, lies a quarter HR pixel right of and below
the patch centre, so that PatchesExtraction fed with this file (-vec <file> -field patch) extracts the
same LR and HR patches: its rounding cannot send a point to a neighbouring pixel. Outputs appear only
when the extraction succeeds.
"""

EPILOG = """\
examples:
  python extract_patches.py --lr Sentinel-2_B4328_10m.tif --hr Spot6_pansharp_RGBN_2.5m.tif \\
      --lr_patchsize 32 --vec patches_center_locations.shp --out_lr lr_patches.tif --out_hr hr_patches.tif
  python extract_patches.py --self_supervised --lr Sentinel-2_B4328_10m.tif --mtf 0.3 \\
      --lr_patchsize 32 --step 32 --out_lr lr_patches_40m.tif --out_hr hr_patches_10m.tif
"""


def nodata_option(text: str) -> float | str:
    """The value of --lr_nodata/--hr_nodata: a number, or "none" (ignore the file's nodata)."""
    if text.strip().lower() == NODATA_NONE:
        return NODATA_NONE
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or '{NODATA_NONE}': {text!r}") from None


def otb_pixel_index(coord: np.ndarray, first: float, pixel_size: float) -> np.ndarray:
    """Pixel index of map coordinates along one axis, computed exactly as OTB/ITK 4.13 does.

    ITK's TransformPhysicalPointToIndex takes the continuous index relative to the first pixel's centre,
    ((coord - (first + size/2)) * (1/size)), and rounds it half up with `(rint(2x + 0.5)) >> 1` (SSE2
    path of itk::Math::RoundHalfIntegerUp): the pixel containing the point, edges going right/down.

    Args:
        coord: map coordinates (x or y).
        first: coordinate of the grid's first edge (geotransform[0] or [3]).
        pixel_size: signed pixel size (geotransform[1] or [5]).
    """
    cont = (np.asarray(coord, dtype=np.float64) - (first + 0.5 * pixel_size)) * (1.0 / pixel_size)
    cont = np.where(np.isfinite(cont) & (np.abs(cont) < 2.0 ** 52), cont, -(2.0 ** 52))  # failed: outside
    return (np.rint(2.0 * cont + 0.5) // 2).astype(np.int64)


@dataclass
class Candidates:
    """Candidate LR windows (top-left pixel) with where they come from."""

    lr_col: np.ndarray
    lr_row: np.ndarray
    source_fid: np.ndarray
    values: list = field(default_factory=list)  # --field values (or empty)
    field_info: tuple[str, int] | None = None  # --field name and OGR type
    no_geometry: int = 0


class Source:
    """One input image: reads windows [rows, cols, bands] and tells whether they hold nodata."""

    def __init__(self, ds: gdal.Dataset, path: str, nbands: int, nodata: float | str | None,
                 alpha: int | None = None) -> None:
        """
        Args:
            ds: the image.
            path: how messages name it.
            nbands: its data bands (1 .. nbands).
            nodata: a value for every band, NODATA_NONE (no nodata value, no mask), or None (the file's).
            alpha: an alpha band marking the valid pixels (the one the --resample_hr warp adds).
        """
        self.ds = ds
        self.path = path
        self.bands = list(range(1, nbands + 1))
        self.dtype = numpy_type_of(ds.GetRasterBand(1).DataType)
        if np.issubdtype(self.dtype, np.complexfloating):
            raise SR4RSError(f"{path}: complex data types are not supported")
        self.from_file = nodata is None
        if nodata is None:
            values = [ds.GetRasterBand(b).GetNoDataValue() for b in self.bands]
        else:
            values = [None if nodata == NODATA_NONE else nodata] * nbands
        self.nodata = [(b, v) for b, v in enumerate(values) if v is not None and not math.isnan(v)]
        flags = ds.GetRasterBand(1).GetMaskFlags()
        if alpha is not None:
            self.mask = ds.GetRasterBand(alpha)
        elif nodata is None and not flags & (gdal.GMF_ALL_VALID | gdal.GMF_NODATA):
            self.mask = ds.GetRasterBand(1).GetMaskBand()
        else:
            self.mask = None
        self.is_float = np.issubdtype(self.dtype, np.floating)
        self.value_rejected = 0  # windows rejected for pixels equal to a nodata value
        self.value_pixels = 0  # such pixels in them

    def read(self, xoff: int, yoff: int, size: int, height: int | None = None) -> np.ndarray:
        """Read a size x size window (size x height when given) of every band as [rows, cols, bands]."""
        height = size if height is None else height
        with gdal_errors(f"{self.path}: read failed"):
            arr = self.ds.ReadAsArray(int(xoff), int(yoff), size, height, band_list=self.bands,
                                      interleave="pixel")
        return arr.reshape(height, size, len(self.bands))

    def _value_hits(self, arr: np.ndarray) -> np.ndarray:
        """[rows, cols]: True where a band holds its nodata value."""
        hit = np.zeros(arr.shape[:2], dtype=bool)
        for b, value in self.nodata:
            hit |= arr[:, :, b] == value
        return hit

    def _masked(self, xoff: int, yoff: int, width: int, height: int) -> np.ndarray | None:
        """[rows, cols]: True where the mask (GDAL mask or alpha band) says not valid; None without a mask."""
        if self.mask is None:
            return None
        with gdal_errors(f"{self.path}: read failed"):
            return self.mask.ReadAsArray(int(xoff), int(yoff), width, height) == 0

    def valid(self, arr: np.ndarray, xoff: int, yoff: int) -> bool:
        """True when the window has no nodata, NaN or masked pixel."""
        if self.is_float and not np.isfinite(arr).all():  # NaN or +-inf
            return False
        hit = self._value_hits(arr)
        if hit.any():
            self.value_rejected += 1
            self.value_pixels += int(hit.sum())
            return False
        masked = self._masked(xoff, yoff, arr.shape[1], arr.shape[0])
        return masked is None or not masked.any()

    def read_with_validity(self, xoff: int, yoff: int, width: int,
                           height: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Read a window with its invalid pixels.

        Returns:
            the pixels [rows, cols, bands], a mask [rows, cols] True on the pixels with a nodata value, a
            NaN or a mask saying so in any band, and the number of pixels with a nodata value.
        """
        arr = self.read(xoff, yoff, width, height)
        hit = self._value_hits(arr)
        invalid = hit.copy()
        if self.is_float:
            invalid |= ~np.isfinite(arr).all(axis=-1)
        masked = self._masked(xoff, yoff, width, height)
        if masked is not None:
            invalid |= masked
        return arr, invalid, int(hit.sum())

    def nodata_hint(self, option: str, size: int) -> str:
        """How many windows the file's nodata value rejected, and how to ignore it ("" when none did).

        Args:
            option: the option that overrides this image's nodata (--lr_nodata or --hr_nodata).
            size: the window size.
        """
        if not (self.from_file and self.value_rejected):
            return ""
        values = sorted({v for _, v in self.nodata})
        share = self.value_pixels / (self.value_rejected * size * size)
        return (f"{self.value_rejected} patches held pixels equal to {self.path}'s nodata "
                f"value{'s' if len(values) > 1 else ''} {', '.join(f'{v:g}' for v in values)} "
                f"({self.value_pixels} pixels, {share:.1%} of those patches' pixels); if it is a real value "
                f"there (e.g. saturated pixels), use {option} {NODATA_NONE} to ignore it")


class DegradedSource:
    """The LR side of --self_supervised: windows of an image degraded and decimated SCALE times, on the
    image's grid with a SCALE times larger pixel size and the same origin. Each window is computed from the
    image's window times SCALE plus the PSF's margins, the image mirrored beyond its edges."""

    def __init__(self, src: Source, degradation: Degradation) -> None:
        """
        Args:
            src: the image.
            degradation: the PSF.
        """
        self.src = src
        self.ds = src.ds  # the image's dataset (metadata, band descriptions)
        self.degradation = degradation
        self.path = f"{src.path} (degraded)"
        self.bands = src.bands
        self.dtype = src.dtype  # values rounded to it, as a real LR image of that type holds them
        self.image_size = (src.ds.RasterXSize, src.ds.RasterYSize)
        self._last: tuple[bool, int] = (True, 0)  # validity and nodata-value pixels of the last window read

    def read(self, xoff: int, yoff: int, size: int) -> np.ndarray:
        """The degraded size x size LR window at (xoff, yoff), as [rows, cols, bands] in the image's type."""
        m = self.degradation.margin
        hits = 0

        def read(x: int, y: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
            nonlocal hits
            arr, invalid, hits = self.src.read_with_validity(x, y, w, h)
            return arr, invalid

        side = SCALE * size + 2 * m
        block, invalid = read_mirrored(read, SCALE * int(xoff) - m, SCALE * int(yoff) - m, side, side,
                                       self.image_size)
        values, lr_invalid = self.degradation.apply(block, invalid)
        self._last = (not lr_invalid.any(), hits)
        return to_image_type(values, self.dtype)

    def valid(self, arr: np.ndarray, xoff: int, yoff: int) -> bool:
        """True when no LR pixel of the window just read has a nodata, NaN or masked image pixel in the
        PSF's support."""
        ok, hits = self._last
        if not ok and hits:
            self.src.value_rejected += 1
            self.src.value_pixels += hits
        return ok

    def nodata_hint(self, option: str, size: int) -> str:
        """Source.nodata_hint for the image pixels read for LR windows of `size` pixels."""
        return self.src.nodata_hint(option, SCALE * size + 2 * self.degradation.margin)


def build_parser() -> ArgumentParser:
    """The command line of extract_patches.py."""
    p = ArgumentParser(description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lr", required=True, metavar="IMAGE",
                   help="low-resolution image (any GDAL-readable raster, or a Sentinel-2 product as sr.py "
                        "--input takes it); with --self_supervised, the image the pairs are made from (its "
                        "own pixels are the HR side)")
    add_product_options(p, "--lr", "lr_", "B4,B3,B2,B8")
    p.add_argument("--hr", metavar="IMAGE",
                   help="high-resolution image of the same area, same bands in the same order, pixel size "
                        "= LR pixel size / 4 on a grid aligned with the LR grid (else see --resample_hr); "
                        "required unless --self_supervised")
    p.add_argument("--self_supervised", action="store_true",
                   help="no HR image: make the pairs from --lr alone, its LR side being --lr degraded like "
                        "a sensor 4 times coarser (--degradation, --mtf) and decimated 4 times (Wald "
                        "protocol; see above)")
    p.add_argument("--degradation", choices=DEGRADATIONS,
                   help="with --self_supervised: 'gaussian' (default), a Gaussian PSF with the MTF --mtf at "
                        "the LR Nyquist frequency, or 'mean', the mean of each 4x4 block (MTF 0.65)")
    p.add_argument("--mtf", type=float, metavar="MTF",
                   help="with --self_supervised and --degradation gaussian: the sensor's MTF at the LR "
                        f"Nyquist frequency, in [0.01, 0.92) (default: {DEFAULT_MTF}, Sentinel-2's)")
    p.add_argument("--lr_patchsize", type=int, required=True, metavar="S",
                   help="LR patch size s in pixels (HR patches are 4s x 4s)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--vec", metavar="POINTS",
                       help="vector layer of patch centres (points; any OGR format)")
    where.add_argument("--step", type=int, metavar="N",
                       help="regular grid of patches every N LR pixels (N >= 1)")
    p.add_argument("--layer", metavar="NAME", help="layer name in --vec (default: its first layer)")
    p.add_argument("--field", metavar="NAME",
                   help="a field of --vec whose value is copied to the centres GeoPackage "
                        "(optional; PatchesExtraction requires one but does not use it)")
    p.add_argument("--out_lr", required=True, metavar="TIF", help="output LR patches image (.tif)")
    p.add_argument("--out_hr", required=True, metavar="TIF", help="output HR patches image (.tif)")
    p.add_argument("--out_centers", metavar="GPKG",
                   help=f"output GeoPackage of patch centres (default: <out_lr stem>{CENTERS_SUFFIX})")
    p.add_argument("--encoding", metavar="TYPE",
                   help="output data type of both patches images, OTB or GDAL name (uint8, int16, "
                        "uint16, int32, uint32, float, double, ...; default: the type of each input). "
                        "Values are clipped to the type's range then truncated, as OTB does")
    for name in ("LR", "HR"):
        p.add_argument(f"--{name.lower()}_nodata", type=nodata_option, metavar="VALUE",
                       help=f"treat this value as nodata in every {name} band instead of the file's nodata "
                            f"values and mask (default), or '{NODATA_NONE}': no nodata value (when the "
                            "file's is also a real value, e.g. 255 on saturated pixels); NaN and "
                            "infinities are always nodata")
    p.add_argument("--resample_hr", action="store_true",
                   help="when the HR pixel size is not the LR one / 4, its grid is not aligned with the LR "
                        "grid, or its CRS differs, warp the HR image on the fly with GDAL onto the LR grid "
                        "refined 4 times (without this flag, that is an error)")
    p.add_argument("--resampling", choices=RESAMPLINGS,
                   help="GDAL resampling of --resample_hr (default: cubic)")
    p.add_argument("--max_patches", type=int, metavar="N",
                   help="keep at most this many patches, chosen at random among the valid ones "
                        "(kept in their original order)")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="random seed of --max_patches (default: 0)")
    p.add_argument("--quiet", action="store_true", help="log warnings only, no progress bar")
    return p


def _check_args(args: argparse.Namespace) -> str:
    """Validate the arguments before any reading; return the centres GeoPackage path."""
    if args.lr_patchsize < 1:
        raise SR4RSError(f"--lr_patchsize must be >= 1 (got {args.lr_patchsize})")
    if args.step is not None and args.step < 1:
        raise SR4RSError(f"--step must be >= 1 (got {args.step})")
    if args.max_patches is not None and args.max_patches < 1:
        raise SR4RSError(f"--max_patches must be >= 1 (got {args.max_patches})")
    if args.vec is None and (args.field or args.layer):
        raise SR4RSError("--field and --layer go with --vec")
    _check_degradation(args)
    if args.encoding:
        gdal_type(args.encoding)
    centers = args.out_centers or os.path.join(
        os.path.dirname(args.out_lr), os.path.splitext(os.path.basename(args.out_lr))[0] + CENTERS_SUFFIX)
    for out in (args.out_lr, args.out_hr):
        if os.path.splitext(out)[1].lower() not in (".tif", ".tiff"):
            raise SR4RSError(f"{out}: patches images are GeoTIFF, use a .tif name")
    if os.path.splitext(centers)[1].lower() != ".gpkg":
        raise SR4RSError(f"{centers}: the centres file is a GeoPackage, use a .gpkg name")
    check_outputs({"--out_lr": args.out_lr, "--out_hr": args.out_hr, "the centres GeoPackage": centers},
                  {"--lr": args.lr, "--hr": args.hr, "--vec": args.vec})
    return centers


def _check_degradation(args: argparse.Namespace) -> None:
    """Check the options of --self_supervised against the others; fill in the defaults of --degradation,
    --mtf and --resampling."""
    if args.self_supervised:
        extra = [name for name, value in (("--hr", args.hr), ("--hr_nodata", args.hr_nodata),
                                          ("--resample_hr", args.resample_hr or None),
                                          ("--resampling", args.resampling)) if value is not None]
        if extra:
            raise SR4RSError(f"--self_supervised makes the HR side from --lr itself: remove "
                             f"{', '.join(extra)}")
        args.degradation = args.degradation or "gaussian"
        if args.degradation == "gaussian":
            args.mtf = DEFAULT_MTF if args.mtf is None else args.mtf
            check_mtf(args.mtf)
        elif args.mtf is not None:
            raise SR4RSError(f"--mtf goes with --degradation gaussian, not {args.degradation}")
    else:
        if args.hr is None:
            raise SR4RSError("--hr is required (or --self_supervised to make the pairs from --lr alone)")
        given = [name for name, value in (("--degradation", args.degradation), ("--mtf", args.mtf))
                 if value is not None]
        if given:
            raise SR4RSError(f"{' and '.join(given)} go{'es' if len(given) == 1 else ''} with "
                             "--self_supervised")
    args.resampling = args.resampling or "cubic"


def _same_size(a: float, b: float) -> bool:
    return abs(a - b) <= PIXEL_SIZE_RTOL * abs(b)


def _hr_offset(lr: Grid, hr: Grid) -> tuple[int, int] | None:
    """HR pixel offset of the LR grid's corner when the HR grid nests in the LR grid, else None."""
    if not (_same_size(hr.px * SCALE, lr.px) and _same_size(hr.py * SCALE, lr.py)):
        return None
    ox = (lr.x0 - hr.x0) / hr.px
    oy = (lr.y0 - hr.y0) / hr.py
    if abs(ox - round(ox)) > ORIGIN_TOL or abs(oy - round(oy)) > ORIGIN_TOL:
        return None
    return int(round(ox)), int(round(oy))


def _rectangle(xmin: float, ymin: float, xmax: float, ymax: float) -> ogr.Geometry:
    """An axis-aligned rectangle as an OGR polygon."""
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in ((xmin, ymin), (xmin, ymax), (xmax, ymax), (xmax, ymin), (xmin, ymin)):
        ring.AddPoint_2D(x, y)
    polygon = ogr.Geometry(ogr.wkbPolygon)
    polygon.AddGeometry(ring)
    return polygon


def _footprint(hr: Grid, lr: Grid, hr_path: str) -> ogr.Geometry:
    """The HR image's extent as a polygon in the LR image's CRS (edges densified before reprojecting)."""
    polygon = _rectangle(*hr.bounds())
    if hr.srs is not None and lr.srs is not None and not hr.srs.IsSame(lr.srs):
        polygon.Segmentize(max(hr.width * hr.px, -hr.height * hr.py) / 64)
        with gdal_errors(f"{hr_path}: cannot reproject its extent to the LR image's CRS"):
            polygon.Transform(osr.CoordinateTransformation(hr.srs, lr.srs))
    return polygon


def _warp_hr(hr_ds: gdal.Dataset, lr: Grid, lr_wkt: str, hr_nodata: float | str | None,
             resampling: str) -> gdal.Dataset:
    """Warp HR (lazily, as a VRT) onto the LR grid refined SCALE times; without a nodata value, an alpha
    band after the data bands marks the pixels computed from valid HR pixels."""
    bounds = (lr.x0, lr.y0 + lr.height * lr.py, lr.x0 + lr.width * lr.px, lr.y0)
    kwargs = dict(format="VRT", outputBounds=bounds, width=lr.width * SCALE, height=lr.height * SCALE,
                  resampleAlg=resampling, multithread=False)
    if lr_wkt:
        kwargs["dstSRS"] = lr_wkt
    if hr_nodata == NODATA_NONE:
        kwargs.update(srcNodata="None", dstAlpha=True)
    else:
        nodata = hr_nodata if hr_nodata is not None else hr_ds.GetRasterBand(1).GetNoDataValue()
        if nodata is not None:
            kwargs.update(srcNodata=nodata, dstNodata=nodata)
        else:
            kwargs["dstAlpha"] = True
    with gdal_errors("cannot resample the HR image onto the LR grid"):
        return gdal.Warp("", hr_ds, options=gdal.WarpOptions(**kwargs))


def _grid_candidates(lr: Grid, size: int, step: int) -> Candidates:
    cols = np.arange(0, lr.width - size + 1, step, dtype=np.int64)
    rows = np.arange(0, lr.height - size + 1, step, dtype=np.int64)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    n = rr.size
    return Candidates(cc.ravel(), rr.ravel(), np.arange(n, dtype=np.int64))


def _point_candidates(path: str, layer_name: str | None, field_name: str | None, lr: Grid, lr_wkt: str,
                      size: int) -> Candidates:
    """LR windows of the points of a vector layer (reprojected to the LR CRS when needed)."""
    vds = open_dataset(ogr.Open, path, "vector layer")
    if vds.GetLayerCount() == 0:
        raise SR4RSError(f"{path}: not a readable vector layer (no layer)")
    if layer_name:
        layer = vds.GetLayerByName(layer_name)
        if layer is None:
            names = [vds.GetLayer(i).GetName() for i in range(vds.GetLayerCount())]
            raise SR4RSError(f"{path}: no layer '{layer_name}' (layers: {', '.join(names)})")
    else:
        layer = vds.GetLayer(0)
    defn = layer.GetLayerDefn()
    field_defn = None
    if field_name:
        idx = defn.GetFieldIndex(field_name)
        if idx < 0:
            names = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
            raise SR4RSError(f"{path}: no field '{field_name}' (fields: {', '.join(names) or 'none'})")
        field_defn = (field_name, defn.GetFieldDefn(idx).GetType())
    xs, ys, fids, values = [], [], [], []
    no_geometry = 0
    for feat in layer:
        geom = feat.GetGeometryRef()
        if geom is None or geom.IsEmpty():
            no_geometry += 1
            continue
        flat = ogr.GT_Flatten(geom.GetGeometryType())
        if flat == ogr.wkbPoint:
            points = [geom]
        elif flat == ogr.wkbMultiPoint:
            points = [geom.GetGeometryRef(i) for i in range(geom.GetGeometryCount())]
        else:
            raise SR4RSError(f"{path}: feature {feat.GetFID()} is a {geom.GetGeometryName()}; patch centres "
                             "must be points (QGIS: Vector > Geometry Tools > Centroids)")
        for pt in points:
            xs.append(pt.GetX())
            ys.append(pt.GetY())
            fids.append(feat.GetFID())
            if field_defn is not None:
                values.append(feat.GetField(field_name))
    if not xs:
        raise SR4RSError(f"{path}: the layer has no point")
    x = np.array(xs, dtype=np.float64)
    y = np.array(ys, dtype=np.float64)
    vec_srs = layer.GetSpatialRef()
    lr_srs = srs_from_wkt(lr_wkt)
    if vec_srs is None or lr_srs is None:
        if vec_srs is not None or lr_srs is not None:
            logger.warning("%s or the LR image has no CRS: assuming both use the same", path)
    else:
        vec_srs = vec_srs.Clone()
        vec_srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        if not vec_srs.IsSame(lr_srs):
            logger.info("reprojecting %d points of %s to the LR image's CRS", len(x), path)
            with gdal_errors(f"{path}: cannot reproject the points to the LR image's CRS"):
                ct = osr.CoordinateTransformation(vec_srs, lr_srs)
                out = np.array(ct.TransformPoints(np.column_stack([x, y]).tolist()), dtype=np.float64)
            x, y = out[:, 0], out[:, 1]
    col = otb_pixel_index(x, lr.x0, lr.px) - size // 2
    row = otb_pixel_index(y, lr.y0, lr.py) - size // 2
    return Candidates(col, row, np.array(fids, dtype=np.int64), values, field_defn, no_geometry)


def _cast(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Convert to the output type: clip to its range (integers), then truncate, like OTB."""
    if arr.dtype == dtype:
        return arr
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        arr = np.clip(arr, max(info.min, -2.0 ** 63), min(info.max, 2.0 ** 63))
    return arr.astype(dtype)


def _write_patches(path: str, name: str, spill: np.ndarray, order: np.ndarray,
                   pixel: tuple[float, float], like: gdal.Dataset) -> None:
    """Write the patches kept (spill[order]) as an OTBTF patches image (geotransform as OTB writes it)
    to `path`, named `name` in the errors, with the metadata and band descriptions of the image `like`
    (e.g. B4, B3, B2, B8: train.py records them as the model's bands)."""
    n, size, _, nbands = len(order), spill.shape[1], spill.shape[2], spill.shape[3]
    gtype = gdal_array.NumericTypeCodeToGDALTypeCode(spill.dtype)
    options = ["BIGTIFF=IF_SAFER"]
    with gdal_errors(f"{name}: cannot create"):
        ds = gdal.GetDriverByName("GTiff").Create(path, size, n * size, nbands, gtype, options)
    px, py = pixel
    ds.SetGeoTransform((-0.5 * px, px, 0.0, -0.5 * py, 0.0, py))  # as OTB: pixel (0, 0) centred on (0, 0)
    copy_metadata(like, ds)
    per_chunk = max(1, WRITE_CHUNK_ROWS // size)
    try:
        with gdal_errors(f"{name}: writing failed"):
            for start in range(0, n, per_chunk):
                block = spill[order[start:start + per_chunk]]
                rows = block.reshape(-1, size, nbands)
                for b in range(nbands):
                    ds.GetRasterBand(b + 1).WriteArray(np.ascontiguousarray(rows[:, :, b]), 0, start * size)
            ds.FlushCache()
    finally:
        close_dataset(ds, f"{name}: writing failed")


def _write_centers(path: str, name: str, srs_wkt: str, xy: np.ndarray, patch_fids: np.ndarray,
                   cols: np.ndarray, rows: np.ndarray, field_defn: tuple[str, int] | None,
                   values: list) -> None:
    """Write the patch centres as a GeoPackage of points to `path`, named `name` in the errors."""
    with gdal_errors(f"{name}: cannot create"):
        ds = ogr.GetDriverByName("GPKG").CreateDataSource(path)
    try:
        with gdal_errors(f"{name}: writing failed"):
            _fill_centers(ds, srs_wkt, xy, patch_fids, cols, rows, field_defn, values)
    finally:
        close_dataset(ds, f"{name}: writing failed")


def _fill_centers(ds: ogr.DataSource, srs_wkt: str, xy: np.ndarray, patch_fids: np.ndarray, cols: np.ndarray,
                  rows: np.ndarray, field_defn: tuple[str, int] | None, values: list) -> None:
    # No R-tree index: TensorFlow, when loaded in the same process, brings an SQLite without the rtree
    # module that GDAL would then use ("no such module: rtree"); a few thousand points need no index.
    layer = ds.CreateLayer(CENTERS_LAYER, srs_from_wkt(srs_wkt), ogr.wkbPoint, options=["SPATIAL_INDEX=NO"])
    for name in ("patch", "lr_col", "lr_row"):
        layer.CreateField(ogr.FieldDefn(name, ogr.OFTInteger))
    layer.CreateField(ogr.FieldDefn("source_fid", ogr.OFTInteger64))
    if field_defn is not None:
        layer.CreateField(ogr.FieldDefn(field_defn[0], field_defn[1]))
    layer.StartTransaction()
    fdefn = layer.GetLayerDefn()
    for i in range(len(xy)):
        feat = ogr.Feature(fdefn)
        feat.SetField("patch", i)
        feat.SetField("lr_col", int(cols[i]))
        feat.SetField("lr_row", int(rows[i]))
        feat.SetField("source_fid", int(patch_fids[i]))
        if field_defn is not None and values[i] is not None:
            feat.SetField(field_defn[0], values[i])
        pt = ogr.Geometry(ogr.wkbPoint)
        pt.AddPoint_2D(float(xy[i, 0]), float(xy[i, 1]))
        feat.SetGeometry(pt)
        layer.CreateFeature(feat)
    layer.CommitTransaction()


@dataclass
class Inputs:
    """The opened LR and HR images.

    Attributes:
        lr, hr: their grids (HR: resampled with --resample_hr).
        lr_src, hr_src: their readers (LR: a DegradedSource with --self_supervised).
        lr_wkt: the LR CRS (WKT).
        offset: HR pixel offset of the LR grid's corner.
        cover: with --resample_hr, the HR image's extent in the LR CRS: the windows it does not contain
            are skipped (the warp's pixels there are not data); else None.
    """

    lr: Grid
    hr: Grid
    lr_src: Source | DegradedSource
    hr_src: Source
    lr_wkt: str
    offset: tuple[int, int]
    cover: ogr.Geometry | None


def _open_self_supervised(args: argparse.Namespace) -> Inputs:
    """Open the image of --self_supervised: it is the HR side; the LR side is it degraded and decimated."""
    ds = open_raster(args.lr_path)
    hr = Grid.of(ds, args.lr)
    lr = Grid(hr.x0, hr.y0, hr.px * SCALE, hr.py * SCALE, hr.width // SCALE, hr.height // SCALE, hr.srs)
    if lr.width < 1 or lr.height < 1:
        raise SR4RSError(f"{args.lr}: {hr.width} x {hr.height} pixels, too small to be decimated "
                         f"{SCALE} times")
    degradation = Degradation.mean() if args.degradation == "mean" else Degradation.gaussian(args.mtf)
    logger.info("self-supervised: LR side = %s degraded by a %s and decimated %d times (pixel size %g)",
                args.lr, degradation.description, SCALE, lr.px)
    nbands = ds.RasterCount
    lr_src = DegradedSource(Source(ds, args.lr, nbands, args.lr_nodata), degradation)
    return Inputs(lr, hr, lr_src, Source(ds, args.lr, nbands, args.lr_nodata), ds.GetProjection(), (0, 0),
                  None)


def _open_inputs(args: argparse.Namespace) -> Inputs:
    """Open LR and HR, check them against each other, resample HR when asked (or open the image of
    --self_supervised)."""
    if args.self_supervised:
        return _open_self_supervised(args)
    lr_ds = open_raster(args.lr_path)
    hr_ds = open_raster(args.hr)
    lr = Grid.of(lr_ds, args.lr)
    hr = Grid.of(hr_ds, args.hr)
    if lr_ds.RasterCount != hr_ds.RasterCount:
        raise SR4RSError(f"{args.hr}: {hr_ds.RasterCount} bands, but {args.lr} has {lr_ds.RasterCount} "
                         "(LR and HR need the same bands in the same order)")
    nbands = lr_ds.RasterCount
    lr_wkt = lr_ds.GetProjection()
    if lr.srs is not None and hr.srs is not None and not lr.srs.IsSame(hr.srs):
        problem = f"its CRS differs from {args.lr}'s"
    elif not (_same_size(hr.px * SCALE, lr.px) and _same_size(hr.py * SCALE, lr.py)):
        problem = (f"its pixel size ({hr.px:g}, {hr.py:g}) is not {args.lr}'s pixel size "
                   f"({lr.px:g}, {lr.py:g}) divided by {SCALE}")
    elif _hr_offset(lr, hr) is None:
        problem = (f"its pixel grid is not aligned with {args.lr}'s (the corners ({hr.x0:.6f}, {hr.y0:.6f}) "
                   f"and ({lr.x0:.6f}, {lr.y0:.6f}) are not a whole number of HR pixels apart)")
    else:
        problem = ""
    hr_path = args.hr
    if problem and not args.resample_hr:
        raise SR4RSError(f"{args.hr}: {problem}; use --resample_hr to resample it on the fly with GDAL")
    cover = _footprint(hr, lr, args.hr)
    if not cover.Intersects(_rectangle(*lr.bounds())):
        xmin, xmax, ymin, ymax = cover.GetEnvelope()
        extent = ", ".join(f"{v:.2f}" for v in lr.bounds())
        raise SR4RSError(f"{args.hr} does not overlap {args.lr} (extents in the LR image's CRS, xmin, ymin, "
                         f"xmax, ymax: HR {xmin:.2f}, {ymin:.2f}, {xmax:.2f}, {ymax:.2f}; LR {extent})")
    alpha = None
    if args.resample_hr:
        logger.info("resampling %s on the fly (%s) onto the LR grid refined %d times%s", args.hr,
                    args.resampling, SCALE, f" ({problem})" if problem else "")
        hr_ds = _warp_hr(hr_ds, lr, lr_wkt, args.hr_nodata, args.resampling)
        hr_path = f"{args.hr} (resampled)"
        hr = Grid.of(hr_ds, hr_path)
        alpha = nbands + 1 if hr_ds.RasterCount > nbands else None
    offset = _hr_offset(lr, hr)
    assert offset is not None
    return Inputs(lr, hr, Source(lr_ds, args.lr, nbands, args.lr_nodata),
                  Source(hr_ds, hr_path, nbands, args.hr_nodata, alpha), lr_wkt, offset,
                  cover if args.resample_hr else None)


def _skipped(counts: dict) -> str:
    """The patches skipped, e.g. "3 outside an image, 4 with nodata"."""
    uncovered = f"{counts['uncovered']} not covered by the HR image, " if counts["uncovered"] else ""
    return f"{counts['outside']} outside an image, {uncovered}{counts['nodata']} with nodata"


def extract(args: argparse.Namespace, centers_path: str) -> dict:
    """Do the extraction described by the parsed arguments; return the counts."""
    size = args.lr_patchsize
    hsize = SCALE * size
    inputs = _open_inputs(args)
    lr, hr, lr_src, hr_src, offset = inputs.lr, inputs.hr, inputs.lr_src, inputs.hr_src, inputs.offset
    lr_wkt = inputs.lr_wkt
    nbands = len(lr_src.bands)
    if args.vec:
        cand = _point_candidates(args.vec, args.layer, args.field, lr, lr_wkt, size)
    else:
        cand = _grid_candidates(lr, size, args.step)
    n_cand = len(cand.lr_col)
    hcol = offset[0] + SCALE * cand.lr_col
    hrow = offset[1] + SCALE * cand.lr_row
    inside = ((cand.lr_col >= 0) & (cand.lr_row >= 0) & (cand.lr_col + size <= lr.width)
              & (cand.lr_row + size <= lr.height) & (hcol >= 0) & (hrow >= 0)
              & (hcol + hsize <= hr.width) & (hrow + hsize <= hr.height))
    todo = np.flatnonzero(inside)
    if args.max_patches is not None and args.max_patches < len(todo):
        todo = np.random.default_rng(args.seed).permutation(todo)  # examined at random until enough
    limit = len(todo) if args.max_patches is None else min(args.max_patches, len(todo))
    logger.info("%d candidate patches (%d outside the LR or HR image)", n_cand, n_cand - len(todo))

    out_lr_type = numpy_type_of(gdal_type(args.encoding)) if args.encoding else lr_src.dtype
    out_hr_type = numpy_type_of(gdal_type(args.encoding)) if args.encoding else hr_src.dtype
    folder = os.path.dirname(os.path.realpath(args.out_lr))
    counts = {"candidates": n_cand, "outside": n_cand - len(todo), "uncovered": 0, "nodata": 0, "kept": 0,
              "not_examined": 0, "no_geometry": cand.no_geometry}
    with ExitStack() as stack:
        spill_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix=".extract_patches.", dir=folder))
        spill_paths = [os.path.join(spill_dir, "lr.raw"), os.path.join(spill_dir, "hr.raw")]
        kept: list[int] = []
        examined = 0
        # Patches kept are appended to raw files (RAM stays flat), then copied in order to the outputs.
        try:
            with open(spill_paths[0], "wb") as f_lr, open(spill_paths[1], "wb") as f_hr, \
                    tqdm(total=limit, unit="patch", desc="extracting", disable=args.quiet or None) as bar:
                for i in todo:
                    if len(kept) >= limit:
                        break
                    examined += 1
                    if inputs.cover is not None and not inputs.cover.Contains(_rectangle(
                            *lr.centre(cand.lr_col[i], cand.lr_row[i] + size),
                            *lr.centre(cand.lr_col[i] + size, cand.lr_row[i]))):
                        counts["uncovered"] += 1
                        continue
                    a = lr_src.read(cand.lr_col[i], cand.lr_row[i], size)
                    if not lr_src.valid(a, cand.lr_col[i], cand.lr_row[i]):
                        counts["nodata"] += 1
                        continue
                    b = hr_src.read(hcol[i], hrow[i], hsize)
                    if not hr_src.valid(b, hcol[i], hrow[i]):
                        counts["nodata"] += 1
                        continue
                    f_lr.write(_cast(a, out_lr_type).tobytes())
                    f_hr.write(_cast(b, out_hr_type).tobytes())
                    kept.append(int(i))
                    bar.update(1)
        except OSError as err:  # e.g. a full disk
            raise SR4RSError(f"{args.out_lr}: writing the patches to a temporary file in {folder} failed "
                             f"({os_error_text(err)})") from None
        counts["not_examined"] = len(todo) - examined
        counts["kept"] = n = len(kept)
        hint = "; ".join(h for h in (lr_src.nodata_hint("--lr_nodata", size),
                                     hr_src.nodata_hint("--hr_nodata", hsize)) if h)
        if not kept:
            raise SR4RSError(f"no patch to extract: {_skipped(counts)}; "
                             f"{hint or 'check that the points fall inside both images'}")
        if hint and 2 * counts["nodata"] > examined:
            logger.warning("%d of %d patches examined were rejected for nodata: %s", counts["nodata"],
                           examined, hint)
        kept_arr = np.array(kept, dtype=np.int64)
        order = np.argsort(kept_arr, kind="stable")  # original order of the points / grid
        chosen = kept_arr[order]
        cx, cy = lr.centre(cand.lr_col[chosen] + size / 2.0 + CENTRE_NUDGE,
                           cand.lr_row[chosen] + size / 2.0 + CENTRE_NUDGE)
        spill_lr = np.memmap(spill_paths[0], dtype=out_lr_type, mode="r", shape=(n, size, size, nbands))
        spill_hr = np.memmap(spill_paths[1], dtype=out_hr_type, mode="r", shape=(n, hsize, hsize, nbands))
        out_lr = stack.enter_context(atomic_output(args.out_lr))
        out_hr = stack.enter_context(atomic_output(args.out_hr))
        out_c = stack.enter_context(atomic_output(centers_path))
        _write_patches(out_lr, args.out_lr, spill_lr, order, (lr.px, lr.py), lr_src.ds)
        _write_patches(out_hr, args.out_hr, spill_hr, order, (hr.px, hr.py), hr_src.ds)
        _write_centers(out_c, centers_path, lr_wkt, np.column_stack([cx, cy]), cand.source_fid[chosen],
                       cand.lr_col[chosen], cand.lr_row[chosen], cand.field_info,
                       [cand.values[j] for j in chosen] if cand.field_info is not None else [])
        del spill_lr, spill_hr
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, extract, report."""
    args = build_parser().parse_args(argv)
    setup_logging(not args.quiet)
    centers = _check_args(args)
    with open_input(args.lr, bands=args.lr_bands, mask=args.lr_mask, epsg=args.epsg,
                    theia_reflectance=args.theia_reflectance) as image:
        args.lr_path = image.path  # what GDAL reads: --lr, or the VRT of a product's bands
        counts = extract(args, centers)
    logger.info("kept %d patches; skipped %s%s%s", counts["kept"], _skipped(counts),
                f", {counts['no_geometry']} features without geometry" if counts["no_geometry"] else "",
                f", {counts['not_examined']} not needed (--max_patches)" if counts["not_examined"] else "")
    logger.info("wrote %s, %s and %s", args.out_lr, args.out_hr, centers)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
