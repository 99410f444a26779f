"""Sensor-like degradation of an image for self-supervised training (Wald protocol): blur it with a PSF,
then decimate it SCALE times, so that a model learns from (degraded image -> image) pairs what it will do
on (image -> SR image). Used by `extract_patches.py --self_supervised` (docs/DESIGN.md §7).

Phase: the LR pixel (i, j) covers the image pixels [4i, 4i + 4) x [4j, 4j + 4); the PSF is centred on the
centre of that block (pixel coordinate 4i + 1.5 when pixel k is centred on k), so the LR grid is the
image's grid with a 4 times larger pixel size and the same origin. The 1-D taps of the separable PSF are
therefore at half-integer offsets from its centre: SCALE + 2 * margin taps, the first one on the image row
(column) 4i - margin.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from constants import SCALE
from errors import SR4RSError

DEGRADATIONS = ("gaussian", "mean")
DEFAULT_MTF = 0.3  # about Sentinel-2's MTF at its Nyquist frequency (it varies with the band)
# The LR grid's Nyquist frequency, in cycles per image (HR) pixel.
LR_NYQUIST = 1.0 / (2 * SCALE)
# Gaussian taps reach this many sigmas from the PSF's centre.
TRUNCATE = 4.0
# The highest MTF at LR_NYQUIST of a non-negative PSF centred between two pixels (SCALE is even): the
# average of those two pixels, cos(pi / (2 * SCALE)) = 0.924 for SCALE = 4.
MAX_MTF = math.cos(2 * math.pi * LR_NYQUIST * 0.5)
# Below this MTF, the truncated taps cannot reach it (and no imaging sensor is that blurred).
MIN_MTF = 0.01


def tap_offsets(n_taps: int) -> np.ndarray:
    """Offsets of n_taps taps from the PSF's centre, in image pixels (-1.5, -0.5, 0.5, 1.5 for 4 taps)."""
    return np.arange(n_taps, dtype=np.float64) - (n_taps - 1) / 2.0


def kernel_mtf(taps: np.ndarray, frequency: float = LR_NYQUIST) -> float:
    """The MTF of a symmetric 1-D kernel (its frequency response) at a frequency.

    Args:
        taps: the kernel, symmetric about its centre (tap_offsets).
        frequency: cycles per image pixel (default: the LR Nyquist frequency, 1 / (2 * SCALE)).
    """
    taps = np.asarray(taps, dtype=np.float64)
    return float(np.sum(taps * np.cos(2 * math.pi * frequency * tap_offsets(len(taps)))) / np.sum(taps))


def gaussian_sigma(mtf: float) -> float:
    """The std (image pixels) of the continuous Gaussian PSF whose MTF at the LR Nyquist frequency is `mtf`.

    A Gaussian of std sigma has MTF(f) = exp(-2 pi^2 sigma^2 f^2); at f = 1 / (2 * SCALE):
    sigma = sqrt(-2 ln(mtf)) / (2 pi f) = SCALE * sqrt(-2 ln(mtf)) / pi (1.976 for mtf 0.3).

    Args:
        mtf: in (0, 1).
    """
    return math.sqrt(-2.0 * math.log(mtf)) / (2 * math.pi * LR_NYQUIST)


def gaussian_taps(sigma: float, n_taps: int) -> np.ndarray:
    """Sampled Gaussian of std `sigma` on n_taps half-integer offsets, normalised to a sum of 1."""
    x = tap_offsets(n_taps)
    taps = np.exp(-0.5 * (x ** 2 - np.min(x ** 2)) / sigma ** 2)  # the central taps are 1: no underflow
    return taps / taps.sum()


def check_mtf(mtf: float) -> None:
    """SR4RSError unless a Gaussian PSF centred between pixels can have this MTF at the LR Nyquist
    frequency: MIN_MTF <= mtf < MAX_MTF."""
    if not 0.0 < mtf < 1.0:
        raise SR4RSError(f"--mtf must be in (0, 1) (got {mtf:g}): the sensor's MTF at the LR Nyquist "
                         f"frequency, e.g. {DEFAULT_MTF} for Sentinel-2")
    if mtf >= MAX_MTF:
        raise SR4RSError(f"--mtf {mtf:g} is too high: a PSF centred between two pixels (the centre of each "
                         f"{SCALE}x{SCALE} block) has an MTF below {MAX_MTF:.4f} at the LR Nyquist frequency")
    if mtf < MIN_MTF:
        raise SR4RSError(f"--mtf {mtf:g} is too low: the lowest MTF supported is {MIN_MTF:g} (imaging "
                         "sensors typically have 0.1 .. 0.5 at their Nyquist frequency)")


