"""sr.py reliability (issue 11): infinite input pixels are nodata like NaN, both engines round, clamp and
keep valid pixels off nodata the same way, `--engine auto` falls back to the built-in engine on inputs OTB
cannot take, and `--quiet` prints nothing but errors."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, write_raster
from osgeo import gdal
from savedmodel_fixtures import cached, nearest_export, nearest_x4

import logs
import otb_engine
import sr
from cli import run_cli
from raster import open_raster, read_array, to_encoding, valid_mask


@pytest.fixture(scope="module")
def nearest(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Exact x4 nearest neighbour, 1 band (a fixed band count, as OTB needs)."""
    return cached(tmp_path_factory, "nearest_export1", lambda p: nearest_export(p, 1))


def run_sr(*argv: str, quiet: bool = True) -> np.ndarray:
    """sr.py; returns the output as [rows, cols, bands]."""
    out = argv[argv.index("--output") + 1]
    assert sr.main([*argv, *(["--quiet"] if quiet else [])]) == 0
    return read_array(open_raster(out))


def test_valid_mask_treats_infinities_as_nan():
    values = np.array([1.0, np.nan, np.inf, -np.inf, -5.0], np.float32)
    assert valid_mask(values, None).tolist() == [True, False, False, False, True]
    assert valid_mask(values, -5.0).tolist() == [True, False, False, False, False]
    assert valid_mask(np.array([0, 7], np.int16), 0).tolist() == [False, True]


def test_infinite_pixels_are_nodata_and_never_spread(tmp_path, generator3):
    lr = np.random.default_rng(11).uniform(0, 1000, (30, 28, 3)).astype(np.float32)
    invalid = np.zeros(lr.shape, bool)
    invalid[8, 5:9] = invalid[20:22, 15, 1] = invalid[3, 20] = True
    with_inf = lr.copy()
    with_inf[8, 5:9], with_inf[20:22, 15, 1], with_inf[3, 20] = np.inf, -np.inf, np.nan
    with_nan = np.where(invalid, np.nan, lr).astype(np.float32)
    base = ["--savedmodel", generator3, "--engine", "tf", "--ts", "32"]
    hr = run_sr("--input", write_raster(str(tmp_path / "inf.tif"), with_inf), "--output",
                str(tmp_path / "inf_out.tif"), *base)
    reference = run_sr("--input", write_raster(str(tmp_path / "nan.tif"), with_nan), "--output",
                       str(tmp_path / "nan_out.tif"), *base)
    hr_invalid = nearest_x4(invalid)
    assert np.isnan(hr[hr_invalid]).all() and np.isfinite(hr[~hr_invalid]).all()
    np.testing.assert_array_equal(hr, reference)
    as_int = run_sr("--input", str(tmp_path / "inf.tif"), "--output", str(tmp_path / "int.tif"), *base,
                    "--encoding", "int16", "--nodata", "-1")
    assert (as_int[hr_invalid] == -1).all() and (as_int[~hr_invalid] != -1).all()


