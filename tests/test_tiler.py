"""The built-in engine (tiler.py) on real tiny SavedModels and synthetic GeoTIFFs: output grid, exact
values of a known model, seamless tiles, mirrored borders, nodata, NaN, clamping, atomic output."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from helpers import write_raster
from osgeo import gdal, osr
from savedmodel_fixtures import cached, nearest_model, nearest_x4

import sr
from raster import read_array, read_window, to_encoding
from sr_model import Signature, inspect_savedmodel
from tile_windows import TileGrid

ORIGIN = (500010.0, 4799990.0)


@pytest.fixture(scope="module")
def nearest(tmp_path_factory: pytest.TempPathFactory) -> str:
    return cached(tmp_path_factory, "nearest", nearest_model)


def run_tf(src: str, model: str, out: str, *args: str) -> np.ndarray:
    """sr.py with the built-in engine; returns the output as [rows, cols, bands]."""
    assert sr.main(["--input", src, "--savedmodel", model, "--output", out, "--engine", "tf", "--quiet",
                    *args]) == 0
    return read_array(gdal.Open(out))


def whole_image(model: str, lr: np.ndarray, pad: int) -> np.ndarray:
    """The model applied to the whole image at once, mirrored by pad/4 LR pixels (the reference)."""
    m = pad // 4
    padded = np.pad(lr.astype(np.float32), [(m, m), (m, m), (0, 0)], mode="symmetric")
    return Signature(inspect_savedmodel(model), pad)(padded[np.newaxis])[0]


def test_read_window_reads_the_mirrored_window(tmp_path):
    lr = np.arange(7 * 5 * 2, dtype=np.int16).reshape(7, 5, 2)
    ds = gdal.Open(write_raster(str(tmp_path / "in.tif"), lr))
    grid = TileGrid(5, 7, 8, 64)  # LR windows of 2 + 2*16 pixels a side: larger than the image
    for tile in grid.tiles():
        rows, cols = grid.window_indices(tile)
        np.testing.assert_array_equal(read_window(ds, rows, cols), lr[np.ix_(rows, cols)])
    np.testing.assert_array_equal(read_window(ds, np.array([5, 6, 6]), np.array([2, 1])),
                                  lr[[5, 6, 6]][:, [2, 1]])


@pytest.mark.parametrize("shape, dtype, ts", [((37, 53, 1), np.int16, 64), ((29, 31, 3), np.uint16, 100),
                                              ((41, 23, 4), np.float32, 512), ((9, 13, 3), np.int16, 4)])
def test_grid_and_exact_nearest_neighbour(tmp_path, nearest, shape, dtype, ts):
    rng = np.random.default_rng(1)
    lr = rng.integers(0, 10000, shape).astype(dtype)
    src = write_raster(str(tmp_path / "in.tif"), lr, origin=ORIGIN, pixel_size=10.0, epsg=2154)
    out = str(tmp_path / "out.tif")
    hr = run_tf(src, nearest, out, "--ts", str(ts))
    ds = gdal.Open(out)
    assert (ds.RasterYSize, ds.RasterXSize, ds.RasterCount) == (4 * shape[0], 4 * shape[1], shape[2])
    assert ds.GetGeoTransform() == (ORIGIN[0], 2.5, 0.0, ORIGIN[1], 0.0, -2.5)
    assert osr.SpatialReference(wkt=ds.GetProjection()).GetAuthorityCode(None) == "2154"
    assert ds.GetRasterBand(1).DataType == gdal.Open(src).GetRasterBand(1).DataType
    np.testing.assert_array_equal(hr, nearest_x4(lr))
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]


@pytest.mark.slow
def test_original_style_tf1_model_is_exact_borders_included(tmp_path, tf1_nearest):
    lr = np.random.default_rng(2).integers(-3000, 3000, (33, 19, 3)).astype(np.int16)
    src = write_raster(str(tmp_path / "in.tif"), lr)
    for ts in ("32", "512"):
        np.testing.assert_array_equal(run_tf(src, tf1_nearest, str(tmp_path / f"o{ts}.tif"), "--ts", ts),
                                      nearest_x4(lr))


def test_tiny_generator_receptive_field_is_below_the_pad(generator3):
    signature = Signature(inspect_savedmodel(generator3), 64)
    lr = np.random.default_rng(3).uniform(0, 1000, (1, 64, 64, 3)).astype(np.float32)
    moved = lr.copy()
    moved[0, 32, 32] += 500.0
    changed = np.nonzero(np.abs(signature(moved) - signature(lr)).max(axis=(0, 3)) > 0)
    # LR pixel 32 covers HR 128..131 of the full output, i.e. 64..67 of output_64.
    radius = max(64 - changed[0].min(), changed[0].max() - 67, 64 - changed[1].min(), changed[1].max() - 67)
    assert 0 < radius < 64


@pytest.mark.slow
@pytest.mark.parametrize("pad, sizes", [(64, (32, 68, 100, 512)), (128, (64, 512))])
def test_tiles_are_seamless_whatever_the_tile_size(tmp_path, generator3, pad, sizes):
    lr = np.random.default_rng(4).uniform(0, 2000, (45, 39, 3)).astype(np.float32)
    src = write_raster(str(tmp_path / "in.tif"), lr)
    reference = whole_image(generator3, lr, pad)
    assert reference.shape == (180, 156, 3)
    scale = np.abs(reference).max()
    for ts in sizes:
        hr = run_tf(src, generator3, str(tmp_path / f"o{ts}.tif"), "--ts", str(ts), "--pad", str(pad))
        np.testing.assert_allclose(hr, reference, rtol=0, atol=1e-5 * scale, err_msg=f"ts {ts}")
    batched = run_tf(src, generator3, str(tmp_path / "batched.tif"), "--ts", "32", "--pad", str(pad),
                     "--batch", "5")
    np.testing.assert_allclose(batched, reference, rtol=0, atol=1e-5 * scale)


def test_nodata_pixels_are_filled_and_marked(tmp_path, generator3):
    rng = np.random.default_rng(5)
    lr = rng.integers(100, 2000, (30, 26, 3)).astype(np.int16)
    holes = np.zeros(lr.shape, bool)
    holes[5:9, 3:12] = True
    holes[20, 20, 1] = True  # one band only
    with_nodata = np.where(holes, -9999, lr).astype(np.int16)
    src = write_raster(str(tmp_path / "in.tif"), with_nodata, nodata=-9999)
    hr = run_tf(src, generator3, str(tmp_path / "out.tif"), "--ts", "64")
    assert gdal.Open(str(tmp_path / "out.tif")).GetRasterBand(1).GetNoDataValue() == -9999
    hr_holes = nearest_x4(holes)
    assert (hr[hr_holes] == -9999).all() and (hr[~hr_holes] != -9999).all()
    # Elsewhere, exactly what the model gives on the image filled with the band means of valid pixels.
    means = [lr[..., b][~holes[..., b]].mean() for b in range(3)]
    filled = np.where(holes, np.asarray(means, np.float32), lr.astype(np.float32))
    expected = to_encoding(whole_image(generator3, filled, 64), ~hr_holes, np.dtype(np.int16), -9999)
    assert np.abs(hr.astype(int) - expected).max() <= 1


def test_nan_never_spreads_and_nodata_option(tmp_path, generator3):
    lr = np.random.default_rng(6).uniform(0, 1000, (25, 27, 3)).astype(np.float32)
    lr[10:12, 10:13] = np.nan
    lr[3, 4] = -1.0
    src = write_raster(str(tmp_path / "in.tif"), lr)
    hr = run_tf(src, generator3, str(tmp_path / "out.tif"))
    nan_hr = nearest_x4(np.isnan(lr))
    assert np.isnan(hr[nan_hr]).all() and np.isfinite(hr[~nan_hr]).all()
    assert np.isnan(gdal.Open(str(tmp_path / "out.tif")).GetRasterBand(1).GetNoDataValue())
    hr = run_tf(src, generator3, str(tmp_path / "out2.tif"), "--nodata", "-1", "--encoding", "int16")
    masked = nearest_x4(np.isnan(lr) | (lr == -1.0))
    assert (hr[masked] == -1).all() and (hr[~masked] != -1).all()


def test_integer_output_is_rounded_and_clamped(tmp_path, nearest):
    lr = np.array([[2.4, 2.6, -3.0], [255.6, 300.0, 17.5]], np.float32)[:, :, np.newaxis]
    src = write_raster(str(tmp_path / "in.tif"), lr)
    hr = run_tf(src, nearest, str(tmp_path / "out.tif"), "--encoding", "unsigned_char")
    assert gdal.Open(str(tmp_path / "out.tif")).GetRasterBand(1).DataType == gdal.GDT_Byte
    np.testing.assert_array_equal(hr, nearest_x4(np.array([[2, 3, 0], [255, 255, 18]])[:, :, np.newaxis]))


def test_band_metadata_and_default_creation_options(tmp_path, nearest):
    src = write_raster(str(tmp_path / "in.tif"), np.ones((20, 20, 3), np.uint16))
    ds = gdal.Open(src, gdal.GA_Update)
    for b, (name, colour) in enumerate([("red", gdal.GCI_RedBand), ("green", gdal.GCI_GreenBand),
                                        ("blue", gdal.GCI_BlueBand)]):
        ds.GetRasterBand(b + 1).SetDescription(name)
        ds.GetRasterBand(b + 1).SetColorInterpretation(colour)
    ds = None
    run_tf(src, nearest, str(tmp_path / "out.tif"), "--ts", "256")
    out = gdal.Open(str(tmp_path / "out.tif"))
    assert [out.GetRasterBand(b + 1).GetDescription() for b in range(3)] == ["red", "green", "blue"]
    assert out.GetRasterBand(3).GetColorInterpretation() == gdal.GCI_BlueBand
    assert out.GetMetadata("IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
    assert out.GetRasterBand(1).GetBlockSize() == [256, 256]


def test_failed_run_leaves_no_output(tmp_path, nearest, monkeypatch):
    src = write_raster(str(tmp_path / "in.tif"), np.ones((40, 40), np.float32))
    calls = []

    def failing(self, batch):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated failure")
        return np.zeros((batch.shape[0], 32, 32, 1), np.float32)

    monkeypatch.setattr(Signature, "__call__", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        run_tf(src, nearest, str(tmp_path / "out.tif"), "--ts", "32")
    assert sorted(os.listdir(tmp_path)) == ["in.tif"]


def test_progress_bar_and_log(tmp_path, nearest, capsys, caplog):
    src = write_raster(str(tmp_path / "in.tif"), np.ones((12, 12), np.float32))
    with caplog.at_level(logging.INFO):
        assert sr.main(["--input", src, "--savedmodel", nearest, "--output", str(tmp_path / "o.tif"),
                        "--engine", "tf", "--ts", "16"]) == 0
    assert "HR Mpx/s" in capsys.readouterr().err
    assert "9 tile(s) of 16 x 16" in caplog.text


def test_an_input_without_georeferencing_gives_an_output_without(tmp_path, nearest):
    src = str(tmp_path / "plain.tif")
    ds = gdal.GetDriverByName("GTiff").Create(src, 12, 10, 1, gdal.GDT_Byte)
    ds.GetRasterBand(1).WriteArray(np.arange(120, dtype=np.uint8).reshape(10, 12))
    ds = None
    out = str(tmp_path / "out.tif")
    hr = run_tf(src, nearest, out)
    assert hr.shape == (40, 48, 1)
    result = gdal.Open(out)
    assert result.GetGeoTransform(can_return_null=True) is None and result.GetProjection() == ""


def test_extended_filename_gives_creation_options_and_a_warning_for_the_rest(tmp_path, nearest, caplog):
    src = write_raster(str(tmp_path / "in.tif"), np.ones((8, 8), np.uint16))
    out = str(tmp_path / "out.tif")
    with caplog.at_level(logging.WARNING):
        assert sr.main(["--input", src, "--savedmodel", nearest, "--output",
                        out + "?&gdal:co:COMPRESS=LZW&box=0:0:4:4", "--engine", "tf", "--quiet"]) == 0
    assert "extended filename options other than gdal:co: are ignored: box=0:0:4:4" in caplog.text
    assert gdal.Open(out).GetMetadata("IMAGE_STRUCTURE")["COMPRESSION"] == "LZW"
    np.testing.assert_array_equal(read_array(gdal.Open(out)), np.ones((32, 32, 1)))