@dataclass(frozen=True, eq=False)  # eq=False: numpy taps
class Degradation:
    """A separable PSF followed by a decimation by SCALE.

    Attributes:
        taps: the 1-D PSF, SCALE + 2 * margin taps summing to 1, symmetric about their centre.
        description: what it is, for the logs.
        sigma: the Gaussian's std in image pixels (None for the block mean).
    """

    taps: np.ndarray
    description: str
    sigma: float | None = None

    @classmethod
    def gaussian(cls, mtf: float = DEFAULT_MTF) -> Degradation:
        """A Gaussian PSF whose sampled, truncated taps have exactly the MTF `mtf` at the LR Nyquist
        frequency (sigma solved numerically; close to gaussian_sigma(mtf) except near MAX_MTF, where the
        sampling matters).

        Args:
            mtf: in [MIN_MTF, MAX_MTF).
        """
        check_mtf(mtf)
        sigma0 = gaussian_sigma(mtf)
        half = max(SCALE // 2, math.ceil(TRUNCATE * sigma0 + 0.5))
        n_taps = 2 * half
        # The MTF of the taps decreases from MAX_MTF (sigma -> 0) as sigma grows, up to half / 2 at least.
        lo, hi = 1e-3, max(2.0 * sigma0, 1.0)
        if not kernel_mtf(gaussian_taps(hi, n_taps)) < mtf < kernel_mtf(gaussian_taps(lo, n_taps)):
            raise SR4RSError(f"--mtf {mtf:g}: no Gaussian PSF found")  # not expected (tested)
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            if kernel_mtf(gaussian_taps(mid, n_taps)) > mtf:
                lo = mid
            else:
                hi = mid
        sigma = 0.5 * (lo + hi)
        return cls(gaussian_taps(sigma, n_taps),
                   f"Gaussian PSF (MTF {mtf:g} at the LR Nyquist frequency, sigma {sigma:.3f} pixels, "
                   f"{n_taps} x {n_taps} taps)", sigma)

    @classmethod
    def mean(cls) -> Degradation:
        """The mean of each SCALE x SCALE block (MTF 0.65 at the LR Nyquist frequency)."""
        return cls(np.full(SCALE, 1.0 / SCALE), f"{SCALE}x{SCALE} block mean")

    @property
    def margin(self) -> int:
        """Image pixels the PSF reaches beyond each side of a SCALE x SCALE block."""
        return (len(self.taps) - SCALE) // 2

    def apply(self, block: np.ndarray, invalid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Degrade a block of the image that includes the PSF's margins.

        Args:
            block: [rows, cols, bands], the image pixels [4 i0 - margin, 4 (i0 + n) + margin) vertically
                (same horizontally); extra rows or columns at the bottom or right are ignored.
            invalid: [rows, cols], True on nodata pixels (NaN pixels are always nodata), or None.

        Returns:
            the LR pixels [n, p, bands] (float64, 0 where invalid) and their mask [n, p], True where the
            PSF's support holds a nodata pixel.
        """
        m = self.margin
        n = (block.shape[0] - 2 * m) // SCALE
        p = (block.shape[1] - 2 * m) // SCALE
        if n < 1 or p < 1:
            raise ValueError(f"a block of {block.shape[:2]} pixels is too small for margins of {m} pixels")
        values = block.astype(np.float64)
        bad = np.zeros(block.shape[:2], dtype=bool) if invalid is None else np.asarray(invalid, dtype=bool)
        if np.issubdtype(block.dtype, np.floating):
            bad = bad | ~np.isfinite(values).all(axis=-1)
        values[bad] = 0.0
        rows = np.zeros((n,) + values.shape[1:])
        rows_bad = np.zeros((n, bad.shape[1]), dtype=bool)
        for t, weight in enumerate(self.taps):  # along the rows: LR row i sums image rows 4i - m + t
            rows += weight * values[t:t + SCALE * (n - 1) + 1:SCALE]
            rows_bad |= bad[t:t + SCALE * (n - 1) + 1:SCALE]
        out = np.zeros((n, p) + values.shape[2:])
        out_bad = np.zeros((n, p), dtype=bool)
        for t, weight in enumerate(self.taps):  # then along the columns
            out += weight * rows[:, t:t + SCALE * (p - 1) + 1:SCALE]
            out_bad |= rows_bad[:, t:t + SCALE * (p - 1) + 1:SCALE]
        out[out_bad] = 0.0
        return out, out_bad


def to_image_type(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Degraded values in the image's data type: rounded to the nearest integer (half to even) and clipped
    to the type's range for integer types, as a real LR product of that type would store them.

    Args:
        values: float values.
        dtype: the image's numpy type.
    """
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def read_mirrored(read: Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray]], x: int, y: int,
                  width: int, height: int, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Read a window that may go beyond the image's edges: the pixels outside are the image mirrored about
    its edges (the edge pixel repeated: ... b a | a b ...), with their validity.

    Args:
        read: reads (x, y, width, height) inside the image, returns its pixels [rows, cols, bands] and
            their invalid mask [rows, cols].
        x, y: the window's top-left pixel (may be negative).
        width, height: the window's size.
        image_size: (columns, rows) of the image; the window must overlap it.
    """
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + width, image_size[0]), min(y + height, image_size[1])
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"window ({x}, {y}, {width}, {height}) outside the image {image_size}")
    arr, bad = read(x0, y0, x1 - x0, y1 - y0)
    pads = ((y0 - y, y + height - y1), (x0 - x, x + width - x1))
    if not any(any(p) for p in pads):
        return arr, bad
    return np.pad(arr, pads + ((0, 0),), mode="symmetric"), np.pad(bad, pads, mode="symmetric")
