"""demo/scene.py: grids, the sensor degradation (checked independently), values, determinism, structure."""
from __future__ import annotations

import math

import numpy as np
import pytest
from osgeo import gdal, osr

from cli import run_cli
from demo import scene as demo_scene
from errors import SR4RSError


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    lr_path, hr_path = demo_scene.make_demo_scene(str(folder), size_hr=256, seed=0, png=str(folder / "q.png"))
    return lr_path, hr_path, str(folder / "q.png")


def read(path: str) -> np.ndarray:
    return np.moveaxis(gdal.Open(path).ReadAsArray(), 0, -1)


def test_grids_are_aligned_and_georeferenced(pair):
    lr_path, hr_path, _ = pair
    lr, hr = gdal.Open(lr_path), gdal.Open(hr_path)
    assert (hr.RasterXSize, hr.RasterYSize, lr.RasterXSize, lr.RasterYSize) == (256, 256, 64, 64)
    hx, hpx, _, hy, _, hpy = hr.GetGeoTransform()
    lx, lpx, _, ly, _, lpy = lr.GetGeoTransform()
    assert (hx, hy) == (lx, ly)  # same origin: LR pixel (i, j) = HR pixels 4i..4i+3, 4j..4j+3
    assert (hpx, hpy, lpx, lpy) == (2.5, -2.5, 10.0, -10.0)
    for ds in (lr, hr):
        srs = osr.SpatialReference(wkt=ds.GetProjection())
        assert srs.GetAuthorityCode(None) == "32631"
        assert ds.RasterCount == 4 and ds.GetRasterBand(1).DataType == gdal.GDT_Int16
        assert ds.GetRasterBand(1).GetNoDataValue() is None
        assert [ds.GetRasterBand(b + 1).GetDescription() for b in range(4)] == ["Red", "Green", "Blue", "NIR"]


def test_lr_is_the_gaussian_psf_then_decimation_of_hr(pair):
    """Recompute LR pixels from the HR file with an explicit 2-D Gaussian (sigma 0.55 LR pixels = 2.2
    HR pixels, centred on the LR pixel centre, i.e. between HR pixels 4i+1 and 4i+2)."""
    lr_path, hr_path, _ = pair
    lr, hr = read(lr_path).astype(float), read(hr_path).astype(float)
    sigma = 0.55 * 4
    offsets = np.arange(-14, 18)  # HR pixels around 4i: covers more than 6 sigma each side
    worst = 0.0
    for i in range(4, 60, 5):
        for j in range(4, 60, 7):
            dy = 4 * i + offsets[:, None] - (4 * i + 1.5)
            dx = 4 * j + offsets[None, :] - (4 * j + 1.5)
            w = np.exp(-(dx ** 2 + dy ** 2) / (2 * sigma ** 2))
            w /= w.sum()
            window = hr[4 * i - 14:4 * i + 18, 4 * j - 14:4 * j + 18]
            expected = np.einsum("yx,yxb->b", w, window)
            worst = max(worst, float(np.abs(expected - lr[i, j]).max()))
    assert worst <= 1.0  # rounding to integers (0.5) + the kernel's truncation at 4 sigma


def test_values_look_like_reflectance(pair):
    _, hr_path, _ = pair
    hr = read(hr_path).astype(float)
    assert hr.min() >= 0 and hr.max() <= 10000
    red, nir = hr[:, :, 0], hr[:, :, 3]
    ndvi = (nir - red) / (nir + red + 1)
    assert (ndvi > 0.5).mean() > 0.3  # mostly vegetated: bright in NIR, dark in red
    assert (ndvi < 0).mean() > 0.005  # the river: darker in NIR than in red
    assert nir.mean() > 2 * red.mean()
    assert 100 < hr[:, :, :3].mean() < 3000


def test_the_same_seed_gives_the_same_scene():
    a = demo_scene.generate_hr(128, seed=5)
    np.testing.assert_array_equal(a, demo_scene.generate_hr(128, seed=5))
    assert not np.array_equal(a, demo_scene.generate_hr(128, seed=6))
    assert a.shape == (128, 128, 4) and a.dtype == np.int16


def laplacian_energy(image: np.ndarray) -> float:
    a = image.astype(np.float64)
    lap = 4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]
    return float((lap ** 2).mean())


def test_hr_has_detail_that_bicubic_cannot_recover(pair):
    lr_path, hr_path, _ = pair
    hr = read(hr_path).astype(np.float32)
    bicubic = gdal.Warp("", lr_path, format="MEM", xRes=2.5, yRes=2.5, resampleAlg="cubic",
                        outputType=gdal.GDT_Float32)
    bicubic = np.moveaxis(bicubic.ReadAsArray(), 0, -1)
    # Smooth both a little first, so that the HR sensor noise does not count as structure.
    hr_s, bic_s = demo_scene.blur(hr, 1.0), demo_scene.blur(bicubic, 1.0)
    assert laplacian_energy(hr_s) > 5 * laplacian_energy(bic_s)
    rmse = math.sqrt(float(((hr - bicubic) ** 2).mean()))
    assert rmse > 5 * demo_scene.NOISE_FLOOR * 2  # far above the sensor noise


def test_quicklook_png(pair):
    _, _, png = pair
    ds = gdal.Open(png)
    assert ds.RasterCount == 3 and (ds.RasterXSize, ds.RasterYSize) == (3 * 256 + 2 * 8, 256)


def test_degrade_is_exact_on_a_constant_image():
    flat = np.full((32, 32, 2), 1234.0)
    np.testing.assert_allclose(demo_scene.degrade(flat), 1234.0)
    assert demo_scene.degrade(flat).shape == (8, 8, 2)


def test_bad_sizes_are_refused(tmp_path, capsys):
    with pytest.raises(SR4RSError, match="multiple of 4"):
        demo_scene.generate_hr(130)
    assert run_cli(demo_scene.main, [str(tmp_path / "out"), "--size", "32"]) == 2
    assert "at least 64" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
