"""extract_patches.py against OTBTF's real PatchesExtraction (built by `make otb`, or the OTBTF image).

Where they agree (checked here): the LR patches always; the HR patches whenever the point lies in the
top-left HR pixel of its LR pixel (in particular on an LR pixel corner, e.g. QGIS grid centroids), and
the output size, data type and geotransform. Where they differ (also checked, precisely): elsewhere,
OTBTF centres the HR patch on the HR pixel containing the point, independently of the LR patch, so its HR
patch is shifted by up to 3 HR pixels from the ground of the LR patch; ours covers exactly the LR patch.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
from helpers import write_points, write_raster
from osgeo import gdal

import otb_env
from cli import run_cli
from extract_patches import main, otb_pixel_index

OTB = otb_env.load_otb("PatchesExtraction")
pytestmark = pytest.mark.otb
NSOURCES = "OTB_TF_NSOURCES"  # OTBTF's variable (the original SR4RS README's OTB_TF_NBSOURCES is a typo)


def read(path: str) -> tuple[np.ndarray, tuple, int]:
    ds = gdal.Open(path)
    arr = np.moveaxis(ds.ReadAsArray(), 0, -1)
    return arr, ds.GetGeoTransform(), ds.GetRasterBand(1).DataType


def otb_python(lr: str, hr: str, s: int, vec: str, out_lr: str, out_hr: str, pixel_type: str,
               nodata: tuple[float, float] | None = None, field: str = "label") -> None:
    """PatchesExtraction through the otbApplication binding (source1 = LR, source2 = HR)."""
    old = os.environ.get(NSOURCES)
    os.environ[NSOURCES] = "2"  # read when the application is created
    try:
        app = OTB.Registry.CreateApplication("PatchesExtraction")
    finally:
        os.environ.pop(NSOURCES) if old is None else os.environ.update({NSOURCES: old})
    assert app is not None
    for k, (image, size, out) in enumerate(((lr, s, out_lr), (hr, 4 * s, out_hr)), 1):
        app.SetParameterStringList(f"source{k}.il", [image])
        app.SetParameterInt(f"source{k}.patchsizex", size)
        app.SetParameterInt(f"source{k}.patchsizey", size)
        app.SetParameterString(f"source{k}.out", out)
        app.SetParameterOutputImagePixelType(f"source{k}.out", getattr(OTB, f"ImagePixelType_{pixel_type}"))
        if nodata is not None:
            app.SetParameterFloat(f"source{k}.nodata", nodata[k - 1])
    app.SetParameterString("vec", vec)
    app.SetParameterString("field", field)
    app.ExecuteAndWriteOutput()


def ours(lr: str, hr: str, s: int, vec: str, out_lr: str, out_hr: str, *extra: str) -> None:
    assert run_cli(main, ["--quiet", "--lr", lr, "--hr", hr, "--lr_patchsize", str(s), "--vec", vec,
                          "--out_lr", out_lr, "--out_hr", out_hr, *extra]) == 0


def otbcli() -> str | None:
    local = os.path.join(otb_env.local_otb_dir(), "bin", "otbcli_PatchesExtraction")
    return local if os.path.isfile(local) else shutil.which("otbcli_PatchesExtraction")


@pytest.mark.skipif(otbcli() is None, reason="no otbcli_PatchesExtraction launcher (run `make otb`)")
def test_readme_command_identical_on_pixel_corners(tmp_path):
    """The README's command line (int16, 4 bands, Sentinel-2/SPOT-like grids), points on LR pixel corners."""
    rng = np.random.default_rng(0)
    origin, w = (699960.0, 5000040.0), 48
    hr = rng.integers(-2000, 12000, (4 * w, 4 * w, 4)).astype(np.int16)
    lr = rng.integers(-2000, 12000, (w, w, 4)).astype(np.int16)
    lr_path = write_raster(str(tmp_path / "lr.tif"), lr, origin=origin, pixel_size=10.0)
    hr_path = write_raster(str(tmp_path / "hr.tif"), hr, origin=origin, pixel_size=2.5)
    corners = rng.integers(4, w - 4, (80, 2))  # some too close to the edges: rejected by both
    xy = np.column_stack([origin[0] + 10.0 * corners[:, 0], origin[1] - 10.0 * corners[:, 1]])
    vec = write_points(str(tmp_path / "centers.gpkg"), xy)
    env = {**os.environ, NSOURCES: "2"}
    cmd = [otbcli(), "-source1.il", lr_path, "-source1.patchsizex", "16", "-source1.patchsizey", "16",
           "-source1.out", str(tmp_path / "otb_lr.tif"), "int16",
           "-source2.il", hr_path, "-source2.patchsizex", "64", "-source2.patchsizey", "64",
           "-source2.out", str(tmp_path / "otb_hr.tif"), "int16", "-vec", vec, "-field", "label"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ours(lr_path, hr_path, 16, vec, str(tmp_path / "lr.tif.p.tif"), str(tmp_path / "hr.tif.p.tif"))
    for a, b in (("otb_lr.tif", "lr.tif.p.tif"), ("otb_hr.tif", "hr.tif.p.tif")):
        arr_otb, gt_otb, type_otb = read(str(tmp_path / a))
        arr_us, gt_us, type_us = read(str(tmp_path / b))
        assert arr_otb.shape == arr_us.shape and 10 < arr_otb.shape[0] // arr_otb.shape[1] < 80
        assert type_otb == type_us == gdal.GDT_Int16 and gt_otb == gt_us
        np.testing.assert_array_equal(arr_otb, arr_us)


@pytest.mark.parametrize("s", [4, 3])
def test_random_points_where_and_why_they_differ(tmp_path, s):
    """Points anywhere, pixel sizes not exact in binary (1.2 m / 0.3 m), a shifted origin, even and odd s.

    Pixel values encode positions (band 1 = column, band 2 = row) so each patch tells where it came from.
    """
    origin, w = (500000.123, 4800000.7), 64
    cols, rows = np.meshgrid(np.arange(4 * w), np.arange(4 * w))
    hr = np.stack([cols, rows], -1).astype(np.int32)
    lr = hr[::4, ::4] // 4
    lr_path = write_raster(str(tmp_path / "lr.tif"), lr, origin=origin, pixel_size=1.2)
    hr_path = write_raster(str(tmp_path / "hr.tif"), hr, origin=origin, pixel_size=0.3)
    rng = np.random.default_rng(1)
    xy = np.column_stack([origin[0] + 1.2 * rng.uniform(2, w - 2, 300),
                          origin[1] - 1.2 * rng.uniform(2, w - 2, 300)])
    corners = rng.integers(2, w - 2, (100, 2))
    xy = np.vstack([xy, np.column_stack([origin[0] + 1.2 * corners[:, 0], origin[1] - 1.2 * corners[:, 1]])])
    vec = write_points(str(tmp_path / "pts.gpkg"), xy)
    otb_python(lr_path, hr_path, s, vec, str(tmp_path / "otb_lr.tif"), str(tmp_path / "otb_hr.tif"), "int32")
    ours(lr_path, hr_path, s, vec, str(tmp_path / "us_lr.tif"), str(tmp_path / "us_hr.tif"))
    otb_lr, _, _ = read(str(tmp_path / "otb_lr.tif"))
    otb_hr, _, _ = read(str(tmp_path / "otb_hr.tif"))
    us_lr, _, _ = read(str(tmp_path / "us_lr.tif"))
    us_hr, _, _ = read(str(tmp_path / "us_hr.tif"))
    n = len(xy)
    assert otb_lr.shape == us_lr.shape == (n * s, s, 2)
    assert otb_hr.shape == us_hr.shape == (n * 4 * s, 4 * s, 2)
    np.testing.assert_array_equal(otb_lr, us_lr)  # LR: always identical (same rounding, bit for bit)

    lr_col, lr_row = otb_pixel_index(xy[:, 0], origin[0], 1.2), otb_pixel_index(xy[:, 1], origin[1], -1.2)
    hr_col, hr_row = otb_pixel_index(xy[:, 0], origin[0], 0.3), otb_pixel_index(xy[:, 1], origin[1], -0.3)
    # OTBTF's HR patch is ours when the point is in the HR pixel at 4 x its LR pixel (+ 2 for an odd s):
    # the top-left HR pixel of the LR pixel (even s), the one right below the LR pixel's centre (odd s)
    target_col, target_row = 4 * lr_col + 2 * (s % 2), 4 * lr_row + 2 * (s % 2)
    same = (hr_col == target_col) & (hr_row == target_row)
    assert 10 < same.sum() < n
    for i in range(n):
        o, u = otb_hr[i * 4 * s:(i + 1) * 4 * s], us_hr[i * 4 * s:(i + 1) * 4 * s]
        # ours: the HR window is 4 x the LR window (same ground)
        assert u[0, 0].tolist() == [4 * (lr_col[i] - s // 2), 4 * (lr_row[i] - s // 2)]
        # OTBTF: centred on the HR pixel containing the point
        assert o[0, 0].tolist() == [hr_col[i] - 2 * s, hr_row[i] - 2 * s]
        assert np.array_equal(o, u) == bool(same[i])
    # Random points: the HR pixel is one of the 4 x 4 in the LR pixel, OTBTF's HR patch is off by up to
    # 3 HR pixels. Points on LR pixel corners (x0 + k * 1.2): 1.2 and 0.3 are not exact in binary, so the
    # corner falls on either side of the edge by a rounding error, independently for OTBTF's LR and HR
    # roundings (offsets -1 or 4: they disagree; 3: both went left): OTBTF's HR patch is then shifted even
    # for a corner point. Ours never is. (With 10/2.5, 6/1.5 or 2/0.5 m, exact in binary, corners agree.)
    offsets = np.column_stack([hr_col - 4 * lr_col, hr_row - 4 * lr_row])
    assert set(offsets[:300].ravel().tolist()) == {0, 1, 2, 3}
    assert set(offsets[300:].ravel().tolist()) <= {-1, 0, 3, 4} and (offsets[300:] != 0).any()


@pytest.mark.parametrize("lr_px, s", [(0.4, 4), (40 / 3, 4), (0.4, 3)])
def test_centres_file_gives_the_same_patches(tmp_path, lr_px, s):
    """PatchesExtraction fed with extract_patches.py's centres GeoPackage (`-vec <lr stem>_centers.gpkg
    -field patch`) extracts the same LR and HR patches, with pixel sizes not exact in binary (0.4 / 0.1 m,
    40/3 / 10/3 m), on which OTB rounds a point on an LR pixel corner to either side."""
    origin, w = (699960.4, 5000040.8), 40
    cols, rows = np.meshgrid(np.arange(4 * w), np.arange(4 * w))
    hr = np.stack([cols, rows], -1).astype(np.int32)  # positions: each patch tells where it came from
    lr_path = write_raster(str(tmp_path / "lr.tif"), hr[::4, ::4] // 4, origin=origin, pixel_size=lr_px)
    hr_path = write_raster(str(tmp_path / "hr.tif"), hr, origin=origin, pixel_size=lr_px / 4)
    assert run_cli(main, ["--quiet", "--lr", lr_path, "--hr", hr_path, "--lr_patchsize", str(s),
                          "--step", "2", "--out_lr", str(tmp_path / "us_lr.tif"),
                          "--out_hr", str(tmp_path / "us_hr.tif")]) == 0
    otb_python(lr_path, hr_path, s, str(tmp_path / "us_lr_centers.gpkg"), str(tmp_path / "otb_lr.tif"),
               str(tmp_path / "otb_hr.tif"), "int32", field="patch")
    for name in ("lr", "hr"):
        o, gt_o, _ = read(str(tmp_path / f"otb_{name}.tif"))
        u, gt_u, _ = read(str(tmp_path / f"us_{name}.tif"))
        assert o.shape == u.shape and o.shape[0] // o.shape[1] == ((w - s) // 2 + 1) ** 2 and gt_o == gt_u
        np.testing.assert_array_equal(o, u)


def test_nodata_rejections_identical(tmp_path):
    """`sourceN.nodata` of PatchesExtraction and --lr_nodata/--hr_nodata reject the same patches."""
    origin, w, s = (300000.0, 5100000.0), 32, 4
    rng = np.random.default_rng(2)
    lr = rng.integers(1, 100, (w, w, 2)).astype(np.uint16)
    hr = rng.integers(1, 100, (4 * w, 4 * w, 2)).astype(np.uint16)
    lr[rng.integers(0, w, 6), rng.integers(0, w, 6), 1] = 0
    hr[rng.integers(0, 4 * w, 12), rng.integers(0, 4 * w, 12), 0] = 999
    lr_path = write_raster(str(tmp_path / "lr.tif"), lr, origin=origin, pixel_size=6.0)
    hr_path = write_raster(str(tmp_path / "hr.tif"), hr, origin=origin, pixel_size=1.5)
    corners = np.array([(c, r) for r in range(2, w - 1, 3) for c in range(2, w - 1, 3)])
    xy = np.column_stack([origin[0] + 6.0 * corners[:, 0], origin[1] - 6.0 * corners[:, 1]])
    vec = write_points(str(tmp_path / "pts.gpkg"), xy)
    otb_python(lr_path, hr_path, s, vec, str(tmp_path / "otb_lr.tif"), str(tmp_path / "otb_hr.tif"), "uint16",
               nodata=(0, 999))
    ours(lr_path, hr_path, s, vec, str(tmp_path / "us_lr.tif"), str(tmp_path / "us_hr.tif"),
         "--lr_nodata", "0", "--hr_nodata", "999")
    for name in ("lr", "hr"):
        o, _, _ = read(str(tmp_path / f"otb_{name}.tif"))
        u, _, _ = read(str(tmp_path / f"us_{name}.tif"))
        assert 0 < o.shape[0] // o.shape[1] < len(xy)  # some rejected, some kept
        np.testing.assert_array_equal(o, u)
