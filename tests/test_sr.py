"""sr.py, the command line: options, refusals with clear messages and no output left, engine choice,
the model checks (band count, dynamic), and models made by the original SR4RS train.py."""
from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from helpers import needs_original, write_raster
from osgeo import gdal
from savedmodel_fixtures import cached, generator_model, nearest_export, original_model

import sr
import sr_model
from cli import run_cli
from errors import SR4RSError
from raster import read_array

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATS = {"min": [0.0], "max": [10000.0], "mean": [1500.0], "std": [900.0]}


@pytest.fixture(scope="module")
def nearest1(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Exact x4 nearest neighbour, 1 band, exported with training statistics in [0, 10000]."""
    return cached(tmp_path_factory, "nearest_stats1", lambda p: nearest_export(p, 1, STATS))


@pytest.fixture(scope="module")
def generator4(tmp_path_factory: pytest.TempPathFactory) -> str:
    return cached(tmp_path_factory, "generator4", lambda p: generator_model(p, 4))


def refused(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run sr.py, expect exit code 2, return its error message."""
    assert run_cli(sr.main, argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.replace("\r", "\n").strip().splitlines()[-1]  # after a progress bar, if any
    assert last.startswith("error: ")
    return last


def test_extended_filenames_and_creation_options():
    assert sr.split_extended_filename("o.tif") == ("o.tif", {}, [])
    assert sr.split_extended_filename("/d/o.tif?&gdal:co:compress=ZSTD&gdal:co:ZLEVEL=9&box=1:2:3:4") == (
        "/d/o.tif", {"COMPRESS": "ZSTD", "ZLEVEL": "9"}, ["box=1:2:3:4"])
    assert sr.parse_co(["compress=LZW", "NUM_THREADS=ALL_CPUS"]) == {"COMPRESS": "LZW",
                                                                     "NUM_THREADS": "ALL_CPUS"}
    with pytest.raises(SR4RSError, match="KEY=VALUE"):
        sr.parse_co(["COMPRESS"])
    defaults = sr.creation_options({}, gdal.GDT_Int16, 512)
    assert defaults == {"TILED": "YES", "BLOCKXSIZE": "512", "BLOCKYSIZE": "512", "COMPRESS": "DEFLATE",
                        "BIGTIFF": "IF_SAFER", "PREDICTOR": "2"}
    assert sr.creation_options({}, gdal.GDT_Float32, 100)["PREDICTOR"] == "3"
    assert sr.creation_options({}, gdal.GDT_Float32, 100)["BLOCKXSIZE"] == "256"
    assert "PREDICTOR" not in sr.creation_options({"COMPRESS": "NONE"}, gdal.GDT_Int16, 768)
    assert sr.creation_options({"COMPRESS": "NONE"}, gdal.GDT_Int16, 768)["BLOCKYSIZE"] == "256"


def test_output_nodata():
    f32, i16, u16 = np.dtype(np.float32), np.dtype(np.int16), np.dtype(np.uint16)
    assert sr.output_nodata(None, i16, i16) is None
    assert math.isnan(sr.output_nodata(None, f32, f32))
    assert sr.output_nodata(None, f32, i16) is None
    assert sr.output_nodata(-10000.0, i16, i16) == -10000.0
    for bad, dtype in ((-1.0, u16), (0.5, i16), (math.nan, i16), (70000.0, u16)):
        with pytest.raises(SR4RSError, match="cannot be stored"):
            sr.output_nodata(bad, f32, dtype)


def test_refusals_leave_no_output(tmp_path, capsys, generator4):
    src3 = write_raster(str(tmp_path / "rgb.tif"), np.ones((20, 20, 3), np.int16))
    src4 = write_raster(str(tmp_path / "in4.tif"), np.ones((20, 20, 4), np.uint16))
    out = str(tmp_path / "out.tif")
    base = ["--savedmodel", generator4, "--output", out, "--engine", "tf"]
    assert "3 band(s) but the model" in refused(["--input", src3, *base], capsys)
    assert "ts + 2*pad must be a positive multiple of 4" in refused(["--input", src4, *base, "--ts", "30"],
                                                                    capsys)
    assert "multiple of 4" in refused(["--input", src4, *base, "--ts", "0"], capsys)
    assert "no such file" in refused(["--input", str(tmp_path / "missing.tif"), *base], capsys)
    (tmp_path / "text.tif").write_text("not an image")
    assert "not a readable raster" in refused(["--input", str(tmp_path / "text.tif"), *base], capsys)
    missing_model = ["--savedmodel", str(tmp_path / "nomodel"), "--output", out]
    assert "no such SavedModel directory" in refused(["--input", src4, *missing_model], capsys)
    os.mkdir(tmp_path / "empty")
    assert "not a SavedModel" in refused(["--input", src4, "--savedmodel", str(tmp_path / "empty"),
                                          "--output", out], capsys)
    no_dir = ["--input", src4, "--savedmodel", generator4, "--output", str(tmp_path / "nodir" / "o.tif")]
    assert "output directory" in refused(no_dir, capsys)
    assert "unknown encoding 'int12'" in refused(["--input", src4, *base, "--encoding", "int12"], capsys)
    assert "cannot be stored as uint16" in refused(["--input", src4, *base, "--nodata", "-5"], capsys)
    assert "KEY=VALUE" in refused(["--input", src4, *base, "--co", "TILED"], capsys)
    assert "--batch 0" in refused(["--input", src4, *base, "--batch", "0"], capsys)
    assert "overwrite the input" in refused(["--input", src4, "--savedmodel", generator4, "--output", src4],
                                            capsys)
    assert sorted(os.listdir(tmp_path)) == ["empty", "in4.tif", "rgb.tif", "text.tif"]


def test_outputs_that_cannot_be_written_are_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    def not_now(path: str) -> None:
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(sr_model, "inspect_savedmodel", not_now)
    src = write_raster(str(tmp_path / "in.tif"), np.ones((8, 8), np.int16))
    os.mkdir(tmp_path / "folder")
    os.mkfifo(tmp_path / "fifo")
    os.symlink(src, tmp_path / "in_link.tif")
    base = ["--input", src, "--savedmodel", str(tmp_path / "model"), "--engine", "tf"]
    for output, message in (("folder", "exists and is a directory"), ("fifo", "exists and is a FIFO"),
                            ("in_link.tif", "--output would overwrite the input --input")):
        assert message in refused([*base, "--output", str(tmp_path / output)], capsys)
    for options, message in ((["--co", "COMPRESS=FOO"], "unexpected value for COMPRESS"),
                             (["--co", "PREDICTOR=3"], "PREDICTOR=3 is only supported"),
                             (["--nodata", "-5", "--encoding", "uint8"], "cannot be stored as uint8")):
        err = refused([*base, "--output", str(tmp_path / "o.tif"), *options], capsys)
        assert message in err, err
    assert sorted(os.listdir(tmp_path)) == ["fifo", "folder", "in.tif", "in_link.tif"]
    assert os.listdir(tmp_path / "folder") == []


def test_a_symbolic_link_output_is_written_through(tmp_path, nearest1):
    src = write_raster(str(tmp_path / "in.tif"), np.full((8, 8), 1000, np.int16))
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real" / "out.tif", tmp_path / "link.tif")
    assert sr.main(["--input", src, "--savedmodel", nearest1, "--output", str(tmp_path / "link.tif"),
                    "--engine", "tf", "--quiet"]) == 0
    assert os.path.islink(tmp_path / "link.tif")
    assert gdal.Open(str(tmp_path / "real" / "out.tif")).RasterXSize == 32


def test_out_of_memory_is_a_clear_error(tmp_path, capsys, monkeypatch, nearest1):
    def exhausted(**_: object) -> None:
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")

    model = SimpleNamespace(signatures={"serving_default": exhausted})
    monkeypatch.setattr(tf.saved_model, "load", lambda path: model)
    src = write_raster(str(tmp_path / "in.tif"), np.full((10, 10), 1000, np.int16))
    err = refused(["--input", src, "--savedmodel", nearest1, "--output", str(tmp_path / "o.tif"), "--engine",
                   "tf"], capsys)
    assert "out of memory" in err and "smaller --ts" in err
    assert sorted(os.listdir(tmp_path)) == ["in.tif"]


def test_engine_choice(tmp_path, capsys, monkeypatch, nearest1, caplog):
    monkeypatch.setattr(sr, "load_otb", lambda: None)
    src = write_raster(str(tmp_path / "in.tif"), np.full((10, 10), 1000, np.int16))
    assert "make otb" in refused(["--input", src, "--savedmodel", nearest1, "--output",
                                  str(tmp_path / "o.tif"), "--engine", "otb"], capsys)
    with caplog.at_level(logging.INFO):
        assert sr.main(["--input", src, "--savedmodel", nearest1, "--output", str(tmp_path / "o.tif")]) == 0
    assert "using the built-in engine" in caplog.text
    assert gdal.Open(str(tmp_path / "o.tif")).RasterXSize == 40


def test_dynamic_far_from_training_is_warned(tmp_path, nearest1, caplog):
    rng = np.random.default_rng(0)
    cases = (("reflectance.tif", rng.uniform(0, 0.3, (16, 16)), True),
             ("8bits.tif", rng.uniform(0, 255, (16, 16)), True),
             ("negative.tif", rng.uniform(-500, -100, (16, 16)), True),
             ("digital.tif", rng.uniform(200, 3000, (16, 16)), False),
             ("water.tif", rng.uniform(250, 350, (16, 16)), False),
             ("uniform.tif", np.full((16, 16), 1000.0), False))
    for name, lr, warned in cases:
        lr = lr.astype(np.float32)
        src = write_raster(str(tmp_path / name), lr)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert sr.main(["--input", src, "--savedmodel", nearest1, "--output", str(tmp_path / f"o{name}"),
                            "--engine", "tf", "--quiet"]) == 0
        assert ("far from the model's LR training data" in caplog.text) == warned, name


def test_model_inspection(nearest1, generator4):
    info = sr_model.inspect_savedmodel(nearest1)
    assert (info.input_key, info.nbands, info.input_dtype.name) == ("lr_input", 1, "float32")
    assert sorted(info.outputs) == [32, 64, 128, 256, 512] and info.metadata["lr_stats"] == STATS
    assert sr_model.inspect_savedmodel(generator4).output_key(512) == "output_512"
    with pytest.raises(SR4RSError, match="no output output_48"):
        info.output_key(48)


@pytest.mark.slow
def test_command_line_entry_point(tmp_path):
    src = write_raster(str(tmp_path / "in.tif"), np.ones((8, 8), np.int16))
    result = subprocess.run([sys.executable, os.path.join(ROOT, "sr.py"), "--input", src, "--savedmodel",
                             str(tmp_path / "none"), "--output", str(tmp_path / "o.tif")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in result.stderr


@pytest.mark.slow
@needs_original
def test_models_of_the_original_train_py_run(tmp_path_factory, tmp_path):
    model = cached(tmp_path_factory, "original", original_model)
    info = sr_model.inspect_savedmodel(model)
    assert (info.input_key, info.input_dtype.name, info.nbands) == ("lr_input:0", "int16", 3)
    assert info.output_key(64) == "output_64:0" and info.metadata is None
    lr = np.random.default_rng(1).integers(0, 3000, (21, 17, 3)).astype(np.int16)
    src = write_raster(str(tmp_path / "in.tif"), lr)
    assert sr.main(["--input", src, "--savedmodel", model, "--output", str(tmp_path / "o.tif"),
                    "--engine", "tf", "--quiet", "--ts", "32"]) == 0
    hr = read_array(gdal.Open(str(tmp_path / "o.tif")))
    assert hr.shape == (84, 68, 3) and hr.dtype == np.int16 and np.abs(hr).max() > 0
