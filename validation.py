"""Validation during training: the generator's output on held-out LR patches against their HR patches,
side by side with bicubic upsampling of the same LR patches (the baseline any super-resolution must beat).

Scores (metrics.py, the functions evaluate.py uses): PSNR, SSIM and SAM, per band and overall, for the
SR output and for bicubic, and the gain of SR over bicubic in dB. Each LR patch is mirrored by
MIRROR_MARGIN pixels on every side before both the generator and bicubic see it (as sr.py mirrors the
image borders), and the margins are cropped away, so patch borders weigh alike on both.

Which pairs are held out (`split_by_position`): a strip at the end of each patches image's area, chosen
from the patch windows of the centres GeoPackage that extract_patches.py writes, with the training
patches that overlap it left out; without that file, the last patches of each image (OTB's and this
project's extractions write them in rows), with a warning that neighbours may overlap.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from osgeo import ogr

import metrics
from constants import SCALE
from errors import SR4RSError
from logs import get_logger
from quicklook import GAP, stretch
from raster import gdal_errors

logger = get_logger("validation")
ogr.UseExceptions()

MIRROR_MARGIN = 4  # LR pixels mirrored around each validation patch
PREVIEW_PATCHES = 4  # validation pairs shown in the preview (the most detailed ones)
CENTERS_SUFFIX = "_centers.gpkg"  # extract_patches.py's centres file, next to the LR patches image
# Fewer validation pairs than this give noisy scores: said in the log.
FEW_PAIRS = 50
MAX_PSNR = 100.0  # dB: the PSNR of identical images, reported instead of infinity


@dataclass(frozen=True)
class Split:
    """Global patch indices of the training and validation parts.

    Attributes:
        train: indices trained on.
        valid: indices held out for validation.
        dropped: training patches left out because they overlap a validation patch.
    """

    train: np.ndarray
    valid: np.ndarray
    dropped: int


def centres_path(lr_patches: str) -> str:
    """The centres GeoPackage that extract_patches.py writes next to an LR patches image."""
    return os.path.splitext(lr_patches)[0] + CENTERS_SUFFIX


def read_windows(path: str, n_patches: int) -> np.ndarray | None:
    """LR windows' top-left (col, row) of patches 0 .. n-1 from a centres GeoPackage, or None when the
    file does not describe exactly these patches."""
    with gdal_errors(f"{path}: not a readable centres file"):
        ds = ogr.Open(path)
        layer = ds.GetLayer(0)
        defn = layer.GetLayerDefn()
        names = {defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())}
        if not {"patch", "lr_col", "lr_row"} <= names:
            return None
        windows = np.full((n_patches, 2), -1, np.int64)
        for feature in layer:
            index = feature.GetField("patch")
            if not 0 <= index < n_patches:
                return None
            windows[index] = feature.GetField("lr_col"), feature.GetField("lr_row")
    return windows if (windows >= 0).all() and layer.GetFeatureCount() == n_patches else None


def strip_split(windows: np.ndarray, size: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split patches by position: the validation part is the strip of about `fraction` of the patches at
    the end (right or bottom) of the area, along its longer side; training patches whose window overlaps
    a validation window are left out of both.

    Args:
        windows: [n, 2] top-left (col, row) of each patch's LR window.
        size: LR patch size.
        fraction: share of the patches to hold out, in (0, 1).

    Returns:
        (training indices, validation indices), local to these patches.
    """
    extent = windows.max(axis=0) - windows.min(axis=0)
    axis = 0 if extent[0] >= extent[1] else 1
    position = windows[:, axis]
    count = max(1, round(fraction * len(windows)))
    order = np.argsort(position, kind="stable")
    start = position[order[len(windows) - count]]  # the strip starts there (ties go to validation)
    valid = np.flatnonzero(position >= start)
    train = np.flatnonzero(position + size <= start)
    return train, valid


