"""products.py: inputs given as GDAL rasters or Sentinel-2 products (ESA L2A/L1C SAFE folders, zips and
MTD files through GDAL's SENTINEL2 driver; THEIA/MAJA L2A folders and zips), read as one raster in
reflectance x 10000, bands in the requested order, masks as nodata. The products are tiny fakes made here
(tests/fake_products.py)."""
import logging
import os

import numpy as np
import pytest
from fake_products import write_esa_product, write_theia_product, zip_folder
from helpers import write_raster
from osgeo import gdal

import products
from errors import SR4RSError
from raster import Grid, nodata_value, open_raster, read_array, valid_mask

pytestmark = pytest.mark.skipif(gdal.GetDriverByName("JP2OpenJPEG") is None,
                                reason="GDAL has no JP2OpenJPEG driver to write the fake ESA products")

ORIGIN = (300000.0, 4900020.0)
ORDER = {"B4": "B04", "B3": "B03", "B2": "B02", "B8": "B08"}  # band name -> ESA file band


def read(image: products.InputImage) -> np.ndarray:
    """The pixels [rows, cols, bands] read through the returned raster, as the commands read them."""
    return read_array(open_raster(image.path))


def expected(bands: dict[str, np.ndarray], names: tuple[str, ...], offset: int) -> np.ndarray:
    """DN + offset per band in the given order, PRODUCT_NODATA where DN is 0."""
    stack = np.stack([bands[ORDER[n]].astype(np.int32) for n in names], axis=-1)
    return np.where(stack == 0, products.PRODUCT_NODATA, stack + offset)


@pytest.fixture(scope="module")
def l2a(tmp_path_factory):
    """An ESA L2A product of baseline 05.09 (BOA_ADD_OFFSET -1000) with a scene classification."""
    scl = np.full((3, 4), 4, np.uint8)  # vegetation
    scl[0, 1], scl[1, 2], scl[2, 3], scl[2, 0], scl[0, 0] = 9, 3, 10, 6, 1
    safe, bands = write_esa_product(str(tmp_path_factory.mktemp("l2a")), scl=scl)
    return safe, bands, scl


def test_esa_l2a_default_bands_in_order_with_the_offset_applied(l2a, tmp_path, caplog):
    safe, bands, _ = l2a
    caplog.set_level(logging.INFO, logger="sr4rs")
    with products.open_input(safe, workdir=str(tmp_path)) as image:
        assert image.kind == "ESA L2A" and image.bands == ("B4", "B3", "B2", "B8")
        assert image.offsets == (-1000.0,) * 4 and image.nodata == products.PRODUCT_NODATA
        values = read(image)
        np.testing.assert_array_equal(values, expected(bands, image.bands, -1000))
        ds = open_raster(image.path)
        assert ds.GetRasterBand(1).DataType == gdal.GDT_Int16
        assert [ds.GetRasterBand(b).GetDescription() for b in range(1, 5)] == ["B4", "B3", "B2", "B8"]
        assert nodata_value(ds) == products.PRODUCT_NODATA
        # The product's 10 m grid.
        assert ds.GetGeoTransform() == (ORIGIN[0], 10.0, 0.0, ORIGIN[1], 0.0, -10.0)
        assert Grid.of(ds, "vrt").srs.GetAuthorityCode(None) == "32631"
        assert (ds.RasterXSize, ds.RasterYSize) == (8, 6)
        # What the commands' nodata handling sees: DN 0 is invalid, everything else valid.
        valid = valid_mask(values, nodata_value(ds))
        np.testing.assert_array_equal(valid, np.stack([bands[ORDER[n]] != 0 for n in image.bands], -1))
        md = ds.GetMetadata()
        assert md["ACQUISITION_DATE"].startswith("2023-08-23") and md["TILE_ID"] == "31TCJ"
        assert md["SOURCE_PRODUCT"] == os.path.basename(safe).removesuffix(".SAFE")
        assert md["RADIOMETRIC_OFFSET"] == "-1000,-1000,-1000,-1000" and md["PROCESSING_BASELINE"] == "05.09"
        assert image.metadata == md
    assert os.path.exists(image.path)  # a given workdir is kept
    assert "offset -1000,-1000,-1000,-1000 (BOA_ADD_OFFSET)" in caplog.text


