"""Evaluate a super-resolved image against a reference HR image, side by side with bicubic.

    python evaluate.py --sr SR.tif --ref HR.tif [--lr LR.tif] [--out metrics.json] [--png quicklook.png]
                       [--data_range R] [--nodata V] [--crop_border N]

Metrics are computed on the SR grid, over the area covered by every input, on pixels valid in every
input: PSNR, SSIM (Wang et al. 2004), per-band RMSE, SAM (spectral angle) and LR consistency (the
image degraded back to LR by a 4x4 mean versus the LR input). With `--lr`, the same metrics are
computed for GDAL's cubic upsampling of the LR input ("bicubic", what `gdalwarp -r cubic` gives), and
the table shows SR, bicubic and SR - bicubic. numpy + GDAL only (no TensorFlow): starts fast.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from osgeo import gdal, osr

import constants
import quicklook
from cli import ArgumentParser, run_cli
from errors import SR4RSError
from logs import get_logger, setup_logging
from metrics import SSIM_WINDOW, block_all, block_mean, mse, psnr_from_mse, rmse_per_band, sam, ssim_per_band
from products import open_input, sentinel2_band_names
from raster import (
    Grid,
    atomic_output,
    check_outputs,
    dilate,
    gdal_errors,
    nodata_value,
    open_raster,
    read_array,
)

if TYPE_CHECKING:
    from PIL import Image

logger = get_logger("evaluate")

BICUBIC_NOTE = "GDAL Warp resampleAlg=cubic of the LR image onto the SR grid (Float32, no rounding)"
# Geotransforms equal within this fraction of a pixel are the same grid.
GRID_TOLERANCE = 1e-3


# ---------------------------------------------------------------------------------------------
# Grids: the common area on the SR grid, the reference and the bicubic resampled onto it.
# ---------------------------------------------------------------------------------------------

def _grid_of(ds: gdal.Dataset, name: str) -> Grid | None:
    """The north-up grid of an input, None when it is not georeferenced."""
    if ds.GetGeoTransform(can_return_null=True) is None:
        return None
    return Grid.of(ds, f"{name} {ds.GetDescription()}")


def _same_srs(a: osr.SpatialReference | None, b: osr.SpatialReference | None) -> bool:
    return a is None or b is None or bool(a.IsSame(b))


def _bounds_in(grid: Grid, srs: osr.SpatialReference | None) -> tuple[float, float, float, float]:
    """Bounds of `grid` in the spatial reference `srs`."""
    if _same_srs(grid.srs, srs):
        return grid.bounds()
    transform = osr.CoordinateTransformation(grid.srs, srs)
    return transform.TransformBounds(*grid.bounds(), 21)


def _is_aligned(grid: Grid, target: Grid) -> bool:
    """True when `grid` has the pixel size of `target` and is offset by whole pixels."""
    if not _same_srs(grid.srs, target.srs):
        return False
    px, py = target.px, target.py
    if abs(grid.px - px) > GRID_TOLERANCE * abs(px) or abs(grid.py - py) > GRID_TOLERANCE * abs(py):
        return False
    dx = (grid.x0 - target.x0) / px
    dy = (grid.y0 - target.y0) / py
    return abs(dx - round(dx)) < GRID_TOLERANCE and abs(dy - round(dy)) < GRID_TOLERANCE


@dataclass
class Inputs:
    """The opened inputs, their grids, nodata values, and the evaluation window on the SR grid."""

    sr: gdal.Dataset
    ref: gdal.Dataset
    lr: gdal.Dataset | None
    grids: dict[str, Grid]
    nodata: dict[str, float | None]
    window: tuple[int, int, int, int] = (0, 0, 0, 0)  # xoff, yoff, xsize, ysize (SR pixels)
    notes: list[str] = field(default_factory=list)


def _pixel_grid(ds: gdal.Dataset, pixel: float) -> gdal.Dataset:
    """A VRT of a non-georeferenced image with pixel size `pixel` and origin (0, 0), north up."""
    return gdal.Translate("", ds, format="VRT",
                          outputBounds=[0.0, 0.0, ds.RasterXSize * pixel, -ds.RasterYSize * pixel])


def open_inputs(sr_path: str, ref_path: str, lr_path: str | None = None,
                nodata: float | None = None) -> Inputs:
    """Open the inputs and check they can be compared (band counts, georeferencing)."""
    datasets = {"SR": open_raster(sr_path), "reference": open_raster(ref_path)}
    if lr_path:
        datasets["LR"] = open_raster(lr_path)
    bands = {name: ds.RasterCount for name, ds in datasets.items()}
    if len(set(bands.values())) > 1:
        raise SR4RSError("band counts differ: " + ", ".join(f"{k} {v}" for k, v in bands.items())
                         + " (the images must have the same bands in the same order)")
    grids = {name: _grid_of(ds, name) for name, ds in datasets.items()}
    georeferenced = [name for name, g in grids.items() if g is not None]
    if georeferenced and len(georeferenced) < len(grids):
        missing = [name for name in grids if name not in georeferenced]
        raise SR4RSError(f"{', '.join(missing)} not georeferenced while {', '.join(georeferenced)} "
                         "is: georeference every input, or none (then they are compared pixel to pixel)")
    if not georeferenced:
        # Pixel to pixel: SR and reference share a grid, an LR pixel covers SCALE x SCALE SR pixels.
        sizes = {name: (ds.RasterXSize, ds.RasterYSize) for name, ds in datasets.items()}
        as_sr = {name: (w * constants.SCALE, h * constants.SCALE) if name == "LR" else (w, h)
                 for name, (w, h) in sizes.items()}
        if len(set(as_sr.values())) > 1:
            raise SR4RSError(
                "images without georeferencing are compared pixel to pixel, but their sizes do not match: "
                + ", ".join(f"{name} {w} x {h}" for name, (w, h) in sizes.items())
                + f" (the reference must have the SR image's size, the LR image 1/{constants.SCALE} of it; "
                "or georeference them)")
        datasets = {name: _pixel_grid(ds, constants.SCALE if name == "LR" else 1.0)
                    for name, ds in datasets.items()}
        grids = {name: _grid_of(ds, name) for name, ds in datasets.items()}
    values = {name: nodata_value(ds) for name, ds in datasets.items()}
    values["extra"] = nodata
    return Inputs(datasets["SR"], datasets["reference"], datasets.get("LR"), grids, values)


def common_window(inputs: Inputs, crop_border: int = 0) -> tuple[int, int, int, int]:
    """The SR pixel window (xoff, yoff, xsize, ysize) covered by every input, minus `crop_border`."""
    sr = inputs.grids["SR"]
    xmin, ymin, xmax, ymax = sr.bounds()
    for name, grid in inputs.grids.items():
        if name == "SR":
            continue
        b = _bounds_in(grid, sr.srs)
        if b[0] >= xmax or b[2] <= xmin or b[1] >= ymax or b[3] <= ymin:
            raise SR4RSError(f"the {name} image does not overlap the SR image")
        xmin, ymin, xmax, ymax = max(xmin, b[0]), max(ymin, b[1]), min(xmax, b[2]), min(ymax, b[3])
    eps = GRID_TOLERANCE
    col0 = max(0, math.ceil((xmin - sr.x0) / sr.px - eps))
    col1 = min(sr.width, math.floor((xmax - sr.x0) / sr.px + eps))
    row0 = max(0, math.ceil((ymax - sr.y0) / sr.py - eps))
    row1 = min(sr.height, math.floor((ymin - sr.y0) / sr.py + eps))
    col0, row0, col1, row1 = col0 + crop_border, row0 + crop_border, col1 - crop_border, row1 - crop_border
    if col1 - col0 < SSIM_WINDOW or row1 - row0 < SSIM_WINDOW:
        raise SR4RSError(f"the area common to every input is {max(col1 - col0, 0)} x {max(row1 - row0, 0)} "
                         f"SR pixels (after --crop_border {crop_border}): at least {SSIM_WINDOW} x "
                         f"{SSIM_WINDOW} are needed")
    return col0, row0, col1 - col0, row1 - row0


def _window_grid(inputs: Inputs) -> tuple[list[float], int, int]:
    """outputBounds [xmin, ymin, xmax, ymax] and size of the evaluation window, for gdal.Warp."""
    sr = inputs.grids["SR"]
    xoff, yoff, xsize, ysize = inputs.window
    bounds = [sr.x0 + xoff * sr.px, sr.y0 + (yoff + ysize) * sr.py, sr.x0 + (xoff + xsize) * sr.px,
              sr.y0 + yoff * sr.py]
    return bounds, xsize, ysize


def _warp(ds: gdal.Dataset, inputs: Inputs, algorithm: str, src_nodata: float | None) -> np.ndarray:
    """Resample `ds` onto the evaluation window with GDAL (Float32; uncovered pixels are NaN)."""
    bounds, xsize, ysize = _window_grid(inputs)
    srs = inputs.grids["SR"].srs
    options = {"format": "MEM", "outputBounds": bounds, "width": xsize, "height": ysize,
               "resampleAlg": algorithm, "outputType": gdal.GDT_Float32, "dstNodata": float("nan")}
    if srs is not None and ds.GetProjection():  # an input without a CRS is taken as in the SR's CRS
        options["dstSRS"] = srs.ExportToWkt()
    if src_nodata is not None:
        options["srcNodata"] = src_nodata
    with gdal_errors(f"{ds.GetDescription()}: resampling failed"):
        out = gdal.Warp("", ds, **options)
    return read_array(out)


def _valid(image: np.ndarray, *values: float | None) -> np.ndarray:
    """True where every band is finite and differs from each nodata value."""
    ok = np.isfinite(image).all(axis=2)
    for value in values:
        if value is not None and not math.isnan(value):
            ok &= ~(image == value).any(axis=2)
    return ok


def _src_nodata(inputs: Inputs, name: str) -> float | None:
    own, extra = inputs.nodata[name], inputs.nodata["extra"]
    if own is not None and extra is not None and own != extra:
        inputs.notes.append(f"{name}: resampled with its own nodata {own:g}; --nodata {extra:g} is applied "
                            "to the resampled values only")
    return own if own is not None else extra


def read_reference(inputs: Inputs) -> tuple[np.ndarray, np.ndarray, str | None]:
    """The reference on the evaluation window, its validity mask, and the resampling used (or None)."""
    sr, ref = inputs.grids["SR"], inputs.grids["reference"]
    xoff, yoff, xsize, ysize = inputs.window
    if _is_aligned(ref, sr):
        dx = round((sr.x0 - ref.x0) / sr.px)
        dy = round((sr.y0 - ref.y0) / sr.py)
        array = read_array(inputs.ref, xoff + dx, yoff + dy, xsize, ysize).astype(np.float32)
        return array, _valid(array, inputs.nodata["reference"], inputs.nodata["extra"]), None
    finer = abs(ref.px * ref.py) < abs(sr.px * sr.py) * (1 - GRID_TOLERANCE)
    algorithm = "average" if finer else "cubic"
    logger.info("The reference is not on the SR grid: resampling it onto the SR grid (%s)", algorithm)
    array = _warp(inputs.ref, inputs, algorithm, _src_nodata(inputs, "reference"))
    return array, _valid(array, inputs.nodata["extra"]), algorithm


def read_bicubic(inputs: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """GDAL's cubic upsampling of the LR image on the evaluation window, and its validity mask.

    An output pixel is invalid when an invalid LR pixel lies within the cubic kernel's support
    (2 LR pixels around it), even if GDAL produced a value there.
    """
    array = _warp(inputs.lr, inputs, "cubic", _src_nodata(inputs, "LR"))
    valid = _valid(array, inputs.nodata["extra"])
    lr = inputs.grids["LR"]
    bounds, xsize, ysize = _window_grid(inputs)
    sr_srs, lr_srs = inputs.grids["SR"].srs, lr.srs
    # Only the LR pixels under the window (+ the kernel's reach) are read.
    xmin, ymin, xmax, ymax = bounds
    if not _same_srs(sr_srs, lr_srs):
        xmin, ymin, xmax, ymax = osr.CoordinateTransformation(sr_srs, lr_srs).TransformBounds(*bounds, 21)
    c0 = max(0, math.floor((xmin - lr.x0) / lr.px) - 3)
    c1 = min(lr.width, math.ceil((xmax - lr.x0) / lr.px) + 3)
    r0 = max(0, math.floor((ymax - lr.y0) / lr.py) - 3)
    r1 = min(lr.height, math.ceil((ymin - lr.y0) / lr.py) + 3)
    lr_array = read_array(inputs.lr, c0, r0, c1 - c0, r1 - r0)
    lr_bad = dilate(~_valid(lr_array, inputs.nodata["LR"], inputs.nodata["extra"]), 2)
    if lr_bad.any():
        # LR pixel under the centre of each window pixel (in the LR image's own coordinates).
        px, py = inputs.grids["SR"].px, inputs.grids["SR"].py
        xs = bounds[0] + (np.arange(xsize) + 0.5) * px
        ys = bounds[3] + (np.arange(ysize) + 0.5) * py
        gx, gy = np.meshgrid(xs, ys)
        if not _same_srs(sr_srs, lr_srs):
            pts = osr.CoordinateTransformation(sr_srs, lr_srs).TransformPoints(
                np.stack([gx.ravel(), gy.ravel()], axis=1).tolist())
            pts = np.asarray(pts)
            gx, gy = pts[:, 0].reshape(gx.shape), pts[:, 1].reshape(gy.shape)
        cols = np.clip(np.floor((gx - lr.x0) / lr.px).astype(int) - c0, 0, c1 - c0 - 1)
        rows = np.clip(np.floor((gy - lr.y0) / lr.py).astype(int) - r0, 0, r1 - r0 - 1)
        valid &= ~lr_bad[rows, cols]
    return array, valid


def lr_blocks(inputs: Inputs) -> tuple[int, tuple[int, int, int, int], tuple[int, int]] | None:
    """How the evaluation window maps onto whole LR pixels, or None when the grids do not allow it.

    Returns (factor, (col, row, ncols, nrows) of the first whole block in window pixels and the
    number of blocks, (LR col, LR row) of that block).
    """
    sr, lr = inputs.grids["SR"], inputs.grids["LR"]
    if not _same_srs(sr.srs, lr.srs):
        return None
    fx, fy = lr.px / sr.px, lr.py / sr.py
    factor = round(fx)
    if factor < 1 or abs(fx - factor) > GRID_TOLERANCE * factor or abs(fy - factor) > GRID_TOLERANCE * factor:
        return None
    xoff, yoff, xsize, ysize = inputs.window
    # Window origin in LR pixel units.
    u = (sr.x0 + xoff * sr.px - lr.x0) / lr.px
    v = (sr.y0 + yoff * sr.py - lr.y0) / lr.py
    su, sv = u * factor, v * factor
    if abs(su - round(su)) > GRID_TOLERANCE or abs(sv - round(sv)) > GRID_TOLERANCE:
        return None
    col, row = (-round(su)) % factor, (-round(sv)) % factor
    ncols, nrows = (xsize - col) // factor, (ysize - row) // factor
    if ncols < 1 or nrows < 1:
        return None
    lr_col, lr_row = (round(su) + col) // factor, (round(sv) + row) // factor
    return factor, (col, row, ncols, nrows), (lr_col, lr_row)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

def _finite(value: float | None) -> float | None:
    """JSON-safe number: None for NaN and infinities (PSNR of identical images)."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def image_metrics(image: np.ndarray, reference: np.ndarray, mask: np.ndarray,
                  data_range: float) -> dict:
    """PSNR, SSIM (mean and per band), RMSE (all bands and per band), SAM (None for one band)."""
    rmse_bands = rmse_per_band(image, reference, mask)
    ssim_bands = ssim_per_band(image, reference, data_range, mask)
    mse_value = float(np.mean(rmse_bands ** 2))
    return {
        "psnr": psnr_from_mse(mse_value, data_range),
        "ssim": float(np.mean(ssim_bands)),
        "ssim_per_band": [float(v) for v in ssim_bands],
        "rmse": math.sqrt(mse_value),
        "rmse_per_band": [float(v) for v in rmse_bands],
        "sam": sam(image, reference, mask) if image.shape[2] > 1 else None,
    }