def split_by_position(lr_files: list[str], counts: list[int], size: int, fraction: float) -> Split:
    """Hold out about `fraction` of the pairs of each patches image, by position (see the module doc).

    Args:
        lr_files: the LR patches images.
        counts: the number of patches in each.
        size: LR patch size.
        fraction: share of the patches to hold out, in (0, 1).
    """
    train, valid, dropped, start = [], [], 0, 0
    for path, n in zip(lr_files, counts, strict=True):
        centres = centres_path(path)
        windows = read_windows(centres, n) if os.path.exists(centres) else None
        if windows is None:
            logger.warning("%s: no centres file describing its %s patches (%s): the last %d%% of its patches "
                           "are held out; patches next to the split may overlap them", path, n, centres,
                           round(100 * fraction))
            count = max(1, round(fraction * n))
            local_train, local_valid = np.arange(n - count), np.arange(n - count, n)
        else:
            local_train, local_valid = strip_split(windows, size, fraction)
        dropped += n - len(local_train) - len(local_valid)
        train.append(start + local_train)
        valid.append(start + local_valid)
        start += n
    split = Split(np.concatenate(train), np.concatenate(valid), dropped)
    if len(split.train) == 0 or len(split.valid) == 0:
        raise SR4RSError(f"--valid_split {fraction}: {len(split.train)} training and {len(split.valid)} "
                         "validation patches: too few patches to split")
    return split


def mirror(lr: np.ndarray, margin: int = MIRROR_MARGIN) -> np.ndarray:
    """LR patches [N, s, s, C] mirrored by `margin` pixels on every side (the edge pixel repeated)."""
    return np.pad(lr, ((0, 0), (margin, margin), (margin, margin), (0, 0)), mode="symmetric")


def crop(hr: np.ndarray, margin: int = MIRROR_MARGIN) -> np.ndarray:
    """HR outputs of mirrored LR patches, cropped back to the patches' own area."""
    m = SCALE * margin
    return hr[:, m:hr.shape[1] - m, m:hr.shape[2] - m]


@dataclass(frozen=True)
class Scores:
    """Quality of upsampled patches against the HR patches (SAM is None with one band)."""

    psnr: float
    ssim: float
    sam: float | None
    psnr_bands: list[float]
    ssim_bands: list[float]


def score(image: np.ndarray, reference: np.ndarray, data_range: float) -> Scores:
    """PSNR, SSIM (overall and per band) and SAM of a stack of patches against the reference stack."""
    bands = reference.shape[-1]
    mse_bands = metrics.rmse_per_band(image, reference) ** 2
    ssim_bands = metrics.ssim_per_band(image, reference, data_range)
    return Scores(psnr=metrics.psnr(image, reference, data_range),
                  ssim=float(np.mean(ssim_bands)),
                  sam=metrics.sam(image, reference) if bands > 1 else None,
                  psnr_bands=[metrics.psnr_from_mse(float(m), data_range) for m in mse_bands],
                  ssim_bands=[float(s) for s in ssim_bands])


def capped(psnr: float) -> float:
    """A PSNR capped at MAX_PSNR (a perfect output has an infinite PSNR; JSON and TensorBoard want
    finite numbers)."""
    return min(psnr, MAX_PSNR)