def test_values_beyond_int16_are_clamped_whatever_the_type_read(tmp_path):
    bands = {b: np.full((6, 8), 5000, np.uint16) for b in ("B02", "B03", "B04", "B08")}
    bands["B04"][0, :4] = [65535, 1, 0, 40000]  # saturated, darkest, no data, very bright
    safe, _ = write_esa_product(str(tmp_path), bands=bands)
    with products.open_input(safe, bands="B4") as image:
        ds = open_raster(image.path)
        band = ds.GetRasterBand(1)
        for buf_type in (gdal.GDT_Int16, gdal.GDT_Float32, gdal.GDT_Float64):
            np.testing.assert_array_equal(band.ReadAsArray(buf_type=buf_type)[0, :5],
                                          [32767, -999, -10000, 32767, 4000])
        band = ds = None


def test_esa_l2a_before_baseline_04_has_no_offset(tmp_path):
    safe, bands = write_esa_product(str(tmp_path), baseline="03.01", seed=3)
    with products.open_input(safe, bands="B8,b02") as image:
        assert image.bands == ("B8", "B2") and image.offsets == (0.0, 0.0)
        np.testing.assert_array_equal(read(image), expected(bands, image.bands, 0))
        assert image.metadata["RADIOMETRIC_OFFSET_SOURCE"].startswith("none before baseline 04.00")
        folder = image.workdir
        assert folder is not None and os.path.isdir(folder)
    assert not os.path.exists(folder)  # the temporary work folder is removed by close()


def test_esa_l1c_radiometric_offset(tmp_path):
    safe, bands = write_esa_product(str(tmp_path), level="L1C", seed=4)
    with products.open_input(os.path.join(safe, "MTD_MSIL1C.xml"), bands="B4,B8") as image:
        assert image.kind == "ESA L1C" and image.offsets == (-1000.0, -1000.0)
        assert image.metadata["RADIOMETRIC_OFFSET_SOURCE"] == "RADIO_ADD_OFFSET"
        np.testing.assert_array_equal(read(image), expected(bands, ("B4", "B8"), -1000))
    with pytest.raises(SR4RSError, match="an L1C product has no scene classification"):
        products.open_input(safe, mask="SCL")


def test_the_zip_the_mtd_file_and_the_subdataset_name_read_the_same(l2a, tmp_path):
    safe, bands, _ = l2a
    zipped = zip_folder(safe)
    mtd = os.path.join(safe, "MTD_MSIL2A.xml")
    want = expected(bands, ("B2", "B3"), -1000)
    for name in (zipped, mtd, f"SENTINEL2_L2A:{mtd}:10m:EPSG_32631", os.path.dirname(safe)):
        with products.open_input(name, bands="B2,B3") as image:
            assert image.kind == "ESA L2A"
            np.testing.assert_array_equal(read(image), want)
            assert open_raster(image.path).GetGeoTransform()[0] == ORIGIN[0]
    os.remove(zipped)


def test_scl_mask_makes_the_masked_classes_nodata(l2a):
    safe, bands, scl = l2a
    with products.open_input(safe, mask="scl", bands="B4,B8") as image:
        assert image.metadata["MASK"] == "SCL"
        values = read(image)
    classes = np.repeat(np.repeat(scl, 2, axis=0), 2, axis=1)  # 20 m -> 10 m, nearest
    masked = np.isin(classes, list(products.SCL_MASKED))
    assert masked.any() and (~masked).any()
    want = expected(bands, ("B4", "B8"), -1000)
    want[masked] = products.PRODUCT_NODATA
    np.testing.assert_array_equal(values, want)
    # Water (6) and vegetation (4) stay.
    assert (values[classes == 6] != products.PRODUCT_NODATA).all()


