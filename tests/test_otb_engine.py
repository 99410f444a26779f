"""The OTB engine (otb_engine.py): every TensorflowModelServe parameter of docs/DESIGN.md §8, the origin fix,
and, when OTBTF is built (`make otb`), real runs: exact x4 nearest-neighbour models (this project's and
an original-style TF1 one) land where they should, and OTB and the built-in engine agree."""
from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import pytest
from helpers import write_raster
from osgeo import gdal
from savedmodel_fixtures import cached, nearest_export

import otb_engine
import sr
from cli import run_cli
from errors import SR4RSError
from inference_settings import InferenceSettings
from raster import read_array


@pytest.fixture(scope="module")
def nearest(tmp_path_factory: pytest.TempPathFactory) -> str:
    """OTB needs a fixed band count: this project's export of an exact nearest-neighbour model, 1 band."""
    return cached(tmp_path_factory, "nearest_export1", lambda p: nearest_export(p, 1))


def settings(**changes: object) -> InferenceSettings:
    """Settings of an OTB run: ts 512, pad 64, int16, no nodata, no creation option, with `changes`."""
    base = InferenceSettings(input="in.tif", savedmodel="model", output="out.tif", ts=512, pad=64,
                             gdal_type=gdal.GDT_Int16, nodata=None, out_nodata=None, creation_options={},
                             fill=(0.0,))
    return dataclasses.replace(base, **changes)


def test_parameters_are_those_of_spec_section_8():
    params = otb_engine.parameters(settings(), "in.tif", "out.tif?&streaming:type=tiled")
    assert params == {
        "source1.il": ["in.tif"], "source1.rfieldx": 160, "source1.rfieldy": 160,
        "source1.placeholder": "lr_input", "model.dir": "model", "model.fullyconv": True,
        "output.names": ["output_64"], "output.efieldx": 512, "output.efieldy": 512,
        "output.spcscale": 0.25, "optim.tilesizex": 512, "optim.tilesizey": 512,
        "optim.disabletiling": True, "out": "out.tif?&streaming:type=tiled"}
    params = otb_engine.parameters(settings(ts=100, pad=256, nodata=-10000), "filled.tif", "o.tif")
    assert (params["source1.rfieldx"], params["output.efieldy"]) == (153, 100)
    assert params["output.names"] == ["output_256"] and params["source1.il"] == ["filled.tif"]
    assert "source1.nodata" not in params  # the input OTB reads has no invalid pixel left (fill_input)


def test_output_filename_streams_rows_of_tiles_into_a_float_scratch_file():
    name = otb_engine.output_filename("/d/o.tif", 256)
    assert name == ("/d/o.tif?&gdal:co:TILED=YES&gdal:co:BLOCKXSIZE=256&gdal:co:BLOCKYSIZE=256"
                    "&gdal:co:COMPRESS=DEFLATE&gdal:co:ZLEVEL=1&gdal:co:PREDICTOR=3&gdal:co:BIGTIFF=IF_SAFER"
                    "&streaming:type=tiled&streaming:sizemode=height&streaming:sizevalue=256")


def test_output_size_and_origin_fix(caplog):
    assert otb_engine.otb_output_size(93, 77, 64, 32) == (256, 192)
    assert otb_engine.otb_output_size(93, 77, 100, 64) == (200, 100)
    assert otb_engine.otb_output_size(24, 100, 32, 32) == (32, 320)  # 4*24 - 64 + 3 = 35
    assert otb_engine.otb_output_size(100, 40, 512, 64) == (0, 0)
    in_gt = (500000.0, 10.0, 0.0, 4800000.0, 0.0, -10.0)
    fixed = (500160.0, 2.5, 0.0, 4799840.0, 0.0, -2.5)  # pad 64 HR pixels inside the input's corner
    even_rfield = (500163.75, 2.5, 0.0, 4799836.25, 0.0, -2.5)  # what OTBTF r4.3.1 writes (measured)
    odd_rfield = (500158.75, 2.5, 0.0, 4799841.25, 0.0, -2.5)
    assert otb_engine.fixed_geotransform(even_rfield, in_gt, 64) == fixed
    assert otb_engine.fixed_geotransform(odd_rfield, in_gt, 64) == fixed
    assert otb_engine.fixed_geotransform(fixed, in_gt, 64) == fixed
    far = (500100.0, 2.5, 0.0, 4799840.0, 0.0, -2.5)
    with caplog.at_level(logging.WARNING):
        assert otb_engine.fixed_geotransform(far, in_gt, 64) == far
    assert "unexpectedly far" in caplog.text


def run_otb(src: str, model: str, out: str, *args: str) -> tuple[np.ndarray, tuple[float, ...]]:
    assert sr.main(["--input", src, "--savedmodel", model, "--output", out, "--engine", "otb", "--quiet",
                    *args]) == 0
    ds = gdal.Open(out.split("?")[0])
    return read_array(ds), ds.GetGeoTransform()


def expected_at(lr: np.ndarray, in_gt: tuple[float, ...], out_gt: tuple[float, ...], shape: tuple[int, ...]):
    """Nearest-neighbour values of `lr` at the centres of an output grid: what a correctly
    georeferenced x4 nearest-neighbour output holds."""
    xs = out_gt[0] + (np.arange(shape[1]) + 0.5) * out_gt[1]
    ys = out_gt[3] + (np.arange(shape[0]) + 0.5) * out_gt[5]
    cols = np.floor((xs - in_gt[0]) / in_gt[1]).astype(int)
    rows = np.floor((ys - in_gt[3]) / in_gt[5]).astype(int)
    return lr[np.ix_(rows, cols)]


