"""validation.py: scores against bicubic (a bicubic model gains 0 dB, a perfect one is capped, a worse one
loses), the split by position (no overlap between training and validation windows), the preview."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import write_points, write_raster
from osgeo import ogr

import validation
from errors import SR4RSError
from network import upsample_bicubic
from validation import MAX_PSNR, Validator, split_by_position, strip_split


def bicubic(lr: np.ndarray) -> np.ndarray:
    return upsample_bicubic(tf.constant(lr), 4).numpy()


def nearest(lr: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(lr, 4, axis=1), 4, axis=2)


@pytest.fixture(scope="module")
def smooth_pairs() -> tuple[np.ndarray, np.ndarray]:
    """12 pairs of smooth 3-band HR patches (64 px) and their 4x4-mean LR patches (16 px)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:64] / 64.0
    hr = np.stack([[1000 + 500 * np.sin(2 * np.pi * (f * x + g * y) + b) for b in range(3)]
                   for f, g in rng.uniform(0.5, 2.0, (12, 2))]).transpose(0, 2, 3, 1).astype(np.float32)
    lr = hr.reshape(12, 16, 4, 16, 4, 3).mean(axis=(2, 4))
    return lr, hr


def test_a_bicubic_model_gains_nothing(smooth_pairs):
    lr, hr = smooth_pairs
    result, sr = Validator(lr, hr, bicubic, batch_size=5).evaluate(bicubic)
    assert abs(result["gain_db"]) < 1e-3
    assert all(abs(g) < 1e-3 for g in result["gain_db_bands"])
    assert result["ssim"] == pytest.approx(result["ssim_bicubic"], abs=1e-9)
    assert result["sam"] == pytest.approx(result["sam_bicubic"], abs=1e-9)
    assert sr.shape == hr.shape and result["pairs"] == 12 and len(result["psnr_bands"]) == 3


def test_a_perfect_model_is_capped_and_a_worse_one_loses(smooth_pairs):
    lr, hr = smooth_pairs
    blocky = nearest(lr)  # an HR that nearest-neighbour upsampling recovers exactly
    validator = Validator(lr, blocky, bicubic, batch_size=4)
    perfect, _ = validator.evaluate(nearest)
    assert perfect["psnr"] == MAX_PSNR and perfect["ssim"] == pytest.approx(1.0)
    assert perfect["gain_db"] == pytest.approx(MAX_PSNR - validator.baseline.psnr)
    assert perfect["sam"] == pytest.approx(0.0, abs=1e-3)
    worse, _ = Validator(lr, hr, bicubic, batch_size=4).evaluate(nearest)  # smooth HR: blocks are worse
    assert worse["gain_db"] < -1.0 and worse["ssim"] < worse["ssim_bicubic"]


def test_non_finite_outputs_or_patches_are_refused(smooth_pairs):
    lr, hr = smooth_pairs
    with pytest.raises(SR4RSError, match="diverged"):
        Validator(lr, hr, bicubic, 4).evaluate(lambda x: np.full(nearest(x).shape, np.nan, np.float32))
    bad = hr.copy()
    bad[3, 5, 5, 1] = np.inf
    with pytest.raises(SR4RSError, match="non-finite"):
        Validator(lr, bad, bicubic, 4)


def test_preview_shows_lr_bicubic_sr_hr_rows(smooth_pairs):
    lr, hr = smooth_pairs
    validator = Validator(lr, hr, bicubic, 4)
    _, sr = validator.evaluate(bicubic)
    image = validator.preview(sr)
    assert image.dtype == np.uint8 and image.shape[0] == 1 and image.shape[3] == 3
    assert image.shape[2] >= 4 * 64  # four panels side by side
    assert image.shape[1] >= validation.PREVIEW_PATCHES * 64  # one row per previewed pair


def grid_windows(cols: int, rows: int, step: int) -> np.ndarray:
    """Row-major grid of LR windows' top-left corners, as extract_patches.py --step writes them."""
    return np.array([(c * step, r * step) for r in range(rows) for c in range(cols)], np.int64)


@pytest.mark.parametrize("cols, rows", [(12, 5), (5, 12)])
def test_strip_split_leaves_no_overlap(cols, rows):
    size, step = 16, 8  # overlapping neighbours
    windows = grid_windows(cols, rows, step)
    train, valid = strip_split(windows, size, 0.25)
    assert len(set(train) & set(valid)) == 0
    assert abs(len(valid) - 0.25 * len(windows)) <= max(cols, rows)  # whole columns or rows
    for i in train:  # no training window overlaps any validation window
        overlap_x = (windows[i, 0] < windows[valid, 0] + size) & (windows[valid, 0] < windows[i, 0] + size)
        overlap_y = (windows[i, 1] < windows[valid, 1] + size) & (windows[valid, 1] < windows[i, 1] + size)
        assert not (overlap_x & overlap_y).any()
    axis = 0 if cols >= rows else 1  # the strip is across the longer side
    assert windows[valid, axis].min() > windows[train, axis].max()


def write_centres(path: str, windows: np.ndarray) -> None:
    """A centres GeoPackage as extract_patches.py writes it (fields patch, lr_col, lr_row)."""
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(path)
    layer = ds.CreateLayer("patch_centers", None, ogr.wkbPoint, options=["SPATIAL_INDEX=NO"])
    for name in ("patch", "lr_col", "lr_row"):
        layer.CreateField(ogr.FieldDefn(name, ogr.OFTInteger))
    for i, (col, row) in enumerate(windows):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("patch", i)
        feature.SetField("lr_col", int(col))
        feature.SetField("lr_row", int(row))
        point = ogr.Geometry(ogr.wkbPoint)
        point.AddPoint_2D(float(col), float(row))
        feature.SetGeometry(point)
        layer.CreateFeature(feature)
    ds = None


def test_split_by_position_uses_the_centres_file_or_falls_back(tmp_path, caplog):
    size = 4
    windows = grid_windows(8, 4, 2)
    for name in ("a", "b"):
        write_raster(str(tmp_path / f"{name}_lr.tif"), np.zeros((len(windows) * size, size), np.uint8))
    write_centres(str(tmp_path / "a_lr_centers.gpkg"), windows)
    files = [str(tmp_path / "a_lr.tif"), str(tmp_path / "b_lr.tif")]
    split = split_by_position(files, [32, 32], size, 0.25)
    train_a, valid_a = strip_split(windows, size, 0.25)
    assert list(split.valid[split.valid < 32]) == list(valid_a)
    assert list(split.train[split.train < 32]) == list(train_a)
    assert list(split.valid[split.valid >= 32]) == list(range(56, 64))  # b: the last 8 patches
    assert split.dropped == 32 - len(train_a) - len(valid_a)
    assert "b_lr.tif: no centres file" in caplog.text


def test_a_centres_file_of_other_patches_is_not_used(tmp_path):
    write_points(str(tmp_path / "lr_centers.gpkg"), [(0.0, 0.0)])  # no patch/lr_col/lr_row fields
    write_raster(str(tmp_path / "lr.tif"), np.zeros((40, 4), np.uint8))
    split = split_by_position([str(tmp_path / "lr.tif")], [10], 4, 0.2)
    assert list(split.valid) == [8, 9]


def test_too_few_patches_to_split_is_refused(tmp_path):
    write_raster(str(tmp_path / "lr.tif"), np.zeros((4, 4), np.uint8))
    with pytest.raises(SR4RSError, match="too few patches"):
        split_by_position([str(tmp_path / "lr.tif")], [1], 4, 0.5)