def test_missing_and_unknown_bands_are_refused(tmp_path):
    rng = np.random.default_rng(5)
    bands = {b: rng.integers(1, 9000, (6, 8)).astype(np.uint16) for b in ("B02", "B03", "B04")}
    safe, _ = write_esa_product(str(tmp_path), bands=bands)  # B08 listed, its file missing
    with pytest.raises(SR4RSError, match=r"the product has no B8 band \(its B08 JPEG 2000 file is missing\)"):
        products.open_input(safe)  # the default bands include B8
    with pytest.raises(SR4RSError, match=r"unknown band 'NIR' \(a Sentinel-2 product's 10 m bands are "
                                         r"B2, B3, B4, B8\)"):
        products.open_input(safe, bands="B4,NIR")
    with pytest.raises(SR4RSError, match="B8A is not a 10 m band: only the 10 m bands"):
        products.open_input(safe, bands="B4,B8a")
    with pytest.raises(SR4RSError, match="the default bands red, nir .* not all Sentinel-2 band names"):
        products.open_input(safe, default_bands=["red", "nir"])
    with products.open_input(safe, bands="B4,B3,B2") as image:
        assert image.bands == ("B4", "B3", "B2")
    with products.open_input(safe, default_bands=["B02", "B04"]) as image:  # e.g. the model's bands
        assert image.bands == ("B2", "B4")


def test_several_crs_need_an_epsg_code(tmp_path):
    tiles = (("31TCJ", 32631, ORIGIN), ("32TLP", 32632, (200000.0, 4800000.0)))
    safe, bands = write_esa_product(str(tmp_path), tiles=tiles, seed=6)
    with pytest.raises(SR4RSError, match=r"several CRS \(EPSG 32631, 32632\): choose one with --epsg"):
        products.open_input(safe)
    with pytest.raises(SR4RSError, match=r"no 10 m bands in EPSG:4326 \(the product has EPSG 32631, 32632\)"):
        products.open_input(safe, epsg=4326)
    with products.open_input(safe, epsg=32632, bands="B4") as image:
        ds = open_raster(image.path)
        assert ds.GetGeoTransform() == (200000.0, 10.0, 0.0, 4800000.0, 0.0, -10.0)
        assert Grid.of(ds, "vrt").srs.GetAuthorityCode(None) == "32632"
        assert image.metadata["EPSG"] == "32632" and image.metadata["TILE_ID"] == "32TLP"
        np.testing.assert_array_equal(read(image), expected(bands, ("B4",), -1000))


@pytest.fixture(scope="module")
def theia(tmp_path_factory):
    clm = np.zeros((6, 8), np.uint8)
    clm[1, 1], clm[2, 5] = 2, 128  # cloud mask bits
    edg = np.zeros((6, 8), np.uint8)
    edg[5, :] = 1
    folder, written = write_theia_product(str(tmp_path_factory.mktemp("theia")), clm=clm, edg=edg)
    return folder, written, (clm != 0) | (edg != 0)


def test_theia_fre_by_default_sre_on_request_already_in_reflectance(theia):
    folder, written, _ = theia
    for kind, option in (("FRE", "FRE"), ("SRE", "sre")):
        with products.open_input(folder, theia_reflectance=option) as image:
            assert image.kind == "THEIA L2A" and image.bands == ("B4", "B3", "B2", "B8")
            want = np.stack([written[f"{kind}_{b}"] for b in image.bands], axis=-1)
            np.testing.assert_array_equal(read(image), want)  # -10000 stays the nodata value
            ds = open_raster(image.path)
            assert nodata_value(ds) == -10000 and ds.GetGeoTransform()[0] == ORIGIN[0]
            assert image.metadata["TILE_ID"] == "31TCJ" and image.metadata["ACQUISITION_DATE"] == \
                "2018-06-22T10:56:51"
            assert image.metadata["THEIA_REFLECTANCE"] == kind


def test_theia_clm_mask_and_zip(theia):
    folder, written, masked = theia
    zipped = zip_folder(folder)
    try:
        for name in (folder, zipped):
            with products.open_input(name, mask="CLM", bands="B8,B4") as image:
                want = np.stack([written["FRE_B8"], written["FRE_B4"]], axis=-1)
                want[masked] = -10000
                np.testing.assert_array_equal(read(image), want)
    finally:
        os.remove(zipped)
    with pytest.raises(SR4RSError, match="the SCL mask is ESA's; THEIA products have the CLM mask"):
        products.open_input(folder, mask="SCL")
    with pytest.raises(SR4RSError, match="B5 is not a 10 m band"):
        products.open_input(folder, bands="B5")