def lr_consistency(image: np.ndarray, mask: np.ndarray, lr: np.ndarray, lr_mask: np.ndarray,
                   factor: int, data_range: float) -> dict:
    """RMSE and PSNR between the image degraded by a factor x factor mean and the LR image."""
    degraded = block_mean(image, factor)
    valid = block_all(mask, factor) & lr_mask
    if not valid.any():
        return {"lr_rmse": None, "lr_psnr": None}
    value = mse(degraded, lr, valid)
    return {"lr_rmse": math.sqrt(value), "lr_psnr": psnr_from_mse(value, data_range)}


def _difference(a: dict, b: dict) -> dict:
    out = {}
    for key, value in a.items():
        other = b.get(key)
        if isinstance(value, list) and isinstance(other, list):
            out[key] = [x - y for x, y in zip(value, other, strict=True)]
        elif value is None or other is None or not (math.isfinite(value) and math.isfinite(other)):
            out[key] = None
        else:
            out[key] = value - other
    return out


@dataclass
class Arrays:
    """The images on the evaluation window (kept for the quicklook)."""

    sr: np.ndarray
    ref: np.ndarray
    bicubic: np.ndarray | None
    mask: np.ndarray


def evaluate_arrays(sr_path: str, ref_path: str, lr_path: str | None = None, data_range: float | None = None,
                    nodata: float | None = None, crop_border: int = 0) -> tuple[dict, Arrays]:
    """`evaluate`, also returning the images on the evaluation window."""
    if crop_border < 0:
        raise SR4RSError(f"--crop_border must be >= 0 (got {crop_border})")
    if data_range is not None and not data_range > 0:
        raise SR4RSError(f"--data_range must be > 0 (got {data_range})")
    inputs = open_inputs(sr_path, ref_path, lr_path, nodata)
    inputs.window = common_window(inputs, crop_border)
    xoff, yoff, xsize, ysize = inputs.window
    logger.info("Evaluating %d x %d SR pixels at offset (%d, %d)", xsize, ysize, xoff, yoff)

    sr = read_array(inputs.sr, xoff, yoff, xsize, ysize).astype(np.float32)
    mask = _valid(sr, inputs.nodata["SR"], inputs.nodata["extra"])
    ref, ref_valid, resampling = read_reference(inputs)
    mask &= ref_valid
    bicubic = None
    if inputs.lr is not None:
        logger.info("Bicubic: %s", BICUBIC_NOTE)
        bicubic, bicubic_valid = read_bicubic(inputs)
        mask &= bicubic_valid
    valid_pixels = int(mask.sum())
    if valid_pixels == 0:
        raise SR4RSError("no pixel is valid in every input over their common area (check the nodata values)")
    if data_range is None:
        values = ref[mask]
        data_range = float(values.max() - values.min())
        range_source = "reference max - min over the valid pixels"
        if data_range <= 0:
            raise SR4RSError("the reference is constant over the valid pixels: give --data_range")
    else:
        range_source = "--data_range"

    try:
        metrics = {"sr": image_metrics(sr, ref, mask, data_range)}
        if bicubic is not None:
            metrics["bicubic"] = image_metrics(bicubic, ref, mask, data_range)
    except ValueError as err:  # e.g. every valid spectrum is zero
        raise SR4RSError(f"cannot compute the metrics: {err}") from None
    lr_reference, lr_factor = None, None
    if inputs.lr is not None:
        blocks = lr_blocks(inputs)
        if blocks is None:
            inputs.notes.append("LR consistency not computed: the SR grid is not a whole subdivision of "
                                "the LR grid")
            for values in metrics.values():
                values.update({"lr_rmse": None, "lr_psnr": None})
        else:
            factor, (col, row, ncols, nrows), (lr_col, lr_row) = blocks
            lr_factor = factor
            lr = read_array(inputs.lr, lr_col, lr_row, ncols, nrows).astype(np.float32)
            lr_mask = _valid(lr, inputs.nodata["LR"], inputs.nodata["extra"])
            window = (slice(row, row + nrows * factor), slice(col, col + ncols * factor))
            block_mask = mask[window]
            metrics["sr"].update(lr_consistency(sr[window], block_mask, lr, lr_mask, factor, data_range))
            metrics["bicubic"].update(
                lr_consistency(bicubic[window], block_mask, lr, lr_mask, factor, data_range))
            lr_reference = lr_consistency(ref[window], block_mask, lr, lr_mask, factor, data_range)
    if "bicubic" in metrics:
        metrics["sr_minus_bicubic"] = _difference(metrics["sr"], metrics["bicubic"])

    sr_grid = inputs.grids["SR"]
    result = {
        "sr": sr_path,
        "reference": ref_path,
        "lr": lr_path,
        "window": {"xoff": xoff, "yoff": yoff, "xsize": xsize, "ysize": ysize, "crop_border": crop_border},
        "pixel_size": [sr_grid.px, -sr_grid.py],
        "bands": sr.shape[2],
        "valid_pixels": valid_pixels,
        "nodata": {"sr": inputs.nodata["SR"], "reference": inputs.nodata["reference"],
                   "lr": inputs.nodata.get("LR"), "extra": inputs.nodata["extra"]},
        "data_range": data_range,
        "data_range_source": range_source,
        "reference_resampling": resampling,
        "bicubic": BICUBIC_NOTE if bicubic is not None else None,
        "metrics": metrics,
        "lr_factor": lr_factor,
        "lr_consistency_reference": lr_reference,
        "notes": inputs.notes,
    }
    for note in inputs.notes:
        logger.warning("%s", note)
    return result, Arrays(sr, ref, bicubic, mask)