def test_auto_falls_back_to_the_builtin_engine_when_otb_cannot_take_the_input(tmp_path, monkeypatch, caplog,
                                                                               capsys, nearest):
    def no_otb_run(settings: object) -> None:
        raise AssertionError("the OTB engine was chosen")

    monkeypatch.setattr(sr, "load_otb", lambda: object())  # as if `make otb` had been run
    monkeypatch.setattr(otb_engine, "run", no_otb_run)
    src = write_raster(str(tmp_path / "small.tif"), np.full((10, 12), 100.0, np.float32))
    with caplog.at_level(logging.INFO):
        hr = run_sr("--input", src, "--savedmodel", nearest, "--output", str(tmp_path / "auto.tif"),
                    quiet=False)
    assert hr.shape == (40, 48, 1)
    lines = [r.getMessage() for r in caplog.records if "built-in engine" in r.getMessage()]
    assert len(lines) == 1 and "too small for the OTB engine" in lines[0], caplog.text
    capsys.readouterr()
    assert run_cli(sr.main, ["--input", src, "--savedmodel", nearest, "--output", str(tmp_path / "otb.tif"),
                             "--engine", "otb"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "too small for the OTB engine" in err[0]
    assert "--engine tf" in err[0] and not (tmp_path / "otb.tif").exists()


def test_inputs_otb_cannot_take(tmp_path):
    geo = gdal.Open(write_raster(str(tmp_path / "geo.tif"), np.ones((50, 60), np.float32)))
    assert otb_engine.refusal(geo, 64, 32) is None
    assert "too small for the OTB engine" in otb_engine.refusal(geo, 512, 64)
    assert "too small for the OTB engine" in otb_engine.refusal(geo, 160, 32)  # 56 LR pixels a side needed
    assert "band count" in otb_engine.refusal(geo, 64, 32, fixed_bands=False)
    for name, gt in (("plain.tif", None), ("south_up.tif", (0.0, 10.0, 0.0, 0.0, 0.0, 10.0)),
                     ("rotated.tif", (0.0, 10.0, 1.0, 0.0, 1.0, -10.0))):
        ds = gdal.GetDriverByName("GTiff").Create(str(tmp_path / name), 60, 60, 1, gdal.GDT_Float32)
        if gt:
            ds.SetGeoTransform(gt)
        assert "north-up" in otb_engine.refusal(ds, 64, 32) or "no georeferencing" in otb_engine.refusal(
            ds, 64, 32), name


@pytest.mark.otb
def test_auto_takes_the_builtin_engine_for_a_small_image_with_otb_there(tmp_path, nearest, caplog):
    src = write_raster(str(tmp_path / "small.tif"), np.full((10, 10), 100.0, np.float32))
    with caplog.at_level(logging.INFO):
        hr = run_sr("--input", src, "--savedmodel", nearest, "--output", str(tmp_path / "o.tif"), quiet=False)
    assert hr.shape == (40, 40, 1) and "using the built-in engine" in caplog.text


def engine_outputs(tmp_path, model: str, src: str, *args: str) -> tuple[np.ndarray, np.ndarray, gdal.Dataset]:
    """OTB's output, the built-in engine's output cropped to OTB's extent, and OTB's dataset."""
    common = ["--input", src, "--savedmodel", model, *args]
    otb_hr = run_sr(*common, "--output", str(tmp_path / "otb.tif"), "--engine", "otb")
    tf_hr = run_sr(*common, "--output", str(tmp_path / "tf.tif"), "--engine", "tf")
    otb_ds = gdal.Open(str(tmp_path / "otb.tif"))
    tf_gt, otb_gt = gdal.Open(str(tmp_path / "tf.tif")).GetGeoTransform(), otb_ds.GetGeoTransform()
    col, row = round((otb_gt[0] - tf_gt[0]) / otb_gt[1]), round((otb_gt[3] - tf_gt[3]) / otb_gt[5])
    return otb_hr, tf_hr[row:row + otb_hr.shape[0], col:col + otb_hr.shape[1]], otb_ds


@pytest.mark.otb
def test_otb_integer_output_is_rounded_clamped_and_off_nodata_like_the_builtin_engine(tmp_path, nearest):
    rng = np.random.default_rng(12)
    lr = rng.uniform(-20, 300, (40, 44)).astype(np.float32)
    lr[rng.random(lr.shape) < 0.05] = 255.0  # nodata
    lr[5, 7], lr[30, 30], lr[12, 20] = np.nan, np.inf, -np.inf
    src = write_raster(str(tmp_path / "in.tif"), lr)
    otb_hr, tf_hr, otb_ds = engine_outputs(tmp_path, nearest, src, "--ts", "32", "--pad", "32",
                                           "--encoding", "uint8", "--nodata", "255")
    assert otb_hr.dtype == np.uint8 and otb_ds.GetRasterBand(1).GetNoDataValue() == 255
    np.testing.assert_array_equal(otb_hr, tf_hr)
    crop = np.s_[32:32 + otb_hr.shape[0], 32:32 + otb_hr.shape[1]]  # OTB drops pad = 32 HR pixels
    valid = nearest_x4(valid_mask(lr, 255.0)[:, :, np.newaxis])[crop]
    expected = to_encoding(nearest_x4(lr[:, :, np.newaxis])[crop], valid, np.dtype(np.uint8), 255.0)
    np.testing.assert_array_equal(otb_hr, expected)
    assert (otb_hr[valid] != 255).all() and (otb_hr[~valid] == 255).all()


@pytest.mark.otb
def test_otb_and_builtin_engines_agree_on_integers_with_nodata_holes(tmp_path, generator3):
    lr = np.random.default_rng(13).integers(100, 3000, (70, 66, 3)).astype(np.int16)
    lr[30:34, 20:40] = -9999
    lr[50, 10, 2] = -9999
    src = write_raster(str(tmp_path / "in.tif"), lr, nodata=-9999)
    otb_hr, tf_hr, _ = engine_outputs(tmp_path, generator3, src, "--ts", "64")
    assert otb_hr.dtype == np.int16 and otb_hr.shape == (128, 128, 3)
    np.testing.assert_array_equal(otb_hr == -9999, tf_hr == -9999)
    assert (otb_hr == -9999).sum() > 0
    diff = np.abs(otb_hr.astype(int) - tf_hr)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999  # float noise only, at rounding ties


@pytest.fixture(scope="module")
def cli_case(tmp_path_factory: pytest.TempPathFactory, nearest: str) -> tuple[str, str, dict[str, str]]:
    """An input, a SavedModel and the environment of a user's shell (no TensorFlow or OTB log settings)."""
    folder = tmp_path_factory.mktemp("cli")
    src = write_raster(str(folder / "in.tif"), np.random.default_rng(14).uniform(0, 300, (40, 40, 1))
                       .astype(np.float32))
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "OTB_LOGGER_LEVEL")}
    return src, nearest, env