def test_theia_missing_band(tmp_path):
    folder, _ = write_theia_product(str(tmp_path), missing=("B8",))
    with pytest.raises(SR4RSError, match=r"the product has no B8 band \(.*_FRE_B8.tif is missing\)"):
        products.open_input(folder)


def test_mask_choices(l2a, tmp_path):
    safe = l2a[0]
    with pytest.raises(SR4RSError, match="unknown mask 'CLOUDS'"):
        products.open_input(safe, mask="clouds")
    with pytest.raises(SR4RSError, match="the CLM mask is THEIA's"):
        products.open_input(safe, mask="CLM")
    with pytest.raises(SR4RSError, match="unknown THEIA reflectance 'TOA'"):
        products.open_input(safe, theia_reflectance="TOA")
    tif = write_raster(str(tmp_path / "a.tif"), np.ones((4, 4, 2), np.int16))
    with pytest.raises(SR4RSError, match="a mask can only be given with a Sentinel-2 product"):
        products.open_input(tif, mask="SCL")
    with pytest.raises(SR4RSError, match="an EPSG code can only be given with a Sentinel-2 product"):
        products.open_input(tif, epsg=32631)


def test_a_plain_raster_passes_through(tmp_path):
    image = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
    tif = write_raster(str(tmp_path / "s2.tif"), image, nodata=-10000)
    opened = products.open_input(tif)
    assert opened.path == tif and opened.kind == "raster" and opened.workdir is None
    assert opened.nodata == -10000 and opened.metadata == {}
    opened.close()
    with products.open_input(tif, bands="3,1") as chosen:
        np.testing.assert_array_equal(read(chosen), image[:, :, [2, 0]])
        assert nodata_value(open_raster(chosen.path)) == -10000
    with pytest.raises(SR4RSError, match=r"no band 4 \(the image has 3 band\(s\), numbered from 1\)"):
        products.open_input(tif, bands="4")
    with pytest.raises(SR4RSError, match="no band described as 'B4' .*its bands have no description"):
        products.open_input(tif, bands="B4")
    with pytest.raises(SR4RSError, match="bad band list"):
        products.open_input(tif, bands="1,,2")
    with pytest.raises(SR4RSError, match="missing.tif: no such file"):
        products.open_input(str(tmp_path / "missing.tif"))


def test_bands_by_description_on_a_plain_geotiff(tmp_path, monkeypatch):
    image = np.arange(3 * 3 * 4, dtype=np.uint16).reshape(3, 3, 4)
    tif = write_raster(str(tmp_path / "described.tif"), image)
    ds = gdal.Open(tif, gdal.GA_Update)
    for b, name in enumerate(("B02", "B03", "B04", "nir"), start=1):
        ds.GetRasterBand(b).SetDescription(name)
    ds = None
    monkeypatch.chdir(tmp_path)  # a relative name: the VRT must still find it from elsewhere
    with products.open_input("described.tif", bands="B4,B3,B2,NIR", workdir=str(tmp_path / "w")) as chosen:
        assert chosen.bands == ("B04", "B03", "B02", "nir")
        monkeypatch.chdir("/")
        np.testing.assert_array_equal(read(chosen), image[:, :, [2, 1, 0, 3]])
        ds = open_raster(chosen.path)
        assert [ds.GetRasterBand(b).GetDescription() for b in (1, 4)] == ["B04", "nir"]
        ds = None
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SR4RSError, match="no band described as 'B8' .*bands: 1: B02; 2: B03; 3: B04; 4: nir"):
        products.open_input("described.tif", bands="B8")


def test_a_folder_or_zip_that_is_no_product_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SR4RSError, match="a folder, but not a Sentinel-2 product"):
        products.open_input(str(tmp_path / "empty"))
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(SR4RSError, match="a zip file, but not a Sentinel-2 product .* give /vsizip/"):
        products.open_input(str(tmp_path / "other.zip"))


def test_normalize_band():
    assert [products.normalize_band(n) for n in ("B04", "b4", "B8a", "B12", " B08 ", "nir")] == \
        ["B4", "B4", "B8A", "B12", "B8", "nir"]