def evaluate(sr_path: str, ref_path: str, lr_path: str | None = None, data_range: float | None = None,
             nodata: float | None = None, crop_border: int = 0, png: str | None = None) -> dict:
    """Compare the SR image (and, with `lr_path`, the bicubic upsampling of LR) with the reference.

    Args:
        sr_path: super-resolved image (its grid is the evaluation grid).
        ref_path: reference HR image (resampled onto the SR grid when its grid differs).
        lr_path: the LR input of the super-resolution (adds the bicubic column and LR consistency).
        data_range: PSNR/SSIM data range (default: the reference's max - min over valid pixels).
        nodata: value excluded in every input, on top of each file's own nodata.
        crop_border: SR pixels left out on each side of the common area.
        png: write a side-by-side quicklook there (needs Pillow: checked before anything is computed).

    Returns:
        a JSON-ready dict: `metrics` holds `sr`, `bicubic`, `sr_minus_bicubic` (PSNR of identical
        images is +inf in memory, null in the JSON file).
    """
    if png:
        quicklook.require_pillow()
        check_outputs({"png": png}, {"sr_path": sr_path, "ref_path": ref_path, "lr_path": lr_path})
    result, arrays = evaluate_arrays(sr_path, ref_path, lr_path, data_range, nodata, crop_border)
    if png:
        write_outputs(result, arrays, None, png)
    return result


