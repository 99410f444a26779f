"""A training part and a held-out test part of a real image, each as an HR/LR pair whose LR is the
image degraded and decimated by 4 (the Wald protocol): by default the mean of 4 x 4 HR blocks, or a
sensor-like Gaussian PSF (degradation.py, as `extract_patches.py --self_supervised`); the data of
`make demo` and of bench/bench_real.py.

The LR image is float32 (not rounded); an LR pixel whose PSF support holds a nodata pixel is NaN. The
test part is the last `test_share` of the image along its longer side; both parts keep the image's
georeferencing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from osgeo import gdal, gdal_array

from constants import SCALE
from degradation import Degradation, kernel_mtf
from raster import open_raster, read_array


@dataclass(frozen=True)
class Pairs:
    """GeoTIFFs of the two parts, and a sentence saying what the test part is."""

    train_hr: str
    train_lr: str
    test_hr: str
    test_lr: str
    description: str


def write(path: str, array: np.ndarray, grid: gdal.Dataset, pixel_factor: float,
          nodata: float | None) -> str:
    """Write [rows, cols, bands] as a GeoTIFF on grid's origin and CRS, pixels pixel_factor times larger,
    with grid's band descriptions."""
    mem = gdal_array.OpenArray(np.ascontiguousarray(np.moveaxis(array, -1, 0)))
    gt = grid.GetGeoTransform(can_return_null=True)
    if gt is not None:
        mem.SetGeoTransform((gt[0], gt[1] * pixel_factor, gt[2], gt[3], gt[4], gt[5] * pixel_factor))
        mem.SetProjection(grid.GetProjection())
    for b in range(array.shape[2]):
        mem.GetRasterBand(b + 1).SetDescription(grid.GetRasterBand(b + 1).GetDescription())
    gdal.Translate(path, mem, creationOptions=["COMPRESS=DEFLATE", "TILED=YES"], noData=nodata)
    return path


def make_pairs(image: str, folder: str, test_share: float = 0.25, use_nodata: bool = True,
               degradation: Degradation | None = None) -> Pairs:
    """Cut `image` into a training and a test part and make each part's LR by degrading the image.

    Args:
        image: the real HR image (any GDAL raster); cropped to whole 4 x 4 blocks.
        folder: where the four GeoTIFFs go (train_hr.tif, train_lr.tif, test_hr.tif, test_lr.tif).
        test_share: share of the image held out, at the end of its longer side.
        use_nodata: honour the image's nodata value (else every pixel is data, e.g. an 8-bit image
            whose declared nodata 255 is also saturated white).
        degradation: the PSF (default: the 4 x 4 block mean); the image is mirrored at its edges.
    """
    degradation = degradation or Degradation.mean()
    src = open_raster(image)
    hr = read_array(src)
    rows, cols = hr.shape[0] // SCALE * SCALE, hr.shape[1] // SCALE * SCALE
    hr = hr[:rows, :cols]
    nodata = src.GetRasterBand(1).GetNoDataValue() if use_nodata else None
    m = degradation.margin
    mirrored = np.pad(hr, ((m, m), (m, m), (0, 0)), mode="symmetric")
    lr, invalid = degradation.apply(mirrored, None if nodata is None else (mirrored == nodata).any(axis=-1))
    lr = lr.astype(np.float32)
    lr[invalid] = np.nan
    axis = 1 if cols >= rows else 0  # split across the longer side
    split = round(lr.shape[axis] * (1 - test_share))  # in LR pixels
    paths = {}
    for name, start, stop in (("train", 0, split), ("test", split, lr.shape[axis])):
        window = [0, 0, cols, rows]  # the part's HR window: x, y, width, height
        window[axis == 0] = SCALE * start
        window[2 + (axis == 0)] = SCALE * (stop - start)
        grid = gdal.Translate("", src, format="MEM", srcWin=window)
        hr_part = np.take(hr, range(SCALE * start, SCALE * stop), axis)
        lr_part = np.take(lr, range(start, stop), axis)
        paths[f"{name}_hr"] = write(os.path.join(folder, f"{name}_hr.tif"), hr_part, grid, 1, nodata)
        paths[f"{name}_lr"] = write(os.path.join(folder, f"{name}_lr.tif"), lr_part, grid, SCALE,
                                    float("nan") if nodata is not None else None)
    side = "columns" if axis == 1 else "rows"
    how = "4 x 4 mean"
    if degradation.sigma is not None:
        how = f"a Gaussian PSF of MTF {kernel_mtf(degradation.taps):.2g}"
    return Pairs(**paths, description=f"{os.path.basename(image)} ({cols} x {rows} px, LR by {how}); "
                                      f"test part: its last {test_share:.0%} {side}, never trained on")
