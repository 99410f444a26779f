"""evaluate.py: metrics of files, nodata, grids, bicubic, CLI, JSON and PNG (the metric functions
themselves: test_metrics.py)."""
from __future__ import annotations

import errno
import json
import math
import os

import numpy as np
import pytest
from helpers import write_raster
from osgeo import gdal

import evaluate
import metrics
from cli import run_cli
from errors import SR4RSError

ORIGIN = (500000.0, 4800000.0)


def smooth_image(seed: int = 0, size: int = 64, bands: int = 3) -> np.ndarray:
    """A small textured image (edges + smooth variations + noise), int16."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(float)
    base = 2000 + 800 * np.sin(x / 5.0) * np.cos(y / 7.0) + 1500 * ((x + 2 * y) % 37 < 15)
    image = np.stack([base * (0.6 + 0.2 * b) for b in range(bands)], axis=-1)
    return (image + rng.normal(0, 30, image.shape)).astype(np.int16)


def mean4(image: np.ndarray) -> np.ndarray:
    rows, cols, bands = image.shape
    return image.astype(np.float64).reshape(rows // 4, 4, cols // 4, 4, bands).mean(axis=(1, 3))


@pytest.fixture
def scene(tmp_path):
    """HR 64x64 at 2.5 m, LR = 4x4 mean at 10 m (float32, exact), SR = HR + 10 on band 1."""
    hr = smooth_image()
    sr = hr.copy()
    sr[:, :, 0] += 10
    paths = {
        "hr": write_raster(str(tmp_path / "hr.tif"), hr, ORIGIN, 2.5),
        "sr": write_raster(str(tmp_path / "sr.tif"), sr, ORIGIN, 2.5),
        "lr": write_raster(str(tmp_path / "lr.tif"), mean4(hr).astype(np.float32), ORIGIN, 10.0),
    }
    return paths, hr, sr


# --- evaluate() on files ------------------------------------------------------------------------

def test_evaluate_same_grid_with_bicubic_and_lr_consistency(scene):
    paths, hr, sr = scene
    result = evaluate.evaluate(paths["sr"], paths["hr"], paths["lr"])
    data_range = float(hr.max() - hr.min())
    assert result["data_range"] == data_range
    m = result["metrics"]["sr"]
    # Band 1 is off by exactly 10, the others are exact.
    np.testing.assert_allclose(m["rmse_per_band"], [10.0, 0.0, 0.0], atol=1e-9)
    assert m["psnr"] == pytest.approx(10 * math.log10(data_range ** 2 / (100.0 / 3)))
    # LR = 4x4 mean of HR, so SR's 4x4 mean is off by 10 on band 1 only.
    assert m["lr_rmse"] == pytest.approx(math.sqrt(100.0 / 3), rel=1e-6)
    assert result["lr_consistency_reference"]["lr_rmse"] == pytest.approx(0.0, abs=1e-3)
    bicubic = result["metrics"]["bicubic"]
    assert bicubic["psnr"] < m["psnr"]
    assert result["metrics"]["sr_minus_bicubic"]["psnr"] == pytest.approx(m["psnr"] - bicubic["psnr"])
    assert result["valid_pixels"] == 64 * 64 and result["reference_resampling"] is None


def test_bicubic_is_gdal_cubic_warp(scene, tmp_path):
    """An SR image made by `gdalwarp -tr 2.5 2.5 -r cubic -ot Float32 LR` scores as the bicubic column."""
    paths, _, _ = scene
    gis = str(tmp_path / "gis_bicubic.tif")
    gdal.Warp(gis, paths["lr"], xRes=2.5, yRes=2.5, resampleAlg="cubic", outputType=gdal.GDT_Float32)
    result = evaluate.evaluate(gis, paths["hr"], paths["lr"])
    diff = result["metrics"]["sr_minus_bicubic"]
    assert diff["psnr"] == pytest.approx(0.0, abs=1e-9)
    assert diff["ssim"] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(diff["rmse_per_band"], 0.0, atol=1e-9)


def test_nodata_from_the_files_and_from_the_option(tmp_path):
    hr = smooth_image()
    sr = hr.copy()
    sr[:, :, 1] += 7
    hr_bad, sr_bad = hr.copy(), sr.copy()
    hr_bad[:5, :9] = -1  # declared nodata of the reference
    sr_bad[40:44, 10:20, 2] = -9999  # undeclared: given with --nodata
    sr_bad[50:60, 50:60] = 30000  # garbage under the reference's nodata
    hr_bad[50:60, 50:60] = -1
    ref_path = write_raster(str(tmp_path / "hr.tif"), hr_bad, ORIGIN, 2.5, nodata=-1)
    sr_path = write_raster(str(tmp_path / "sr.tif"), sr_bad, ORIGIN, 2.5)
    result = evaluate.evaluate(sr_path, ref_path, nodata=-9999, data_range=1000.0)
    mask = np.ones((64, 64), dtype=bool)
    mask[:5, :9] = mask[40:44, 10:20] = mask[50:60, 50:60] = False
    assert result["valid_pixels"] == int(mask.sum())
    np.testing.assert_allclose(result["metrics"]["sr"]["rmse_per_band"], [0.0, 7.0, 0.0], atol=1e-9)
    expected_ssim = metrics.ssim(sr, hr, 1000.0, mask)
    assert result["metrics"]["sr"]["ssim"] == pytest.approx(expected_ssim, abs=1e-12)
    assert result["data_range_source"] == "--data_range"


def test_lr_nodata_excludes_the_bicubic_kernel_support(scene, tmp_path):
    paths, hr, _ = scene
    lr = mean4(hr).astype(np.float32)
    lr[8, 8] = -1
    lr_path = write_raster(str(tmp_path / "lr_nodata.tif"), lr, ORIGIN, 10.0, nodata=-1)
    result = evaluate.evaluate(paths["sr"], paths["hr"], lr_path)
    # LR pixels 6..10 (2 around the nodata pixel) -> HR rows/cols 24..43 excluded: 20 x 20.
    assert result["valid_pixels"] == 64 * 64 - 20 * 20
    # Same with an SR image covering only part of the LR image (the LR is read by window).
    sr_crop = write_raster(str(tmp_path / "sr_crop.tif"), hr[16:, 16:], (ORIGIN[0] + 40, ORIGIN[1] - 40), 2.5)
    result = evaluate.evaluate(sr_crop, paths["hr"], lr_path)
    assert result["valid_pixels"] == 48 * 48 - 20 * 20


def test_reference_offset_by_whole_pixels_is_read_without_resampling(tmp_path):
    big = smooth_image(size=96)
    ref_path = write_raster(str(tmp_path / "hr.tif"), big, ORIGIN, 2.5)
    sr_origin = (ORIGIN[0] + 10 * 2.5, ORIGIN[1] - 20 * 2.5)
    sr_path = write_raster(str(tmp_path / "sr.tif"), big[20:84, 10:74], sr_origin, 2.5)
    result = evaluate.evaluate(sr_path, ref_path)
    assert result["reference_resampling"] is None
    assert result["metrics"]["sr"]["psnr"] == math.inf and result["valid_pixels"] == 64 * 64


def test_finer_reference_is_averaged_onto_the_sr_grid(tmp_path):
    hr = smooth_image()
    finer = np.repeat(np.repeat(hr, 2, axis=0), 2, axis=1)  # 1.25 m, each pixel 2x2
    ref_path = write_raster(str(tmp_path / "ref_1m25.tif"), finer, ORIGIN, 1.25)
    sr_path = write_raster(str(tmp_path / "sr.tif"), hr, ORIGIN, 2.5)
    result = evaluate.evaluate(sr_path, ref_path)
    assert result["reference_resampling"] == "average"
    np.testing.assert_allclose(result["metrics"]["sr"]["rmse_per_band"], 0.0, atol=1e-3)


def test_partial_overlap_and_crop_border(tmp_path):
    hr = smooth_image()
    ref_path = write_raster(str(tmp_path / "hr.tif"), hr[:, 24:], (ORIGIN[0] + 24 * 2.5, ORIGIN[1]), 2.5)
    sr_path = write_raster(str(tmp_path / "sr.tif"), hr, ORIGIN, 2.5)
    result = evaluate.evaluate(sr_path, ref_path)
    assert result["window"] == {"xoff": 24, "yoff": 0, "xsize": 40, "ysize": 64, "crop_border": 0}
    result = evaluate.evaluate(sr_path, ref_path, crop_border=4)
    assert (result["window"]["xoff"], result["window"]["xsize"], result["window"]["ysize"]) == (28, 32, 56)


def test_images_without_georeferencing_are_compared_pixel_to_pixel(tmp_path):
    hr = smooth_image()
    paths = {}
    for name, array in (("hr", hr), ("sr", hr), ("lr", mean4(hr).astype(np.float32))):
        paths[name] = str(tmp_path / f"{name}.tif")
        gdal_array = gdal.GetDriverByName("GTiff").Create(
            paths[name], array.shape[1], array.shape[0], array.shape[2],
            gdal.GDT_Int16 if array.dtype == np.int16 else gdal.GDT_Float32)
        for b in range(array.shape[2]):
            gdal_array.GetRasterBand(b + 1).WriteArray(array[:, :, b])
        gdal_array = None
    result = evaluate.evaluate(paths["sr"], paths["hr"], paths["lr"])
    assert result["metrics"]["sr"]["psnr"] == math.inf
    assert result["metrics"]["bicubic"]["psnr"] < 60
    assert result["lr_factor"] == 4 and result["metrics"]["sr"]["lr_rmse"] == pytest.approx(0, abs=1e-3)
    with pytest.raises(SR4RSError, match="not georeferenced"):
        evaluate.evaluate(paths["sr"], write_raster(str(tmp_path / "geo.tif"), hr, ORIGIN, 2.5))


# --- CLI ----------------------------------------------------------------------------------------

def test_cli_writes_json_and_png(scene, tmp_path, capsys):
    paths, _, _ = scene
    out, png = str(tmp_path / "metrics.json"), str(tmp_path / "quicklook.png")
    code = run_cli(evaluate.main, ["--sr", paths["sr"], "--ref", paths["hr"], "--lr", paths["lr"],
                                   "--out", out, "--png", png])
    assert code == 0
    table = capsys.readouterr().out
    for row in ("PSNR (dB)", "SSIM", "RMSE band 3", "SAM (degrees)", "LR consistency RMSE", "SR - bicubic"):
        assert row in table
    with open(out) as f:
        data = json.load(f)
    expected = evaluate.evaluate(paths["sr"], paths["hr"], paths["lr"])
    assert data["metrics"]["sr"]["psnr"] == pytest.approx(expected["metrics"]["sr"]["psnr"])
    assert set(data["metrics"]) == {"sr", "bicubic", "sr_minus_bicubic"}
    assert data["lr_consistency_reference"]["lr_psnr"] is None  # +inf is written as null
    assert data["data_range_source"].startswith("reference max - min")
    ds = gdal.Open(png)
    assert ds.GetDriver().ShortName == "PNG" and ds.RasterCount == 3
    assert ds.GetRasterBand(1).DataType == gdal.GDT_Byte
    assert (ds.RasterXSize, ds.RasterYSize) == (3 * 256 + 2 * 8, 256 + 24)  # 64 px crops zoomed 4x
    assert ds.ReadAsArray().std() > 10
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temporary left


def test_cli_without_lr_has_only_the_sr_column(scene, capsys):
    paths, _, _ = scene
    assert run_cli(evaluate.main, ["--sr", paths["sr"], "--ref", paths["hr"]]) == 0
    table = capsys.readouterr().out
    assert "bicubic" not in table.splitlines()[0] and "give the LR input with --lr" in table


@pytest.mark.parametrize("problem, message", [
    ("missing", "no such file"),
    ("bands", "band counts differ"),
    ("overlap", "does not overlap"),
    ("crop", "at least 11 x 11"),
])
def test_cli_errors_exit_2_without_outputs(scene, tmp_path, capsys, problem, message):
    paths, hr, _ = scene
    args = ["--sr", paths["sr"], "--ref", paths["hr"]]
    if problem == "missing":
        args[3] = str(tmp_path / "nope.tif")
    elif problem == "bands":
        args[3] = write_raster(str(tmp_path / "two.tif"), hr[:, :, :2], ORIGIN, 2.5)
    elif problem == "overlap":
        args[3] = write_raster(str(tmp_path / "far.tif"), hr, (ORIGIN[0] + 1000, ORIGIN[1]), 2.5)
    else:
        args += ["--crop_border", "27"]
    out, png = tmp_path / "m.json", tmp_path / "q.png"
    assert run_cli(evaluate.main, args + ["--out", str(out), "--png", str(png)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not out.exists() and not png.exists()


@pytest.mark.parametrize("outputs, message", [
    ({"--out": "sr"}, "--out would overwrite the input --sr"),
    ({"--png": "hr"}, "--png would overwrite the input --ref"),
    ({"--out": "lr_link"}, "--out would overwrite the input --lr"),
    ({"--out": "m.json", "--png": "m_link.json"}, "--png and --out are the same file"),
])
def test_outputs_never_overwrite_inputs_or_each_other(scene, tmp_path, capsys, outputs, message):
    paths, _, _ = scene
    os.symlink(paths["lr"], tmp_path / "lr_link.tif")
    os.symlink(tmp_path / "m.json", tmp_path / "m_link.json")
    names = {"sr": paths["sr"], "hr": paths["hr"], "lr_link": str(tmp_path / "lr_link.tif")}
    args = ["--sr", paths["sr"], "--ref", paths["hr"], "--lr", paths["lr"]]
    for option, name in outputs.items():
        args += [option, names.get(name, str(tmp_path / name))]
    before = {name: os.stat(path).st_mtime_ns for name, path in paths.items()}
    assert run_cli(evaluate.main, args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert {name: os.stat(path).st_mtime_ns for name, path in paths.items()} == before
    assert not os.path.exists(tmp_path / "m.json")


def test_images_without_georeferencing_must_have_matching_sizes(tmp_path):
    hr = smooth_image()
    paths = {}
    for name, array in (("hr", hr), ("sr", hr[:, :60]), ("sr_ok", hr), ("lr", mean4(hr)[:15])):
        paths[name] = str(tmp_path / f"{name}.tif")
        ds = gdal.GetDriverByName("GTiff").Create(paths[name], array.shape[1], array.shape[0], array.shape[2],
                                                   gdal.GDT_Float32)
        for b in range(array.shape[2]):
            ds.GetRasterBand(b + 1).WriteArray(array[:, :, b])
        ds = None
    with pytest.raises(SR4RSError, match="sizes do not match: SR 60 x 64, reference 64 x 64"):
        evaluate.evaluate(paths["sr"], paths["hr"])
    with pytest.raises(SR4RSError, match="sizes do not match: SR 64 x 64, reference 64 x 64, LR 16 x 15"):
        evaluate.evaluate(paths["sr_ok"], paths["hr"], paths["lr"])


def test_a_failed_png_leaves_no_json_and_one_line(scene, tmp_path, capsys, monkeypatch):
    from PIL import Image

    def full_disk(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Image.Image, "save", full_disk)
    paths, _, _ = scene
    out, png = tmp_path / "m.json", tmp_path / "q.png"
    assert run_cli(evaluate.main, ["--sr", paths["sr"], "--ref", paths["hr"], "--out", str(out),
                                   "--png", str(png)]) == 2
    assert capsys.readouterr().err == f"error: {png}: writing failed (no space left on device)\n"
    assert sorted(os.listdir(tmp_path)) == ["hr.tif", "lr.tif", "sr.tif"]