class Validator:
    """Scores of a generator on held-out pairs, against bicubic upsampling (computed once).

    Args:
        lr: LR patches [N, s, s, C] (raw values).
        hr: HR patches [N, 4s, 4s, C] (raw values).
        upsample_bicubic: bicubic x4 upsampling of float32 LR patches [n, h, w, C] -> [n, 4h, 4w, C].
        batch_size: patches per call of the generator.
    """

    def __init__(self, lr: np.ndarray, hr: np.ndarray,
                 upsample_bicubic: Callable[[np.ndarray], np.ndarray], batch_size: int):
        if lr.shape[1] < 1 or hr.shape[1] != SCALE * lr.shape[1]:
            raise ValueError("HR patches must be SCALE times the LR patches")
        if not (np.isfinite(lr).all() and np.isfinite(hr).all()):
            raise SR4RSError("the validation patches hold non-finite values (NaN or infinity)")
        self.lr = lr.astype(np.float32)
        self.hr = hr.astype(np.float32)
        self.batch_size = batch_size
        self.data_range = float(self.hr.max() - self.hr.min()) or 1.0
        self.bicubic = self.upsample(upsample_bicubic)
        self.baseline = score(self.bicubic, self.hr, self.data_range)
        detail = self.hr.reshape(len(self.hr), -1).std(axis=1)
        self.preview_indices = np.sort(np.argsort(-detail, kind="stable")[:PREVIEW_PATCHES])
        if len(lr) < FEW_PAIRS:
            logger.warning("only %s validation pairs: the validation scores will be noisy", len(lr))

    def upsample(self, model: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Every validation LR patch through `model` (float32 [n, h, w, C] -> [n, 4h, 4w, C]), in batches,
        on mirrored patches, cropped back."""
        out = [crop(np.asarray(model(mirror(self.lr[i:i + self.batch_size]))), MIRROR_MARGIN)
               for i in range(0, len(self.lr), self.batch_size)]
        return np.concatenate(out).astype(np.float32)

    def evaluate(self, generate: Callable[[np.ndarray], np.ndarray]) -> tuple[dict, np.ndarray]:
        """Score the generator: (the scores as a flat dict, the SR patches).

        Keys: psnr, ssim, sam, gain_db (PSNR of SR - PSNR of bicubic), their `_bicubic` twins,
        and per band psnr_bands, psnr_bicubic_bands, gain_db_bands, ssim_bands, ssim_bicubic_bands;
        data_range and pairs. The PSNR of identical images (infinite) is reported as MAX_PSNR.

        Args:
            generate: the generator: float32 raw LR patches [n, h, w, C] -> raw HR [n, 4h, 4w, C].
        """
        sr = self.upsample(generate)
        if not np.isfinite(sr).all():
            raise SR4RSError("the generator gives non-finite values (NaN or infinity) on the validation "
                             "patches: the training diverged")
        ours, base = score(sr, self.hr, self.data_range), self.baseline
        result = {
            "psnr": capped(ours.psnr), "psnr_bicubic": capped(base.psnr),
            "gain_db": capped(ours.psnr) - capped(base.psnr),
            "ssim": ours.ssim, "ssim_bicubic": base.ssim,
            "sam": ours.sam, "sam_bicubic": base.sam,
            "psnr_bands": [capped(v) for v in ours.psnr_bands],
            "psnr_bicubic_bands": [capped(v) for v in base.psnr_bands],
            "gain_db_bands": [capped(a) - capped(b) for a, b in zip(ours.psnr_bands, base.psnr_bands,
                                                                    strict=True)],
            "ssim_bands": ours.ssim_bands, "ssim_bicubic_bands": base.ssim_bands,
            "data_range": self.data_range, "pairs": len(self.lr),
        }
        return result, sr

    def preview(self, sr: np.ndarray) -> np.ndarray:
        """LR (nearest x4) | bicubic | SR | HR of the most detailed validation pairs, one row each, one
        stretch (the HR's) per row, GAP white pixels apart: an RGB uint8 image [1, H, W, 3] for
        TensorBoard (numpy only: no Pillow needed to train)."""
        rows = []
        for i in self.preview_indices:
            lr_nearest = np.repeat(np.repeat(self.lr[i], SCALE, axis=0), SCALE, axis=1)
            panels = stretch([lr_nearest, self.bicubic[i], sr[i], self.hr[i]], self.hr[i])
            gap = np.full((panels[0].shape[0], GAP, 3), 255, np.uint8)
            rows.append(np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1))
            rows.append(np.full((GAP, rows[-1].shape[1], 3), 255, np.uint8))
        return np.concatenate(rows[:-1])[np.newaxis]
