"""Synthetic demo scene: a 2.5 m RGBN landscape (HR) and its 10 m sensor degradation (LR).

    python -m demo.scene OUT_DIR [--size 2048] [--seed 0] [--png quicklook.png]   (from the repository root)

Nothing is downloaded. The HR image is painted with vectorised numpy: agricultural parcels in blocks
of different orientations (green crops with tramlines, ploughed soil, stubble with harvest swaths,
meadows, row crops, orchards, fallow), field margins and hedgerows, roads and tracks with sharp
edges, a meandering river with riparian trees, forest patches with a crown-scale texture, villages
and farms (gabled roofs, shadows cast to the north-west), the HR sensor's own slight blur, and
signal-dependent sensor noise. Values are int16 surface reflectance x 10000 (bands R, G, B, NIR).

The LR image is what a 10 m sensor would record: the HR image blurred by a Gaussian PSF of sigma
`PSF_SIGMA_LR` LR pixels centred on each LR pixel, then sampled every 4 HR pixels. The grids are
aligned: one LR pixel covers exactly 4 x 4 HR pixels, same origin, EPSG:32631. No nodata is declared:
every pixel of both images is valid.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence

import numpy as np
from osgeo import gdal, osr

import constants
from cli import run_cli
from errors import SR4RSError
from logs import get_logger, setup_logging
from metrics import block_mean
from quicklook import side_by_side, stretch, write_png
from raster import atomic_output, dilate

logger = get_logger("demo.scene")

HR_PIXEL = 2.5  # metres
LR_PIXEL = HR_PIXEL * constants.SCALE
EPSG = 32631  # WGS 84 / UTM zone 31N
ORIGIN = (620000.0, 4840000.0)  # upper-left corner (south-west France)
BANDS = ("Red", "Green", "Blue", "NIR")
MAX_VALUE = 10000
HR_NAME = "demo_hr_2.5m.tif"
LR_NAME = "demo_lr_10m.tif"
DEFAULT_SIZE = 2048
MIN_SIZE = 64

# Sensor model. Total PSF of the 10 m sensor: Gaussian, sigma in LR pixels. Its MTF at the LR
# Nyquist frequency is exp(-pi^2 sigma^2 / 2) = 0.225 for sigma = 0.55: the middle of the range
# Sentinel-2's 10 m bands are specified and measured in (0.15-0.30).
PSF_SIGMA_LR = 0.55
PSF_TRUNCATE = 4.0  # kernel radius, in sigmas
HR_PSF_SIGMA = 0.5  # HR pixels: the HR instrument's own blur (its MTF at HR Nyquist is 0.29)
NOISE_FLOOR = 20.0  # sensor noise std = sqrt(floor^2 + (gain * signal)^2), reflectance x 10000
NOISE_GAIN = 0.008

# Spectra (R, G, B, NIR), reflectance x 10000.
VEGETATION = np.array([300, 700, 350, 4500], dtype=np.float32)
DRY_VEGETATION = np.array([1900, 1650, 1100, 2800], dtype=np.float32)
SOIL = np.array([2100, 1750, 1350, 2600], dtype=np.float32)
WATER = np.array([320, 520, 560, 220], dtype=np.float32)
ASPHALT = np.array([1000, 1000, 980, 1250], dtype=np.float32)
GRAVEL = np.array([2600, 2400, 2100, 2900], dtype=np.float32)
TILE_ROOF = np.array([2400, 1300, 950, 2400], dtype=np.float32)
GREY_ROOF = np.array([1500, 1500, 1550, 1700], dtype=np.float32)
BRIGHT_ROOF = np.array([3300, 3250, 3150, 3450], dtype=np.float32)
BROADLEAF = np.array([260, 560, 290, 3900], dtype=np.float32)
CONIFER = np.array([180, 380, 200, 2400], dtype=np.float32)
# Diffuse light scattered from the surroundings: keeps the darkest pixels (shaded gaps) above 0.
ADJACENCY = np.array([60, 70, 90, 50], dtype=np.float32)
SHADOW = np.array([0.30, 0.33, 0.42, 0.25], dtype=np.float32)  # sky light is bluish, NIR darkest

# Parcel classes and their frequencies.
GREEN_CROP, BARE_SOIL, STUBBLE, MEADOW, ROW_CROP, ORCHARD, FALLOW = range(7)
CLASS_FREQUENCIES = (0.28, 0.20, 0.17, 0.15, 0.10, 0.04, 0.06)


def _m(metres: float) -> float:
    """A length in HR pixels."""
    return metres / HR_PIXEL


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------

def upsample_linear(field: np.ndarray, factor: int, size: int) -> np.ndarray:
    """Bilinear upsampling of a square field by `factor` (pixel-centre aligned), cropped to `size`."""
    out = field
    for axis in (0, 1):
        n = out.shape[axis]
        pos = np.clip((np.arange(size, dtype=np.float32) + 0.5) / factor - 0.5, 0, n - 1)
        i0 = np.minimum(pos.astype(np.int64), n - 2)
        w = pos - i0
        shape = [1, 1]
        shape[axis] = size
        w = w.reshape(shape)
        out = np.take(out, i0, axis=axis) * (1 - w) + np.take(out, i0 + 1, axis=axis) * w
    return out.astype(np.float32)


def smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian random field (zero mean, unit std), correlation length `sigma` pixels (FFT filter).

    Broad fields are made on a coarser grid (at least 3 samples per sigma) and upsampled bilinearly.
    """
    factor = 1
    while sigma / (factor * 2) >= 3 and size // (factor * 2) >= 16:
        factor *= 2
    if factor > 1:
        coarse = smooth_noise(rng, -(-size // factor) + 1, sigma / factor)
        field = upsample_linear(coarse, factor, size)
        field -= field.mean()
        return field / max(float(field.std()), 1e-12)
    white = rng.standard_normal((size, size))
    freq_y = np.fft.fftfreq(size)[:, np.newaxis]
    freq_x = np.fft.rfftfreq(size)[np.newaxis, :]
    transfer = np.exp(-2.0 * (math.pi * sigma) ** 2 * (freq_y ** 2 + freq_x ** 2))
    field = np.fft.irfft2(np.fft.rfft2(white) * transfer, s=(size, size))
    field -= field.mean()
    return (field / max(field.std(), 1e-12)).astype(np.float32)


def nearest_two(seeds: np.ndarray, size: int, tile: int = 128) -> tuple[np.ndarray, ...]:
    """For every pixel of a size x size grid: the nearest and second nearest seeds [k, (x, y)] and
    their squared distances. Tile by tile, with only the seeds that can win inside the tile."""
    id1 = np.zeros((size, size), dtype=np.int32)
    id2 = id1.copy()
    d1 = np.zeros((size, size), dtype=np.float32)
    d2 = d1.copy()
    for y0 in range(0, size, tile):
        for x0 in range(0, size, tile):
            y1, x1 = min(size, y0 + tile), min(size, x0 + tile)
            # Nearest and farthest distances from each seed to the tile rectangle.
            near_x = np.maximum(np.maximum(x0 - seeds[:, 0], seeds[:, 0] - (x1 - 1)), 0)
            near_y = np.maximum(np.maximum(y0 - seeds[:, 1], seeds[:, 1] - (y1 - 1)), 0)
            far_x = np.maximum(np.abs(seeds[:, 0] - x0), np.abs(seeds[:, 0] - (x1 - 1)))
            far_y = np.maximum(np.abs(seeds[:, 1] - y0), np.abs(seeds[:, 1] - (y1 - 1)))
            near, far = near_x ** 2 + near_y ** 2, far_x ** 2 + far_y ** 2
            candidates = np.nonzero(near <= np.partition(far, 1)[1])[0]
            yy = np.arange(y0, y1, dtype=np.float32)[:, np.newaxis]
            xx = np.arange(x0, x1, dtype=np.float32)[np.newaxis, :]
            best1 = np.full((y1 - y0, x1 - x0), np.inf, dtype=np.float32)
            best2, k1, k2 = best1.copy(), np.zeros(best1.shape, np.int32), np.zeros(best1.shape, np.int32)
            for k in candidates:
                d = (yy - np.float32(seeds[k, 1])) ** 2 + (xx - np.float32(seeds[k, 0])) ** 2
                first = d < best1
                second = ~first & (d < best2)
                best2 = np.where(first, best1, np.where(second, d, best2))
                k2 = np.where(first, k1, np.where(second, k, k2))
                best1 = np.where(first, d, best1)
                k1 = np.where(first, k, k1)
            id1[y0:y1, x0:x1], id2[y0:y1, x0:x1], d1[y0:y1, x0:x1], d2[y0:y1, x0:x1] = k1, k2, best1, best2
    return id1, id2, d1, d2


def coverage(distance: np.ndarray, width: float | np.ndarray) -> np.ndarray:
    """Fraction of a pixel covered by a band of `width` pixels at `distance` from its axis."""
    return np.clip(np.asarray(width, dtype=np.float32) / 2 + 0.5 - distance, 0.0, 1.0)


def paint(image: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """image = image (1 - alpha) + alpha colour, in place (colour: [4] or [rows, cols, 4])."""
    a = alpha[..., np.newaxis]
    image *= 1.0 - a
    image += a * colour


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of [rows, cols, bands] (symmetric padding)."""
    radius = max(1, int(math.ceil(PSF_TRUNCATE * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-t * t / (2 * sigma * sigma))
    w /= w.sum()
    out = image
    for axis in (0, 1):
        pad = [(0, 0)] * image.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="symmetric")
        n = out.shape[axis]
        acc = np.zeros_like(out, dtype=np.float32)
        for k, wk in enumerate(w):
            acc += np.float32(wk) * np.take(padded, np.arange(k, k + n), axis=axis)
        out = acc
    return out


def psf_weights(factor: int = constants.SCALE, sigma_lr: float = PSF_SIGMA_LR) -> tuple[np.ndarray, int]:
    """1-D PSF weights over HR pixels for one LR pixel, and the offset of the first tap.

    LR pixel i covers HR pixels factor*i .. factor*i + factor - 1; its centre is at HR position
    factor*i + (factor - 1) / 2 (pixel-centre coordinates), where the Gaussian is centred.
    """
    sigma = sigma_lr * factor
    centre = (factor - 1) / 2.0
    first = int(math.floor(centre - PSF_TRUNCATE * sigma))
    last = int(math.ceil(centre + PSF_TRUNCATE * sigma))
    t = np.arange(first, last + 1, dtype=np.float64) - centre
    w = np.exp(-t * t / (2 * sigma * sigma))
    return w / w.sum(), first


def degrade(hr: np.ndarray, factor: int = constants.SCALE, sigma_lr: float = PSF_SIGMA_LR) -> np.ndarray:
    """LR image of an HR image [rows, cols, bands]: Gaussian PSF centred on each LR pixel, then
    sampling every `factor` pixels (rows and cols must be multiples of factor; symmetric padding
    at the borders). Returns float64; round it to store it."""
    weights, first = psf_weights(factor, sigma_lr)
    out = hr.astype(np.float64)
    for axis in (0, 1):
        n = out.shape[axis] // factor
        before = max(0, -first)
        after = max(0, first + len(weights) - factor)
        pad = [(0, 0)] * out.ndim
        pad[axis] = (before, after)
        padded = np.pad(out, pad, mode="symmetric")
        shape = list(out.shape)
        shape[axis] = n
        acc = np.zeros(shape)
        for k, wk in enumerate(weights):
            start = before + first + k
            index = [slice(None)] * out.ndim
            index[axis] = slice(start, start + factor * n, factor)
            acc += wk * padded[tuple(index)]
        out = acc
    return out


def to_int16(image: np.ndarray) -> np.ndarray:
    """Round and clip to the 0..MAX_VALUE reflectance range, as int16."""
    return np.clip(np.rint(image), 0, MAX_VALUE).astype(np.int16)


# ---------------------------------------------------------------------------------------------
# The landscape
# ---------------------------------------------------------------------------------------------

class Landscape:
    """Paints the HR scene layer by layer into `image` [size, size, 4] (float32) and keeps a height
    map (shadow length, pixels) for the shadows."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size = size
        self.rng = rng
        self.image = np.zeros((size, size, 4), dtype=np.float32)
        self.height = np.zeros((size, size), dtype=np.float32)
        self.x = np.arange(size, dtype=np.float32)[np.newaxis, :]
        self.y = np.arange(size, dtype=np.float32)[:, np.newaxis]
        # Layers later steps depend on (block roads, river water), filled by fields() and river().
        self.roads = np.zeros((size, size), dtype=np.float32)
        self.water = np.zeros((size, size), dtype=np.float32)
        # Crown-scale texture shared by every tree canopy (forest, hedges, riparian, gardens).
        self.crowns = smooth_noise(rng, size, 1.2)
        self.fine = smooth_noise(rng, size, 0.7)

    # -- helpers ------------------------------------------------------------------------------
    def rotated(self, angle: float, cx: float = 0.0, cy: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates (along, across) in a frame rotated by `angle` around (cx, cy)."""
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = self.x - cx, self.y - cy
        return dx * c + dy * s, dy * c - dx * s

    def add_trees(self, alpha: np.ndarray, height: float, spectrum: np.ndarray | None = None,
                  window: tuple[slice, slice] = (slice(None), slice(None))) -> None:
        """Paint trees where alpha > 0 (lit crowns, dark gaps), with a height for their shadows."""
        crowns = self.crowns[window]
        light = np.where(crowns < -1.1, 0.5, 1.0 + 0.28 * crowns)[..., np.newaxis]
        paint(self.image[window], alpha, light * (BROADLEAF if spectrum is None else spectrum))
        heights = self.height[window]
        heights[alpha > 0.5] = np.maximum(heights[alpha > 0.5], height)

    def flatten(self, alpha: np.ndarray, window: tuple[slice, slice] = (slice(None), slice(None))) -> None:
        """Ground-level surface painted over: nothing stands there any more."""
        self.height[window][alpha > 0.5] = 0.0

    # -- layers -------------------------------------------------------------------------------
    def fields(self) -> None:
        """Blocks of parcels (Voronoi cells, each with its own orientation), crops and their textures,
        margins and hedges; tracks and roads along the block borders."""
        rng, n = self.rng, self.size
        spacing = _m(1000.0)
        cells = int(math.ceil(n / spacing)) + 1
        gy, gx = np.mgrid[-1:cells, -1:cells]
        seeds = np.stack([(gx.ravel() + rng.uniform(0.1, 0.9, gx.size)) * spacing,
                          (gy.ravel() + rng.uniform(0.1, 0.9, gy.size)) * spacing], axis=1)
        id1, id2, d1, d2 = nearest_two(seeds, n)
        gap = np.linalg.norm(seeds[id1] - seeds[id2], axis=-1).astype(np.float32)
        border = (d2 - d1) / (2 * gap)  # distance to the nearest block border (squared distances in)

        # Parcels: strips across each block, cut into fields along the strips.
        main_angle = rng.uniform(0, math.pi / 2)
        nblocks = len(seeds)
        angles = main_angle + np.where(rng.random(nblocks) < 0.2, rng.uniform(0, math.pi / 2, nblocks),
                                       rng.normal(0, math.radians(8), nblocks))
        # In each block's frame (origin at its seed): u across the strips, v along them.
        cos_a, sin_a = np.cos(angles).astype(np.float32)[id1], np.sin(angles).astype(np.float32)[id1]
        dx = self.x - seeds[:, 0].astype(np.float32)[id1]
        dy = self.y - seeds[:, 1].astype(np.float32)[id1]
        self.u, self.v = dx * cos_a + dy * sin_a, dy * cos_a - dx * sin_a
        del cos_a, sin_a, dx, dy
        # Strip borders of every block (covering 2.5 spacings around its seed), searched at once.
        strips, fields_per_strip = 256, 64
        mean_width = rng.uniform(_m(90), _m(260), (nblocks, 1))
        cuts = (-2.5 * spacing - rng.uniform(0, 1, (nblocks, 1)) * mean_width
                + np.cumsum(mean_width * rng.uniform(0.5, 1.5, (nblocks, strips)), axis=1))
        offset = 1e7 * np.arange(nblocks)[:, np.newaxis]
        strip = np.searchsorted((cuts + offset).ravel(), self.u + offset[id1, 0]) - id1 * strips
        strip = np.clip(strip, 0, strips - 1)
        lengths = rng.uniform(_m(150), _m(650), (nblocks, strips))
        shifts = rng.uniform(0, 1, (nblocks, strips)) * lengths
        field = np.floor((self.v + shifts[id1, strip]) / lengths[id1, strip]).astype(np.int64)
        field = np.clip(field + fields_per_strip // 2, 0, fields_per_strip - 1)
        key = (id1.astype(np.int64) * strips + strip) * fields_per_strip + field
        present = np.bincount(key.ravel(), minlength=nblocks * strips * fields_per_strip) > 0
        pid = (np.cumsum(present) - 1)[key].astype(np.int32)  # compact parcel ids
        self._crops(pid)
        self._margins(pid)
        self._block_borders(id1, id2, border, nblocks)

    def _crops(self, pid: np.ndarray) -> None:
        """Crop class, texture and spectrum of every parcel (linear mix of vegetation, dry vegetation
        and soil)."""
        rng, n = self.rng, self.size
        count = int(pid.max()) + 1
        cls = rng.choice(len(CLASS_FREQUENCIES), count, p=CLASS_FREQUENCIES)[pid]
        # Per-parcel parameters, gathered per pixel.
        p = {name: values[pid] for name, values in {
            "veg": rng.uniform(0.0, 1.0, count), "soil": rng.uniform(0.55, 1.15, count),
            "gain_vis": rng.uniform(0.85, 1.15, count), "gain_nir": rng.uniform(0.85, 1.1, count),
            "vary": rng.uniform(0.03, 0.12, count), "phase": rng.uniform(0, 1, count),
            "along": rng.random(count) < 0.2, "param": rng.uniform(0.0, 1.0, count)}.items()}
        stripe_coord = np.where(p["along"], self.v, self.u)
        broad = 0.7 * smooth_noise(rng, n, _m(60)) + 0.3 * smooth_noise(rng, n, _m(15))
        patchy = smooth_noise(rng, n, _m(8))
        fv = np.zeros((n, n), dtype=np.float32)  # vegetation fraction
        fd = np.zeros((n, n), dtype=np.float32)  # dry vegetation fraction
        soil = p["soil"] * (1.0 + 0.06 * broad + 0.03 * self.fine)
        for c in range(len(CLASS_FREQUENCIES)):
            m = cls == c
            if not m.any():
                continue
            veg, vary, par = p["veg"][m], p["vary"][m], p["param"][m]
            noise = broad[m]
            coord = stripe_coord[m]
            if c == GREEN_CROP:  # cereals: tramlines every 18-24 m
                period = _m(18) + par * _m(6)
                frac = np.mod(coord / period + p["phase"][m], 1.0)
                line = np.clip(1.0 - np.abs(frac - 0.5) * period / 0.8, 0, 1)
                fv[m] = np.clip(0.72 + 0.22 * veg + vary * noise, 0, 1) * (1 - 0.35 * line)
            elif c == BARE_SOIL:  # ploughed / harrowed: furrows, clods
                period = _m(8) + par * _m(12)
                soil[m] *= 1.0 + 0.07 * np.sin(2 * np.pi * (coord / period + p["phase"][m])) \
                    + 0.05 * self.fine[m] + vary * noise
                fv[m] = 0.03 * np.clip(1 + noise, 0, 2)
            elif c == STUBBLE:  # harvested cereal: bright and dark harvest swaths
                period = _m(12) + par * _m(10)
                swath = np.tanh(3 * np.sin(2 * np.pi * (coord / period + p["phase"][m])))
                fd[m] = np.clip(0.6 + 0.25 * veg + 0.12 * swath + vary * noise, 0, 1)
                fv[m] = np.clip(0.05 + 0.05 * patchy[m], 0, 1)
            elif c == MEADOW:  # grassland: patchy, some dry patches, no rows
                fv[m] = np.clip(0.55 + 0.3 * veg + 0.12 * patchy[m] + vary * noise, 0, 1)
                fd[m] = np.clip(0.25 * (patchy[m] - 0.8), 0, 0.3) * (1 - fv[m])
            elif c == ROW_CROP:  # maize / sunflower, partial cover in rows
                period = _m(7) + par * _m(5)
                rows = np.sin(2 * np.pi * (coord / period + p["phase"][m]))
                fv[m] = np.clip(0.3 + 0.35 * veg + 0.2 * rows + vary * noise, 0, 1)
            elif c == ORCHARD:  # trees on a grid, grass between the rows
                period = _m(8) + par * _m(3)
                other = np.where(p["along"][m], self.u[m], self.v[m])
                du = np.mod(coord / period + p["phase"][m], 1.0) - 0.5
                dv = np.mod(other / period, 1.0) - 0.5
                tree = np.exp(-(du * du + dv * dv) * period * period / (2 * 0.9 ** 2))
                fv[m] = np.clip(0.3 + 0.7 * tree + 0.1 * noise, 0, 1)
                fd[m] = 0.2 * (1 - tree)
                height = self.height[m]
                height[tree > 0.5] = 2.0
                self.height[m] = height
            else:  # fallow: weedy, mixed
                fv[m] = np.clip(0.2 + 0.2 * veg + 0.2 * patchy[m] + vary * noise, 0, 1)
                fd[m] = np.clip(0.3 + 0.15 * self.fine[m], 0, 1) * (1 - fv[m])
        fd = np.minimum(fd, 1 - fv)
        soil *= 1.0 - fv - fd
        for band in range(4):
            gain = p["gain_nir"] if band == 3 else p["gain_vis"]
            self.image[:, :, band] = (fv * gain * VEGETATION[band] + fd * DRY_VEGETATION[band]
                                      + soil * SOIL[band])

    def _margins(self, pid: np.ndarray) -> None:
        """Grass margins along some parcel borders, hedgerows along others."""
        rng = self.rng
        edge = np.zeros(pid.shape, dtype=bool)
        edge[:, :-1] |= pid[:, :-1] != pid[:, 1:]
        edge[:-1, :] |= pid[:-1, :] != pid[1:, :]
        count = int(pid.max()) + 1
        kind = rng.choice(3, count, p=(0.45, 0.35, 0.2))[pid]  # none, grass margin, hedge
        margin = dilate(edge) & (kind == 1)
        grass = VEGETATION * 0.75 + DRY_VEGETATION * 0.15 + SOIL * 0.1
        paint(self.image, margin.astype(np.float32), grass * (1 + 0.08 * self.fine[..., np.newaxis]))
        gaps = smooth_noise(rng, self.size, _m(12))
        hedge = dilate(edge) & (kind == 2) & (gaps > -0.8)
        self.add_trees(hedge.astype(np.float32), 3.0)
        self.gaps = gaps

    def _block_borders(self, id1: np.ndarray, id2: np.ndarray, border: np.ndarray, nblocks: int) -> None:
        """Each pair of neighbouring blocks is separated by a paved road, a track, or a hedge."""
        rng = self.rng
        kinds = rng.choice(4, nblocks * nblocks, p=(0.35, 0.35, 0.15, 0.15))
        pair = np.minimum(id1, id2) * nblocks + np.maximum(id1, id2)
        kind = kinds[pair]
        paved = coverage(border, _m(7.0)) * (kind == 0)
        track = coverage(border, _m(4.0)) * (kind == 1)
        hedge = (coverage(border, _m(7.0)) * (kind == 2)) * (self.gaps > -1.0)
        self.add_trees(hedge, 4.0)
        surface = 1 + 0.05 * self.fine[..., np.newaxis]
        paint(self.image, track, GRAVEL * surface * 0.9)
        paint(self.image, paved, ASPHALT * surface)
        self.flatten(np.maximum(paved, track))
        self.roads = np.maximum(paved, track)

    def forest(self) -> None:
        """Forest patches (broadleaf and conifer stands) with crowns and gaps."""
        rng, n = self.rng, self.size
        shape = smooth_noise(rng, n, _m(120)) + 0.3 * smooth_noise(rng, n, _m(15))
        alpha = np.clip((shape - 1.25) * 4, 0, 1)
        conifer = np.clip(smooth_noise(rng, n, _m(100)) * 3, -1, 1) * 0.5 + 0.5
        spectrum = conifer[..., np.newaxis] * CONIFER + (1 - conifer[..., np.newaxis]) * BROADLEAF
        self.add_trees(alpha * (self.roads < 0.5), 5.0, spectrum)

    def river(self) -> None:
        """A meandering river through the middle of the scene, muddy banks, riparian trees."""
        rng, n = self.rng, self.size
        angle = rng.uniform(0, math.pi)
        cx, cy = n * rng.uniform(0.35, 0.65), n * rng.uniform(0.35, 0.65)
        s, t = self.rotated(angle, cx, cy)
        centre = np.zeros_like(s)
        slope = np.zeros_like(s)
        for amplitude, wavelength in ((_m(180), _m(2200)), (_m(70), _m(800)), (_m(20), _m(300))):
            phase = rng.uniform(0, 2 * math.pi)
            arg = 2 * math.pi * s / wavelength + phase
            centre = centre + amplitude * np.sin(arg)
            slope = slope + amplitude * 2 * math.pi / wavelength * np.cos(arg)
        distance = np.abs(t - centre) / np.sqrt(1 + slope * slope)
        width = _m(32) + _m(8) * np.sin(2 * math.pi * s / _m(1500) + rng.uniform(0, 2 * math.pi))
        water = coverage(distance, width)
        bank = coverage(distance, width + _m(5)) - water
        riparian = (coverage(distance, width + _m(30) + _m(10) * smooth_noise(rng, n, _m(20)))
                    - coverage(distance, width + _m(4))) * (smooth_noise(rng, n, _m(10)) > -0.4)
        self.add_trees(np.clip(riparian, 0, 1) * (self.roads < 0.5), 4.0)
        paint(self.image, bank * (self.roads < 0.5), SOIL * 0.55)
        shallow = np.clip(distance / np.maximum(width / 2, 1), 0, 1) ** 2
        colour = WATER * (1 + 0.35 * shallow[..., np.newaxis] + 0.03 * self.fine[..., np.newaxis])
        paint(self.image, water, colour)
        self.flatten(np.maximum(water, bank))
        self.water = water

    def main_road(self) -> None:
        """A main road across the scene (bridging the river)."""
        rng, n = self.rng, self.size
        angle = rng.uniform(0, math.pi)
        s, t = self.rotated(angle, n * rng.uniform(0.3, 0.7), n * rng.uniform(0.3, 0.7))
        amplitude, wavelength = _m(60), _m(5000)
        phase = rng.uniform(0, 2 * math.pi)
        centre = amplitude * np.sin(2 * math.pi * s / wavelength + phase)
        slope = amplitude * 2 * math.pi / wavelength * np.cos(2 * math.pi * s / wavelength + phase)
        distance = np.abs(t - centre) / np.sqrt(1 + slope * slope)
        road = coverage(distance, _m(10))
        shoulder = coverage(distance, _m(14)) - road
        paint(self.image, shoulder, GRAVEL * 0.8)
        paint(self.image, road, ASPHALT * 0.9 * (1 + 0.03 * self.fine[..., np.newaxis]))
        self.flatten(np.maximum(road, shoulder))
        bridge = (road > 0.5) & (self.water > 0.5)
        self.height = np.where(bridge, 2.0, self.height)
        self.roads = np.maximum(self.roads, np.maximum(road, shoulder))

    def settlements(self) -> None:
        """Villages (streets, gardens, houses along the streets) and isolated farms."""
        rng, n = self.rng, self.size
        area_km2 = (n * HR_PIXEL / 1000.0) ** 2
        villages = max(1, int(round(area_km2 / 7)))
        # Stratified centres: one per cell of a coarse grid, so every part of a large scene gets some.
        side = int(math.ceil(math.sqrt(villages)))
        cells = rng.permutation(side * side)[:villages]
        buildings = []
        for cell in cells:
            cy = (cell // side + rng.uniform(0.2, 0.8)) * n / side
            cx = (cell % side + rng.uniform(0.2, 0.8)) * n / side
            buildings += self._village(cx, cy, rng.uniform(_m(180), _m(300)))
        farms = max(2, int(round(area_km2 * 0.8)))
        for _ in range(farms):
            cx, cy = rng.uniform(0, n, 2)
            angle = rng.uniform(0, math.pi)
            for _ in range(rng.integers(2, 6)):
                bx, by = cx + rng.normal(0, _m(25)), cy + rng.normal(0, _m(25))
                big = rng.random() < 0.5
                length = rng.uniform(_m(20), _m(50)) if big else rng.uniform(_m(12), _m(22))
                width = rng.uniform(_m(12), _m(22)) if big else rng.uniform(_m(8), _m(12))
                buildings.append((bx, by, length, width, angle + rng.choice([0, math.pi / 2]), big))
        for building in buildings:
            self._building(*building)

    def _village(self, cx: float, cy: float, radius: float) -> list[tuple]:
        """Gardens, streets, and the houses along them (returned, painted later)."""
        rng, n = self.rng, self.size
        reach = int(2 * radius)
        ys = slice(max(0, int(cy) - reach), min(n, int(cy) + reach))
        xs = slice(max(0, int(cx) - reach), min(n, int(cx) + reach))
        window = (ys, xs)
        x, y = self.x[:, xs], self.y[ys, :]
        if x.size == 0 or y.size == 0:
            return []
        side = max(x.size, y.size)
        outline = radius * (1 + 0.25 * smooth_noise(rng, side, _m(40))[:y.size, :x.size])
        dist = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        ground = np.clip((outline - dist) / _m(20), 0, 1) * (self.water[window] < 0.5)
        gardens = VEGETATION * 0.6 + SOIL * 0.3 + DRY_VEGETATION * 0.1
        paint(self.image[window], ground * 0.85, gardens * (1 + 0.1 * self.fine[window][..., np.newaxis]))
        trees = smooth_noise(rng, side, _m(6))[:y.size, :x.size] > 1.2
        self.add_trees(ground * trees, 3.0, window=window)
        axis = rng.uniform(0, math.pi)
        buildings = []
        for k in range(rng.integers(3, 6)):
            angle = axis + (k % 2) * math.pi / 2 + rng.normal(0, math.radians(6))
            ox, oy = rng.normal(0, radius / 4, 2)
            c, si = math.cos(angle), math.sin(angle)
            s = (x - cx - ox) * c + (y - cy - oy) * si
            t = (y - cy - oy) * c - (x - cx - ox) * si
            half = radius * rng.uniform(0.6, 1.0)
            street = coverage(np.abs(t), _m(7)) * np.clip((half - np.abs(s)) / 2, 0, 1)
            paint(self.image[window], street, ASPHALT * 1.05)
            self.flatten(street, window)
            for along in np.arange(-half, half, rng.uniform(_m(16), _m(24))):
                for side in (-1, 1):
                    if rng.random() < 0.25:
                        continue
                    length = rng.uniform(_m(10), _m(20))
                    width = rng.uniform(_m(8), _m(12))
                    offset = side * (_m(3.5) + rng.uniform(_m(2), _m(8)) + width / 2)
                    bx = cx + ox + along * c - offset * si
                    by = cy + oy + along * si + offset * c
                    if 0 <= bx < n and 0 <= by < n:
                        buildings.append((bx, by, length, width, angle, rng.random() < 0.08))
        return buildings

    def _building(self, cx: float, cy: float, length: float, width: float, angle: float, big: bool) -> None:
        """A rectangular building (gabled roof, or flat for big ones) with its height for the shadow."""
        rng, n = self.rng, self.size
        reach = int(math.ceil(math.hypot(length, width) / 2 + 2))
        x0, x1 = max(0, int(cx) - reach), min(n, int(cx) + reach + 1)
        y0, y1 = max(0, int(cy) - reach), min(n, int(cy) + reach + 1)
        if x0 >= x1 or y0 >= y1:
            return
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        c, s = math.cos(angle), math.sin(angle)
        along = (xx - cx) * c + (yy - cy) * s
        across = (yy - cy) * c - (xx - cx) * s
        alpha = coverage(np.abs(along), length) * coverage(np.abs(across), width)
        if (self.water[y0:y1, x0:x1][alpha > 0] > 0.1).any():
            return  # nobody builds in the river
        if big:
            roof = (BRIGHT_ROOF if rng.random() < 0.6 else GREY_ROOF) * rng.uniform(0.85, 1.05)
            colour = np.broadcast_to(roof, alpha.shape + (4,))
            height = rng.uniform(3, 4)
        else:
            roof = [TILE_ROOF, TILE_ROOF, GREY_ROOF, BRIGHT_ROOF][rng.integers(0, 4)] * rng.uniform(0.85, 1.1)
            # Gable: the half of the roof facing the sun (south-east) is brighter.
            normal_x, normal_y = -s * np.sign(across), c * np.sign(across)
            lit = (normal_x + normal_y) > 0
            colour = roof * np.where(lit, 1.12, 0.82)[..., np.newaxis]
            height = rng.uniform(2, 3)
        view = self.image[y0:y1, x0:x1]
        paint(view, alpha, colour)
        self.height[y0:y1, x0:x1] = np.where(alpha > 0.5, np.maximum(self.height[y0:y1, x0:x1], height),
                                             self.height[y0:y1, x0:x1])

    def shadows(self) -> None:
        """Shadows cast to the north-west (sun in the south-east, late morning): a pixel is shaded when
        an object k pixels to its south-east (diagonally) stands at least k pixels above it."""
        h = self.height
        shade = np.zeros(h.shape, dtype=bool)
        for k in range(1, int(math.ceil(h.max())) + 1):
            shade[:-k, :-k] |= (h[k:, k:] - h[:-k, :-k]) >= k
        self.image[shade] *= SHADOW


def generate_hr(size: int = DEFAULT_SIZE, seed: int = 0) -> np.ndarray:
    """The HR scene: int16 [size, size, 4] (R, G, B, NIR), reflectance x 10000 with sensor noise."""
    if size < MIN_SIZE or size % constants.SCALE:
        raise SR4RSError(f"the HR size must be a multiple of {constants.SCALE} and at least {MIN_SIZE} "
                         f"(got {size})")
    rng = np.random.default_rng(seed)
    scene = Landscape(size, rng)
    scene.fields()
    scene.forest()
    scene.river()
    scene.main_road()
    scene.settlements()
    scene.shadows()
    image = blur(scene.image + ADJACENCY, HR_PSF_SIGMA)
    sigma = np.sqrt(NOISE_FLOOR ** 2 + (NOISE_GAIN * np.maximum(image, 0)) ** 2)
    image += sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return to_int16(image)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def write_geotiff(path: str, array: np.ndarray, pixel: float, description: str) -> None:
    """Write an int16 [rows, cols, 4] array as a tiled, compressed GeoTIFF (EPSG:32631), atomically."""
    rows, cols, bands = array.shape
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    with atomic_output(path) as tmp:
        ds = gdal.GetDriverByName("GTiff").Create(
            tmp, cols, rows, bands, gdal.GDT_Int16,
            ["TILED=YES", "COMPRESS=DEFLATE", "PREDICTOR=2", "PHOTOMETRIC=MINISBLACK"])
        ds.SetGeoTransform((ORIGIN[0], pixel, 0.0, ORIGIN[1], 0.0, -pixel))
        ds.SetProjection(srs.ExportToWkt())
        ds.SetMetadata({"DESCRIPTION": description, "SCALE": "reflectance x 10000",
                        "PSF_SIGMA_LR_PIXELS": str(PSF_SIGMA_LR)})
        interpretations = (gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand, gdal.GCI_Undefined)
        for b in range(bands):
            band = ds.GetRasterBand(b + 1)
            band.WriteArray(array[:, :, b])
            band.SetDescription(BANDS[b])
            band.SetColorInterpretation(interpretations[b])
        ds.FlushCache()
        ds = None


def write_quicklook(path: str, hr: np.ndarray, lr: np.ndarray | None = None, max_side: int = 1024) -> None:
    """PNG of the scene: natural colours and false colours (NIR, R, G); with `lr`, a third panel shows
    the LR image (pixels enlarged, same stretch).

    Args:
        path: output PNG.
        hr: the HR scene [rows, cols, 4].
        lr: the LR scene [rows / 4, cols / 4, 4], or None.
        max_side: panels larger than this are reduced by an integer factor (block mean).
    """
    factor = max(1, math.ceil(max(hr.shape[:2]) / max_side))
    small = block_mean(hr, factor) if factor > 1 else hr.astype(np.float64)
    nat = stretch([small], small)[0]
    false = stretch([small[:, :, [3, 0, 1]]], small[:, :, [3, 0, 1]])[0]
    panels = [nat, false]
    if lr is not None:
        zoom = constants.SCALE / factor
        rows = (np.arange(small.shape[0]) / zoom).astype(int)
        cols = (np.arange(small.shape[1]) / zoom).astype(int)
        panels.append(stretch([lr[rows][:, cols]], small)[0])
    write_png(path, side_by_side(panels))


def make_demo_scene(out_dir: str, size_hr: int = DEFAULT_SIZE, seed: int = 0,
                    png: str | None = None) -> tuple[str, str]:
    """Write the demo LR/HR pair into `out_dir` (created if needed).

    Args:
        out_dir: output folder.
        size_hr: HR size in pixels (square; multiple of 4). The LR image is size_hr / 4.
        seed: random seed (same seed, same images).
        png: also write a quicklook PNG there.

    Returns:
        (lr_path, hr_path).
    """
    start = time.time()
    hr = generate_hr(size_hr, seed)
    lr = to_int16(degrade(hr))
    os.makedirs(out_dir, exist_ok=True)
    hr_path, lr_path = os.path.join(out_dir, HR_NAME), os.path.join(out_dir, LR_NAME)
    write_geotiff(hr_path, hr, HR_PIXEL, f"SR4RS synthetic demo scene, HR {HR_PIXEL} m, seed {seed}")
    write_geotiff(lr_path, lr, LR_PIXEL,
                  f"SR4RS synthetic demo scene, LR {LR_PIXEL:g} m = HR blurred by a Gaussian PSF (sigma "
                  f"{PSF_SIGMA_LR} LR pixels) then decimated by {constants.SCALE}, seed {seed}")
    if png:
        write_quicklook(png, hr, lr)
    logger.info("Demo scene (%d x %d HR pixels, seed %d) written in %.1f s: %s, %s",
                size_hr, size_hr, seed, time.time() - start, hr_path, lr_path)
    return lr_path, hr_path


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write the demo scene pair.

    Args:
        argv: command-line arguments (default: sys.argv[1:]).
    """
    parser = argparse.ArgumentParser(
        prog="python -m demo.scene",
        description="Write the SR4RS synthetic demo scene: a 2.5 m HR image and its 10 m LR degradation "
                    "(4 bands R, G, B, NIR, int16).")
    parser.add_argument("out_dir", help="output folder (created if needed)")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="HR size in pixels (default 2048)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--png", help="also write a quicklook PNG (natural colours | NIR-R-G | LR)")
    args = parser.parse_args(argv)
    setup_logging()
    lr_path, hr_path = make_demo_scene(args.out_dir, args.size, args.seed, args.png)
    print(f"LR: {lr_path}\nHR: {hr_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
