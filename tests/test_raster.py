"""raster.py (GDAL helpers) and the CLI boundary of errors.py."""
import os

import numpy as np
import pytest
from helpers import write_raster
from osgeo import gdal

import raster
from cli import run_cli
from errors import SR4RSError


def test_open_raster_names_the_file(tmp_path):
    with pytest.raises(SR4RSError, match="missing.tif: no such file"):
        raster.open_raster(str(tmp_path / "missing.tif"))
    (tmp_path / "text.tif").write_text("not an image")
    with pytest.raises(SR4RSError, match="text.tif: not a readable raster"):
        raster.open_raster(str(tmp_path / "text.tif"))


def test_read_array_is_rows_cols_bands_in_the_file_type(tmp_path):
    image = np.arange(3 * 4 * 2, dtype=np.uint16).reshape(3, 4, 2)
    ds = raster.open_raster(write_raster(str(tmp_path / "a.tif"), image))
    np.testing.assert_array_equal(raster.read_array(ds), image)
    np.testing.assert_array_equal(raster.read_array(ds, 1, 1, 2, 2), image[1:3, 1:3])
    assert raster.numpy_dtype(ds) == np.uint16


@pytest.mark.parametrize("name, gdal_type", [
    ("short", gdal.GDT_Int16), ("int16", gdal.GDT_Int16), ("unsigned_short", gdal.GDT_UInt16),
    ("float", gdal.GDT_Float32), ("UINT8", gdal.GDT_Byte), ("double", gdal.GDT_Float64)])
def test_encodings_accept_otb_and_gdal_names(name, gdal_type):
    assert raster.gdal_type(name) == gdal_type


def test_unknown_encoding_is_refused():
    with pytest.raises(SR4RSError, match="unknown encoding 'int12'"):
        raster.gdal_type("int12")


def test_atomic_output_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = str(tmp_path / "out.tif")
    with pytest.raises(RuntimeError):
        with raster.atomic_output(target) as tmp:
            write_raster(tmp, np.zeros((2, 2), np.uint8))
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []
    with raster.atomic_output(target) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and tmp != target
        write_raster(tmp, np.zeros((2, 2), np.uint8))
    assert os.listdir(tmp_path) == ["out.tif"]
    with pytest.raises(SR4RSError, match="the output directory .* does not exist"):
        with raster.atomic_output(str(tmp_path / "nope" / "out.tif")):
            pass


def test_statistics_of_a_replaced_file_do_not_survive(tmp_path):
    target = str(tmp_path / "out.tif")
    write_raster(target, np.full((4, 4), 7, np.uint8))
    gdal.Info(target, stats=True)  # writes out.tif.aux.xml with its statistics
    assert os.path.exists(target + ".aux.xml")
    with raster.atomic_output(target) as tmp:
        write_raster(tmp, np.zeros((4, 4), np.uint8))
    assert not os.path.exists(target + ".aux.xml")


def test_srs_from_wkt_uses_x_y_order():
    srs = raster.srs_from_wkt(gdal.osr.SpatialReference(gdal.osr.SRS_WKT_WGS84_LAT_LONG).ExportToWkt())
    assert srs.GetAxisMappingStrategy() == gdal.osr.OAMS_TRADITIONAL_GIS_ORDER
    assert raster.srs_from_wkt("") is None


def test_system_errors_are_one_line_messages(capsys):
    def main(argv):
        raise PermissionError(13, "Permission denied", "/opt/out.tif")

    assert run_cli(main, []) == 2
    assert capsys.readouterr().err.strip() == "error: [Errno 13] Permission denied: '/opt/out.tif'"


def test_grid_of_a_north_up_image(tmp_path):
    path = write_raster(str(tmp_path / "a.tif"), np.zeros((3, 5), np.uint8), (100.0, 200.0), 2.5)
    ds = raster.open_raster(path)
    grid = raster.Grid.of(ds, "a.tif")
    assert (grid.x0, grid.y0, grid.px, grid.py, grid.width, grid.height) == (100.0, 200.0, 2.5, -2.5, 5, 3)
    assert grid.bounds() == (100.0, 192.5, 112.5, 200.0)
    assert grid.centre(2.0, 1.0) == (105.0, 197.5)
    assert grid.srs.GetAuthorityCode(None) == "32631"


@pytest.mark.parametrize("geotransform, message", [
    (None, "the image has no georeferencing"),
    ((100.0, 2.5, 0.1, 200.0, 0.0, -2.5), "only north-up images are supported"),
    ((100.0, 2.5, 0.0, 200.0, 0.0, 2.5), "only north-up images are supported"),
])
def test_grid_of_refuses_images_without_a_north_up_geotransform(tmp_path, geotransform, message):
    ds = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "x.tif"), 4, 4, 1)
    if geotransform:
        ds.SetGeoTransform(geotransform)
    with pytest.raises(SR4RSError, match=f"^the image x: {message}"):
        raster.Grid.of(ds, "the image x")


def test_dilate_grows_by_a_square():
    rng = np.random.default_rng(0)
    mask = rng.random((9, 12)) > 0.93
    for radius in (1, 2):
        expected = np.zeros_like(mask)
        for r, c in zip(*np.nonzero(mask), strict=True):
            expected[max(0, r - radius):r + radius + 1, max(0, c - radius):c + radius + 1] = True
        np.testing.assert_array_equal(raster.dilate(mask, radius), expected)
    assert mask.any() and not raster.dilate(np.zeros((3, 3), bool), 2).any()


def test_read_sample_is_a_decimated_rows_cols_bands_read(tmp_path):
    image = np.arange(40 * 20 * 2, dtype=np.int16).reshape(40, 20, 2)
    ds = raster.open_raster(write_raster(str(tmp_path / "a.tif"), image))
    sample = raster.read_sample(ds, max_size=10)
    assert sample.shape == (10, 5, 2) and sample.dtype == np.int16
    np.testing.assert_array_equal(sample, image[2::4, 2::4])  # nearest: the pixels under the centres
    np.testing.assert_array_equal(raster.read_sample(ds, max_size=100), image)
