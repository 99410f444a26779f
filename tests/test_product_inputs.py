"""The commands on a Sentinel-2 product as downloaded (a tiny fake ESA L2A .SAFE). sr.py: the bands reach
the model in the model's order and in reflectance x 10000 without the BOA offset, masked and no-data pixels
become output nodata, the output is on the product's grid and says where it comes from. extract_patches.py:
self-supervised pairs from the product, with its band names."""
import json
import os

import numpy as np
import pytest
from fake_products import write_esa_product
from osgeo import gdal
from savedmodel_fixtures import nearest_export, nearest_x4
from test_products import ORDER, expected

import constants
import evaluate
import extract_patches
import sr
from cli import run_cli
from raster import band_descriptions, nodata_value, open_raster, read_array

pytestmark = pytest.mark.skipif(gdal.GetDriverByName("JP2OpenJPEG") is None,
                                reason="GDAL has no JP2OpenJPEG driver to write the fake ESA products")
MODEL_BANDS = ["B8", "B4", "B3", "B2"]  # not the default order: the model's sr4rs.json says it


@pytest.fixture(scope="module")
def product_and_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sr_products")
    scl = np.full((3, 4), 4, np.uint8)  # 20 m: vegetation, but a cloud (9) over 10 m pixels [0:2, 2:4]
    scl[0, 1] = 9
    safe, bands = write_esa_product(str(folder), scl=scl)
    model = str(folder / "model")
    nearest_export(model, 4)  # echoes its input, x4
    description = os.path.join(model, constants.METADATA_DIR, constants.METADATA_FILE)
    with open(description) as f:
        meta = json.load(f)
    with open(description, "w") as f:
        json.dump({**meta, "bands": MODEL_BANDS}, f)
    return safe, bands, model


def test_a_product_in_the_models_band_order_and_dynamic_with_masks_as_nodata(product_and_model, tmp_path):
    safe, bands, model = product_and_model
    out = str(tmp_path / "sr.tif")
    assert sr.main(["--input", safe, "--savedmodel", model, "--output", out, "--mask", "SCL",
                    "--engine", "tf", "--quiet"]) == 0
    ds = open_raster(out)
    lr = expected(bands, tuple(MODEL_BANDS), -1000)  # DN - 1000, -10000 where DN is 0
    lr[0:2, 2:4] = -10000  # the cloud of the scene classification
    hr = read_array(ds)
    assert hr.dtype == np.int16 and nodata_value(ds) == -10000
    np.testing.assert_array_equal(hr, nearest_x4(lr))
    assert [ds.GetRasterBand(b).GetDescription() for b in range(1, 5)] == MODEL_BANDS
    assert ds.GetGeoTransform() == (300000.0, 2.5, 0.0, 4900020.0, 0.0, -2.5)
    assert ds.GetMetadataItem("TILE_ID") == "31TCJ" and ds.GetMetadataItem("MASK").startswith("SCL")
    assert set(ORDER) == set(MODEL_BANDS)
    # evaluate.py reads the product as sr.py did, in the SR image's band order
    report = str(tmp_path / "metrics.json")
    assert evaluate.main(["--sr", out, "--ref", out, "--lr", safe, "--out", report]) == 0
    with open(report) as f:
        result = json.load(f)
    assert result["lr"] == safe and result["metrics"]["sr"]["lr_rmse"] == 0.0  # x4 nearest: exact


def test_bands_by_name_and_unknown_names(product_and_model, tmp_path, capsys):
    safe, bands, model = product_and_model
    out = str(tmp_path / "sr.tif")
    assert sr.main(["--input", safe, "--savedmodel", model, "--output", out, "--bands", "B2,B3,B4,B8",
                    "--engine", "tf", "--quiet"]) == 0
    np.testing.assert_array_equal(read_array(open_raster(out))[::4, ::4],
                                  expected(bands, ("B2", "B3", "B4", "B8"), -1000))
    assert run_cli(sr.main, ["--input", safe, "--savedmodel", model, "--output", str(tmp_path / "x.tif"),
                             "--bands", "B4,B3,B2,B9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "B9" in err[0] and "B4" in err[0], err
    assert not os.path.exists(tmp_path / "x.tif")


def test_self_supervised_patches_from_a_product_carry_its_band_names(tmp_path):
    safe, bands = write_esa_product(str(tmp_path), shape=(16, 16), scl=np.full((8, 8), 4, np.uint8))
    out_lr, out_hr = str(tmp_path / "lr_patches.tif"), str(tmp_path / "hr_patches.tif")
    assert extract_patches.main(["--self_supervised", "--degradation", "mean", "--lr", safe,
                                 "--lr_mask", "SCL", "--lr_patchsize", "2", "--step", "2", "--out_lr", out_lr,
                                 "--out_hr", out_hr, "--quiet"]) == 0
    image = expected(bands, ("B4", "B3", "B2", "B8"), -1000)  # DN 0 at (0, 0): its patch is skipped
    hr = read_array(open_raster(out_hr)).reshape(3, 8, 8, 4)
    np.testing.assert_array_equal(hr, [image[:8, 8:], image[8:, :8], image[8:, 8:]])
    lr = read_array(open_raster(out_lr)).reshape(3, 2, 2, 4)
    np.testing.assert_array_equal(lr[2], np.rint(image[8:, 8:].reshape(2, 4, 2, 4, 4).mean(axis=(1, 3))))
    for path in (out_lr, out_hr):
        assert band_descriptions(open_raster(path)) == ("B4", "B3", "B2", "B8")