def sr_command(cli_case: tuple[str, str, dict[str, str]], out: str,
               *args: str) -> subprocess.CompletedProcess:
    """Run sr.py as a user does, --ts 32."""
    src, model, env = cli_case
    return subprocess.run([sys.executable, os.path.join(ROOT, "sr.py"), "--input", src, "--savedmodel", model,
                           "--output", out, "--ts", "32", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["tf", pytest.param("otb", marks=pytest.mark.otb)])
def test_quiet_prints_nothing(tmp_path, cli_case, engine):
    result = sr_command(cli_case, str(tmp_path / "o.tif"), "--engine", engine, "--quiet")
    assert result.returncode == 0 and (result.stdout, result.stderr) == ("", "")
    failed = sr_command(cli_case, str(tmp_path / "nodir" / "o.tif"), "--engine", engine, "--quiet")
    assert failed.returncode == 2 and failed.stdout == "" and failed.stderr.count("\n") == 1
    assert failed.stderr.startswith("error: ")


@pytest.mark.slow
def test_tensorflow_start_up_lines_at_most_once(tmp_path, cli_case):
    result = sr_command(cli_case, str(tmp_path / "o.tif"), "--engine", "tf")
    assert result.returncode == 0
    for text in ("oneDNN", "absl::InitializeLog", "cpu_feature_guard"):
        assert result.stderr.count(text) <= 1, result.stderr
    assert "written" in result.stderr  # SR4RS's own INFO lines are still there


def test_native_log_lines_keep_each_warning_once_and_errors_when_quiet():
    text = "\n".join([
        logs.ABSL_BANNER,
        "I0000 00:00:1796247616.439142   22379 port.cc:153] oneDNN custom operations are on.",
        "I0000 00:00:1796247616.469725   22379 cpu_feature_guard.cc:227] This TensorFlow binary is optimized",
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow.",
        "W0000 00:00:1796247617.1   22379 cuda_dnn.cc:1] Unable to register cuDNN factory",
        "  (details)",
        logs.ABSL_BANNER,
        "I0000 00:00:1796247617.689174   22379 port.cc:153] oneDNN custom operations are on.",
        "W0000 00:00:1796247617.2   22379 cuda_dnn.cc:1] Unable to register cuDNN factory",
        "2024-01-05 10:00:00.123456: E tensorflow/core/x.cc:12] something failed",
    ])
    assert logs.native_log_lines(text, quiet=False) == [
        "W0000 00:00:1796247617.1   22379 cuda_dnn.cc:1] Unable to register cuDNN factory", "  (details)",
        "2024-01-05 10:00:00.123456: E tensorflow/core/x.cc:12] something failed"]
    assert logs.native_log_lines(text, quiet=True) == [
        "2024-01-05 10:00:00.123456: E tensorflow/core/x.cc:12] something failed"]
    assert logs.native_log_lines("a Python warning", quiet=False) == ["a Python warning"]
    assert logs.native_log_lines("a Python warning", quiet=True) == []


def test_argument_input_output_and_model_mistakes_are_answered_before_tensorflow_loads(tmp_path):
    image = write_raster(str(tmp_path / "lr.tif"), np.ones((8, 8, 3), np.float32))
    empty = tmp_path / "empty_model"
    empty.mkdir()
    probe = ("import sys, cli, sr\ncode = cli.run_cli(sr.main, sys.argv[1:])\n"
             "print(code, 'tensorflow' in sys.modules)")
    out = str(tmp_path / "o.tif")
    for args in (["--input", "no.tif", "--savedmodel", str(empty), "--output", out],
                 ["--input", image, "--savedmodel", str(tmp_path / "none"), "--output", out],
                 ["--input", image, "--savedmodel", str(empty), "--output", out],
                 ["--input", image, "--savedmodel", str(empty), "--output", str(tmp_path)]):
        done = subprocess.run([sys.executable, "-c", probe, *args], cwd=ROOT, capture_output=True, text=True)
        assert done.stdout.split() == ["2", "False"], done.stderr
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")


def test_cog_output_is_the_same_image_as_a_cloud_optimized_geotiff(tmp_path, nearest, capsys):
    lr = np.random.default_rng(2).uniform(0, 1000, (40, 48)).astype(np.float32)
    src = write_raster(str(tmp_path / "lr.tif"), lr, nodata=-1.0)
    plain = run_sr("--input", src, "--savedmodel", nearest, "--output", str(tmp_path / "plain.tif"),
                   "--engine", "tf")
    cog_path = str(tmp_path / "cog.tif")
    cog = run_sr("--input", src, "--savedmodel", nearest, "--output", cog_path, "--engine", "tf", "--cog",
                 "--co", "BLOCKSIZE=128")
    np.testing.assert_array_equal(cog, plain)
    ds = open_raster(cog_path)
    assert ds.GetMetadataItem("LAYOUT", "IMAGE_STRUCTURE") == "COG"
    assert ds.GetRasterBand(1).GetBlockSize() == [128, 128] and ds.GetRasterBand(1).GetOverviewCount() >= 1
    assert ds.GetRasterBand(1).GetNoDataValue() == -1.0
    assert sorted(os.listdir(tmp_path)) == ["cog.tif", "lr.tif", "plain.tif"]
    assert run_cli(sr.main, ["--input", src, "--savedmodel", nearest, "--output", str(tmp_path / "x.tif"),
                             "--cog", "--co", "TILED=YES"]) == 2
    assert "bad COG creation option" in capsys.readouterr().err
