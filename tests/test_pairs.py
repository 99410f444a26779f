"""demo/pairs.py: the training and test parts of a real image with their 4 x 4-mean LR, any band count and
type, nodata blocks as NaN, georeferencing kept."""
import numpy as np
import pytest
from helpers import write_raster
from osgeo import gdal

from degradation import Degradation
from demo.pairs import make_pairs
from raster import read_array


@pytest.mark.parametrize("dtype, bands", [(np.uint16, 4), (np.uint8, 3)])
def test_parts_and_their_lr_are_block_means_on_the_image_grid(tmp_path, dtype, bands):
    rng = np.random.default_rng(0)
    hr = rng.integers(1, 250, (70, 130, bands)).astype(dtype)  # cropped to 68 x 128
    hr[5, 9, 1] = 255  # the nodata value, in LR block (1, 2)
    image = write_raster(str(tmp_path / "image.tif"), hr, origin=(1000.0, 2000.0), pixel_size=2.0, nodata=255)
    pairs = make_pairs(image, str(tmp_path), test_share=0.25)
    train_hr, test_hr = (read_array(gdal.Open(p)) for p in (pairs.train_hr, pairs.test_hr))
    train_lr, test_lr = (read_array(gdal.Open(p)) for p in (pairs.train_lr, pairs.test_lr))
    assert train_hr.shape == (68, 96, bands) and test_hr.shape == (68, 32, bands)  # split at LR column 24
    assert train_lr.shape == (17, 24, bands) and test_lr.dtype == np.float32
    expected = hr[:68, :128].astype(np.float64).reshape(17, 4, 32, 4, bands).mean(axis=(1, 3))
    np.testing.assert_allclose(test_lr, expected[:, 24:], rtol=1e-6)
    assert np.isnan(train_lr[1, 2]).all() and np.isfinite(np.delete(train_lr.reshape(-1, bands), 26, 0)).all()
    assert gdal.Open(pairs.test_hr).GetGeoTransform() == (1000.0 + 96 * 2.0, 2.0, 0.0, 2000.0, 0.0, -2.0)
    assert gdal.Open(pairs.test_lr).GetGeoTransform() == (1000.0 + 96 * 2.0, 8.0, 0.0, 2000.0, 0.0, -8.0)
    assert "last 25% columns" in pairs.description


def test_nodata_can_be_ignored(tmp_path):
    hr = np.full((16, 16, 3), 255, np.uint8)
    image = write_raster(str(tmp_path / "white.tif"), hr, nodata=255)
    pairs = make_pairs(image, str(tmp_path), use_nodata=False)
    assert (read_array(gdal.Open(pairs.train_lr)) == 255).all()


def test_a_gaussian_psf_instead_of_the_block_mean(tmp_path):
    rng = np.random.default_rng(1)
    hr = rng.integers(1, 250, (64, 96, 2)).astype(np.uint8)
    hr[40, 40, 0] = 255  # nodata: its LR pixel and the neighbours the PSF reaches become NaN
    image = write_raster(str(tmp_path / "image.tif"), hr, nodata=255)
    psf = Degradation.gaussian(0.3)
    pairs = make_pairs(image, str(tmp_path), degradation=psf)
    m = psf.margin
    expected, _ = psf.apply(np.pad(hr.astype(np.float64), ((m, m), (m, m), (0, 0)), mode="symmetric"))
    train_lr, test_lr = (read_array(gdal.Open(p)) for p in (pairs.train_lr, pairs.test_lr))
    np.testing.assert_allclose(test_lr, expected[:, 18:], rtol=1e-6)
    nan = np.isnan(train_lr).any(axis=-1)
    # LR pixel i reads HR pixels [4i - 7, 4i + 11) (m = 7): HR pixel 40 is in the support of i = 8 .. 11
    assert nan[8:12, 8:12].all() and nan.sum() == 16
    assert "LR by a Gaussian PSF of MTF 0.3" in pairs.description