@pytest.mark.otb
@pytest.mark.parametrize("ts, pad", [(64, 32), (128, 64), (100, 64), (52, 32)])
def test_otb_output_is_exact_and_correctly_georeferenced(tmp_path, nearest, ts, pad):
    lr = np.random.default_rng(7).integers(0, 30000, (77, 93, 1)).astype(np.int16)
    src = write_raster(str(tmp_path / "in.tif"), lr, origin=(500003.0, 4800007.0))
    hr, gt = run_otb(src, nearest, str(tmp_path / "out.tif"), "--ts", str(ts), "--pad", str(pad))
    assert hr.shape[1::-1] == otb_engine.otb_output_size(93, 77, ts, pad) and hr.dtype == np.int16
    in_gt = gdal.Open(src).GetGeoTransform()
    assert gt == (500003.0 + pad * 2.5, 2.5, 0.0, 4800007.0 - pad * 2.5, 0.0, -2.5)
    np.testing.assert_array_equal(hr, expected_at(lr, in_gt, gt, hr.shape))


@pytest.mark.slow
@pytest.mark.otb
def test_otb_serves_original_style_tf1_models(tmp_path, tf1_nearest):
    lr = np.random.default_rng(8).integers(-2000, 2000, (70, 65, 3)).astype(np.int16)
    src = write_raster(str(tmp_path / "in.tif"), lr)
    hr, gt = run_otb(src, tf1_nearest, str(tmp_path / "out.tif?&gdal:co:COMPRESS=LZW"), "--ts", "64",
                     "--encoding", "float")
    assert hr.dtype == np.float32 and hr.shape == (128, 128, 3)
    np.testing.assert_array_equal(hr, expected_at(lr, gdal.Open(src).GetGeoTransform(), gt, hr.shape))
    assert gdal.Open(str(tmp_path / "out.tif")).GetMetadata("IMAGE_STRUCTURE")["COMPRESSION"] == "LZW"


@pytest.mark.otb
def test_otb_and_builtin_engines_agree(tmp_path, generator3):
    lr = np.random.default_rng(9).uniform(0, 3000, (80, 75, 3)).astype(np.float32)
    src = write_raster(str(tmp_path / "in.tif"), lr)
    otb_hr, otb_gt = run_otb(src, generator3, str(tmp_path / "otb.tif"), "--ts", "64")
    assert sr.main(["--input", src, "--savedmodel", generator3, "--output", str(tmp_path / "tf.tif"),
                    "--engine", "tf", "--quiet", "--ts", "64"]) == 0
    tf_ds = gdal.Open(str(tmp_path / "tf.tif"))
    tf_hr, tf_gt = read_array(tf_ds), tf_ds.GetGeoTransform()
    in_gt = gdal.Open(src).GetGeoTransform()
    assert tf_gt == (in_gt[0], 2.5, 0.0, in_gt[3], 0.0, -2.5)
    col, row = round((otb_gt[0] - tf_gt[0]) / 2.5), round((otb_gt[3] - tf_gt[3]) / -2.5)
    assert (col, row) == (64, 64)  # OTB drops `pad` HR pixels on each side
    rows, cols = otb_hr.shape[:2]
    common = tf_hr[row:row + rows, col:col + cols]
    scale = np.abs(common).max()
    np.testing.assert_allclose(otb_hr, common, rtol=0, atol=1e-5 * scale)


@pytest.mark.otb
def test_otb_declares_nodata_and_refuses_too_small_images(tmp_path, nearest, capsys):
    lr = np.full((40, 40), 7, np.uint16)
    lr[:20] = 0
    src = write_raster(str(tmp_path / "in.tif"), lr, nodata=0)
    hr, _ = run_otb(src, nearest, str(tmp_path / "out.tif"), "--ts", "32")
    assert gdal.Open(str(tmp_path / "out.tif")).GetRasterBand(1).GetNoDataValue() == 0
    assert set(np.unique(hr)) == {0, 7}
    assert run_cli(sr.main, ["--input", src, "--savedmodel", nearest, "--output", str(tmp_path / "o2.tif"),
                             "--engine", "otb", "--ts", "512"]) == 2
    assert "too small for the OTB engine" in capsys.readouterr().err
    with pytest.raises(SR4RSError, match="too small for the OTB engine"):
        otb_engine.run(settings(input=src, output=str(tmp_path / "o3.tif")))
    assert sorted(os.listdir(tmp_path)) == ["in.tif", "out.tif"]


@pytest.mark.otb
def test_otb_failure_is_a_clear_error_and_leaves_no_output(tmp_path):
    src = write_raster(str(tmp_path / "in.tif"), np.ones((40, 40), np.int16))
    (tmp_path / "empty").mkdir()
    run = settings(input=src, savedmodel=str(tmp_path / "empty"), output=str(tmp_path / "out.tif"), ts=32,
                   pad=32, quiet=True)
    with pytest.raises(SR4RSError) as failure:
        otb_engine.run(run)
    message = str(failure.value)
    assert message.startswith("OTB TensorflowModelServe failed (") and "Can't load the input model" in message
    assert "\n" not in message
    assert sorted(os.listdir(tmp_path)) == ["empty", "in.tif"]  # no output, no scratch folder
