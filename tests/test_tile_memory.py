"""sr.py --ts auto / --max_memory (tile_memory.py): the estimate, the choice, and the command."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from helpers import write_raster
from osgeo import gdal
from savedmodel_fixtures import cached, nearest_model, nearest_x4

import sr
import tile_memory
from errors import SR4RSError
from raster import read_array


@pytest.mark.parametrize("text, expected", [("8G", 8 * 2 ** 30), ("500M", 500 * 2 ** 20),
                                            ("16GB", 16 * 2 ** 30), ("2GiB", 2 * 2 ** 30),
                                            ("1.5g", int(1.5 * 2 ** 30)), ("300", 300 * 2 ** 20)])
def test_memory_sizes(text, expected):
    assert tile_memory.parse_memory(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1G", "0", "G"])
def test_bad_memory_sizes(text):
    with pytest.raises(SR4RSError, match="--max_memory"):
        tile_memory.parse_memory(text)


def test_hr_channels_follow_the_model_description():
    assert tile_memory.hr_channels({}) == 256  # a model of the original SR4RS: the default network
    assert tile_memory.hr_channels({"depth": 32, "upsampling": "transposed"}) == 128
    assert tile_memory.hr_channels({"depth": 48, "upsampling": "pixelshuffle", "nbands": 3}) == 12


def test_the_default_network_estimate_matches_the_measured_slope():
    """README's --ts measurements (default network, pad 64): +0.65 GB from ts 256 to ts 512."""
    grow = tile_memory.tile_bytes(512, 64, 1, 256) - tile_memory.tile_bytes(256, 64, 1, 256)
    assert 0.5 * 2 ** 30 < grow < 0.8 * 2 ** 30


LARGE = (43920, 43920)  # a Sentinel-2 tile's output


def test_auto_tile_size_fits_and_computes_the_fewest_pixels():
    for budget_gb in (1.5, 2, 4, 8, 16):
        budget = int(budget_gb * 2 ** 30)
        ts = tile_memory.auto_tile_size(budget, 64, 1, {}, LARGE)
        fitting = [t for t in range(64, 8193, 64) if tile_memory.tile_bytes(t, 64, 1, 256) <= budget]
        assert ts in fitting
        cost = tile_memory.computed_pixels(ts, 64, LARGE)
        assert cost == min(tile_memory.computed_pixels(t, 64, LARGE) for t in fitting)
        assert ts >= 0.85 * fitting[-1]  # on a large image: about the largest that fits
    unlimited = tile_memory.auto_tile_size(2 ** 40, 64, 1, {}, LARGE)
    assert 0.85 * tile_memory.TS_MAX <= unlimited <= tile_memory.TS_MAX
    assert tile_memory.auto_tile_size(4 * 2 ** 30, 64, 2, {}, LARGE) < tile_memory.auto_tile_size(
        4 * 2 ** 30, 64, 1, {}, LARGE)  # a batch of 2 tiles: smaller tiles
    with pytest.raises(SR4RSError, match="even tiles of 64 HR pixels need"):
        tile_memory.auto_tile_size(2 ** 29, 64, 1, {}, LARGE)


def test_auto_tile_size_on_a_small_image_computes_the_fewest_pixels():
    assert tile_memory.auto_tile_size(2 ** 40, 64, 1, {}, (300, 200)) == 320  # one tile, no larger
    # 1024 x 1024 with at most ~840: 4 tiles of 512 (4 x 640^2) rather than 4 tiles of 832 (4 x 960^2)
    ts = tile_memory.auto_tile_size(3 * 2 ** 30, 64, 1, {}, (1024, 1024))
    assert ts == 512
    budget_ts = max(t for t in range(64, 1025, 64) if tile_memory.tile_bytes(t, 64, 1, 256) <= 3 * 2 ** 30)
    assert budget_ts > ts and all(tile_memory.computed_pixels(t, 64, (1024, 1024))
                                  >= tile_memory.computed_pixels(ts, 64, (1024, 1024))
                                  for t in range(64, budget_ts + 1, 64))


def test_ts_auto_runs_with_the_chosen_tile_size(tmp_path_factory, tmp_path, caplog):
    model = cached(tmp_path_factory, "nearest", nearest_model)
    lr = np.random.default_rng(0).integers(0, 1000, (70, 90, 3)).astype(np.int16)
    src = write_raster(str(tmp_path / "in.tif"), lr)
    out = str(tmp_path / "out.tif")
    with caplog.at_level(logging.INFO):
        assert sr.main(["--input", src, "--savedmodel", model, "--output", out, "--engine", "tf",
                        "--ts", "auto", "--max_memory", "1G"]) == 0
    expected = tile_memory.auto_tile_size(2 ** 30, 64, 1, {}, (4 * 90, 4 * 70))
    assert expected < 4 * 90 and f"--ts auto: {expected} " in caplog.text
    assert f"in {-(-280 // expected) * -(-360 // expected)} tile(s) of {expected} x {expected}" in caplog.text
    np.testing.assert_array_equal(read_array(gdal.Open(out)), nearest_x4(lr))


@pytest.mark.parametrize("args, message", [(["--ts", "big"], "expected a number of HR pixels or auto"),
                                           (["--ts", "auto", "--max_memory", "many"], "--max_memory many")])
def test_bad_tile_options(tmp_path, capsys, args, message):
    code = sr.run_cli(sr.main, ["--input", "in.tif", "--savedmodel", "m", "--output", str(tmp_path / "o.tif"),
                                *args])
    assert code == 2 and message in capsys.readouterr().err