# ---------------------------------------------------------------------------------------------
# Output: table, JSON, quicklook PNG (quicklook.py)
# ---------------------------------------------------------------------------------------------

ROWS = [  # key, label, format, better
    ("psnr", "PSNR (dB)", "{:.3f}", "higher"),
    ("ssim", "SSIM", "{:.4f}", "higher"),
    ("rmse", "RMSE (all bands)", "{:.4g}", "lower"),
    ("rmse_per_band", "RMSE band {}", "{:.4g}", "lower"),
    ("sam", "SAM (degrees)", "{:.3f}", "lower"),
    ("lr_rmse", "LR consistency RMSE", "{:.4g}", "lower"),
    ("lr_psnr", "LR consistency PSNR (dB)", "{:.3f}", "higher"),
]


def _cell(value: float | None, fmt: str, signed: bool = False) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return (fmt.replace("{:", "{:+") if signed else fmt).format(value)


def format_table(result: dict) -> str:
    """The metrics as a text table: rows = metrics, columns = SR, bicubic, SR - bicubic."""
    metrics = result["metrics"]
    columns = [("SR", "sr", False)]
    if "bicubic" in metrics:
        columns += [("bicubic", "bicubic", False), ("SR - bicubic", "sr_minus_bicubic", True)]
    lines = []
    signs = [signed for _, _, signed in columns]
    for key, label, fmt, better in ROWS:
        values = [metrics[col].get(key) for _, col, _ in columns]
        if all(v is None for v in values):
            continue
        if key == "rmse_per_band":
            for b in range(len(values[0])):
                cells = [_cell(v[b], fmt, s) for v, s in zip(values, signs, strict=True)]
                lines.append((label.format(b + 1), better, cells))
        else:
            lines.append((label, better, [_cell(v, fmt, s) for v, s in zip(values, signs, strict=True)]))
    width = max(len(label) for label, _, _ in lines) + 2
    header = f"{'metric':<{width}}{'better':<8}" + "".join(f"{name:>14}" for name, _, _ in columns)
    out = [header, "-" * len(header)]
    for label, better, cells in lines:
        out.append(f"{label:<{width}}{better:<8}" + "".join(f"{c:>14}" for c in cells))
    w = result["window"]
    out.append("")
    out.append(f"{w['xsize']} x {w['ysize']} SR pixels, {result['bands']} band(s), {result['valid_pixels']} "
               f"valid pixels; data range {result['data_range']:g} ({result['data_range_source']})")
    if result["reference_resampling"]:
        out.append(f"reference resampled onto the SR grid ({result['reference_resampling']})")
    if result["bicubic"]:
        out.append(f"bicubic: {result['bicubic']}")
    else:
        out.append("no bicubic column: give the LR input with --lr to compare with bicubic")
    for note in result["notes"]:
        out.append(f"note: {note}")
    reference = result.get("lr_consistency_reference")
    if reference and reference["lr_rmse"] is not None:
        f = result["lr_factor"]
        out.append(f"LR consistency of the reference itself (its {f}x{f} mean vs LR): "
                   f"RMSE {reference['lr_rmse']:.4g}")
    return "\n".join(out)


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float | np.floating):
        return _finite(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_json(result: dict, path: str) -> None:
    """Write the result as JSON (infinite PSNR is written as null)."""
    with open(path, "w") as f:
        json.dump(_json_safe(result), f, indent=2, allow_nan=False)
        f.write("\n")


def quicklook_image(arrays: Arrays, result: dict) -> Image.Image:
    """Side by side, the same crop: bicubic (when there is one) | SR | HR, PSNR in the labels.

    Args:
        arrays: the images on the evaluation window (`evaluate_arrays`).
        result: the metrics (`evaluate_arrays`), for the labels.
    """
    panels = []
    for label, key, image in (("bicubic", "bicubic", arrays.bicubic), ("SR", "sr", arrays.sr),
                              ("HR reference", None, arrays.ref)):
        if image is None:
            continue
        if key is not None:
            label += ", PSNR " + _cell(result["metrics"][key]["psnr"], "{:.2f}") + " dB"
        panels.append((label, image))
    return quicklook.quicklook_image(panels, arrays.ref, arrays.mask)


def write_outputs(result: dict, arrays: Arrays, out: str | None, png: str | None) -> None:
    """Write the JSON (`out`) and the quicklook PNG (`png`), each optional, under temporary names renamed
    only when both are written: a failure leaves neither (nor any temporary file).

    Args:
        result: the metrics (`evaluate_arrays`).
        arrays: the images on the evaluation window (`evaluate_arrays`).
        out: the JSON file, or None.
        png: the PNG file, or None.
    """
    image = quicklook_image(arrays, result) if png else None
    with ExitStack() as outputs:
        if out:
            write_json(result, outputs.enter_context(atomic_output(out)))
        if png:
            image.save(outputs.enter_context(atomic_output(png)), format="PNG")


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line of evaluate.py."""
    parser = ArgumentParser(
        description="Compare a super-resolved image with a reference HR image (and with the bicubic "
                    "upsampling of the LR input): PSNR, SSIM, RMSE, SAM, LR consistency.")
    parser.add_argument("--sr", required=True, help="super-resolved image (the evaluation grid)")
    parser.add_argument("--ref", required=True,
                        help="reference HR image (resampled onto the SR grid if needed)")
    parser.add_argument("--lr", help="LR input of the super-resolution (a raster, or the Sentinel-2 product "
                                     "sr.py read, in the band order of --sr's band names): adds bicubic and "
                                     "LR consistency")
    parser.add_argument("--out", help="write the metrics to this JSON file")
    parser.add_argument("--png", help="write a side-by-side quicklook (bicubic | SR | HR) to this PNG file")
    parser.add_argument("--data_range", type=float,
                        help="PSNR/SSIM data range (default: reference max - min over valid pixels)")
    parser.add_argument("--nodata", type=float,
                        help="value excluded in every input (besides their own nodata)")
    parser.add_argument("--crop_border", type=int, default=0,
                        help="SR pixels left out on each side of the common area (default 0)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate, print the table, write the JSON and PNG outputs."""
    args = parse_args(argv)
    if args.png:
        quicklook.require_pillow("--png")
    setup_logging()
    check_outputs({"--out": args.out, "--png": args.png},
                  {"--sr": args.sr, "--ref": args.ref, "--lr": args.lr})
    with ExitStack() as stack:
        lr = None
        if args.lr:  # a product is read as sr.py read it, in the bands of the SR image
            lr = stack.enter_context(open_input(args.lr, default_bands=sentinel2_band_names(args.sr))).path
        result, arrays = evaluate_arrays(args.sr, args.ref, lr, args.data_range, args.nodata,
                                         args.crop_border)
        result["lr"] = args.lr  # the user's input, not the VRT read
    print(format_table(result))
    write_outputs(result, arrays, args.out, args.png)
    for option, path in (("Metrics", args.out), ("Quicklook", args.png)):
        if path:
            logger.info("%s written to %s", option, path)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
