"""extract_patches.py, issue 11 (reliability): --resample_hr over an HR image that does not cover the LR
image, centres that OTB's PatchesExtraction cannot round the wrong way, and a nodata value that is also a
real value (`--lr_nodata none` / `--hr_nodata none`)."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from helpers import write_raster
from test_extract_patches import X0, Y0, block_mean, read_centers, read_patches

from cli import run_cli
from constants import SCALE
from extract_patches import main, otb_pixel_index

W, S = 40, 4  # LR image size, LR patch size


def extract(*args: str) -> int:
    return run_cli(main, ["--quiet", *args])


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("nodata, extra", [(None, []), (0.0, []), (0.0, ["--hr_nodata", "none"])],
                         ids=["no-nodata", "file-nodata", "nodata-none"])
def test_resample_hr_skips_windows_the_hr_image_does_not_cover(tmp_path, caplog, nodata, extra):
    """An HR image (5 m, not LR / 4) shifted by half its width: the LR windows it does not cover are
    skipped and counted, not written as all-zero HR patches."""
    truth = np.random.default_rng(3).integers(1, 100, (W, W + W // 2, 1)).astype(np.float32)
    lr_path = write_raster(str(tmp_path / "lr.tif"), truth[:, :W], origin=(X0, Y0), pixel_size=10.0)
    hr5 = np.repeat(np.repeat(truth[:, W // 2:], 2, 0), 2, 1)  # LR columns 20 .. 60
    hr_path = write_raster(str(tmp_path / "hr.tif"), hr5, origin=(X0 + 10.0 * W / 2, Y0), pixel_size=5.0,
                           nodata=nodata)
    out_lr, out_hr = str(tmp_path / "o_lr.tif"), str(tmp_path / "o_hr.tif")
    with caplog.at_level(logging.INFO):
        assert run_cli(main, ["--lr", lr_path, "--hr", hr_path, "--lr_patchsize", str(S), "--step", "5",
                              "--resample_hr", "--resampling", "nearest", "--out_lr", out_lr,
                              "--out_hr", out_hr, *extra]) == 0
    lr_p, hr_p = read_patches(out_lr, S), read_patches(out_hr, SCALE * S)
    assert len(lr_p) == len(hr_p) == 4 * 8  # of 8 x 8 windows, LR columns 20, 25, 30, 35 are covered
    assert not (hr_p == 0).all(axis=(1, 2, 3)).any()
    np.testing.assert_array_equal(block_mean(hr_p), lr_p)
    assert {c["lr_col"] for c in read_centers(str(tmp_path / "o_lr_centers.gpkg"))} == {20, 25, 30, 35}
    assert "kept 32 patches; skipped 0 outside an image, 32 not covered by the HR image, 0 with nodata" \
        in caplog.text


def test_resample_hr_refuses_an_hr_image_that_does_not_overlap(tmp_path, capsys):
    """The same coordinates in another CRS (UTM zone 32 instead of 31): hundreds of km away."""
    lr = np.ones((W, W, 1), np.float32)
    lr_path = write_raster(str(tmp_path / "lr.tif"), lr, origin=(X0, Y0), pixel_size=10.0)
    hr_path = write_raster(str(tmp_path / "hr.tif"), np.ones((2 * W, 2 * W, 1), np.float32), origin=(X0, Y0),
                           pixel_size=5.0, epsg=32632)
    args = ["--lr", lr_path, "--hr", hr_path, "--lr_patchsize", str(S), "--step", "5",
            "--out_lr", str(tmp_path / "o_lr.tif"), "--out_hr", str(tmp_path / "o_hr.tif")]
    assert extract(*args, "--resample_hr") == 2
    line = one_error_line(capsys)
    assert f"{hr_path} does not overlap {lr_path}" in line
    assert sorted(os.listdir(tmp_path)) == ["hr.tif", "lr.tif"]


@pytest.mark.parametrize("lr_px, s", [(0.4, 4), (40 / 3, 4), (0.4, 3), (40 / 3, 5)])
def test_centres_fall_in_the_pixels_otb_must_pick(tmp_path, lr_px, s):
    """Each centre goes, by OTB/ITK's own rounding, to the LR pixel at (s//2, s//2) of its window and to the
    HR pixel at (2s, 2s) of its HR window, also with pixel sizes that are not exact in binary."""
    origin, w = (699960.4, 5000040.8), 48
    hr_origin = (origin[0] - 3 * lr_px / SCALE, origin[1] + 5 * lr_px / SCALE)  # HR grid 3, 5 HR pixels out
    lr_path = write_raster(str(tmp_path / "lr.tif"), np.ones((w, w, 1), np.uint8), origin=origin,
                           pixel_size=lr_px)
    hr_path = write_raster(str(tmp_path / "hr.tif"), np.ones((SCALE * w + 8, SCALE * w + 8, 1), np.uint8),
                           origin=hr_origin, pixel_size=lr_px / SCALE)
    assert extract("--lr", lr_path, "--hr", hr_path, "--lr_patchsize", str(s), "--step", "1",
                   "--out_lr", str(tmp_path / "o_lr.tif"), "--out_hr", str(tmp_path / "o_hr.tif")) == 0
    centers = read_centers(str(tmp_path / "o_lr_centers.gpkg"))
    assert len(centers) == (w - s + 1) ** 2
    x, y = np.array([c["x"] for c in centers]), np.array([c["y"] for c in centers])
    col, row = np.array([c["lr_col"] for c in centers]), np.array([c["lr_row"] for c in centers])
    np.testing.assert_array_equal(otb_pixel_index(x, origin[0], lr_px), col + s // 2)
    np.testing.assert_array_equal(otb_pixel_index(y, origin[1], -lr_px), row + s // 2)
    hr_px = lr_px / SCALE
    np.testing.assert_array_equal(otb_pixel_index(x, hr_origin[0], hr_px), 3 + SCALE * col + 2 * s)
    np.testing.assert_array_equal(otb_pixel_index(y, hr_origin[1], -hr_px), 5 + SCALE * row + 2 * s)
    # a sixteenth of an LR pixel (a quarter HR pixel) right of and below the window's centre
    np.testing.assert_allclose(x, origin[0] + (col + s / 2 + 1 / 16) * lr_px, rtol=0, atol=1e-6)
    np.testing.assert_allclose(y, origin[1] - (row + s / 2 + 1 / 16) * lr_px, rtol=0, atol=1e-6)


@pytest.fixture()
def sand(tmp_path) -> dict:
    """8-bit LR and HR whose files declare nodata 255, also the value of saturated white sand."""
    rng = np.random.default_rng(4)
    hr = rng.integers(0, 255, (SCALE * W, SCALE * W, 3)).astype(np.uint8)
    hr[::5, ::7] = 255  # saturated pixels everywhere
    lr = hr.reshape(W, SCALE, W, SCALE, 3).max(axis=(1, 3))  # the LR image saturates too
    return {"lr": write_raster(str(tmp_path / "lr.tif"), lr, origin=(X0, Y0), pixel_size=10.0, nodata=255),
            "hr": write_raster(str(tmp_path / "hr.tif"), hr, origin=(X0, Y0), pixel_size=2.5, nodata=255),
            "out": ["--out_lr", str(tmp_path / "o_lr.tif"), "--out_hr", str(tmp_path / "o_hr.tif")]}


def test_nodata_that_is_a_real_value_is_explained(sand, capsys):
    assert extract("--lr", sand["lr"], "--hr", sand["hr"], "--lr_patchsize", str(S), "--step", str(S),
                   *sand["out"]) == 2
    line = one_error_line(capsys)
    assert "no patch to extract: 0 outside an image, 100 with nodata" in line
    # every LR window holds saturated pixels; LR is checked first
    assert f"100 patches held pixels equal to {sand['lr']}'s nodata value 255" in line
    assert "use --lr_nodata none to ignore it" in line and "fall inside" not in line
    # LR ignored: the HR image is the one that rejects
    assert extract("--lr", sand["lr"], "--hr", sand["hr"], "--lr_patchsize", str(S), "--step", str(S),
                   "--lr_nodata", "none", *sand["out"]) == 2
    line = one_error_line(capsys)
    assert f"patches held pixels equal to {sand['hr']}'s nodata value 255" in line
    assert "use --hr_nodata none to ignore it" in line


def test_nodata_none_ignores_the_files_nodata(sand, tmp_path):
    assert extract("--lr", sand["lr"], "--hr", sand["hr"], "--lr_patchsize", str(S), "--step", str(S),
                   "--lr_nodata", "None", "--hr_nodata", "none", *sand["out"]) == 0
    lr_p, hr_p = read_patches(str(tmp_path / "o_lr.tif"), S), read_patches(str(tmp_path / "o_hr.tif"), 4 * S)
    assert len(lr_p) == len(hr_p) == (W // S) ** 2 and (hr_p == 255).any()
    # also through the --resample_hr warp, which then neither skips nor blends the 255s
    assert extract("--lr", sand["lr"], "--hr", sand["hr"], "--lr_patchsize", str(S), "--step", str(S),
                   "--lr_nodata", "none", "--hr_nodata", "none", "--resample_hr", "--resampling", "nearest",
                   *sand["out"]) == 0
    np.testing.assert_array_equal(read_patches(str(tmp_path / "o_hr.tif"), 4 * S), hr_p)
    # the numbers still work as before: -1 is never an 8-bit value
    assert extract("--lr", sand["lr"], "--hr", sand["hr"], "--lr_patchsize", str(S), "--step", str(S),
                   "--lr_nodata", "-1", "--hr_nodata", "-1", *sand["out"]) == 0
    assert len(read_patches(str(tmp_path / "o_lr.tif"), S)) == (W // S) ** 2


def test_mostly_nodata_warns_with_the_hint(tmp_path, caplog):
    lr = np.full((W, W, 1), 7, np.int16)
    lr[1::S, 1:32:S] = lr[2::S, 2:32:S] = -9999  # 2 nodata pixels in each window of the left 8 columns
    hr = np.full((4 * W, 4 * W, 1), 9, np.int16)
    lr_path = write_raster(str(tmp_path / "lr.tif"), lr, origin=(X0, Y0), pixel_size=10.0, nodata=-9999)
    hr_path = write_raster(str(tmp_path / "hr.tif"), hr, origin=(X0, Y0), pixel_size=2.5)
    with caplog.at_level(logging.INFO):
        assert run_cli(main, ["--lr", lr_path, "--hr", hr_path, "--lr_patchsize", str(S), "--step", str(S),
                              "--out_lr", str(tmp_path / "o_lr.tif"),
                              "--out_hr", str(tmp_path / "o_hr.tif")]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("80 of 100 patches examined were rejected for nodata: 80 patches held "
                                  f"pixels equal to {lr_path}'s nodata value -9999 (160 pixels, 12.5% of "
                                  "those patches' pixels)")
    assert "--lr_nodata none" in warnings[0]


def test_nodata_option_values(sand, capsys):
    assert extract("--lr", sand["lr"], "--hr", sand["hr"], "--lr_patchsize", str(S), "--step", str(S),
                   "--lr_nodata", "abc", *sand["out"]) == 2
    assert "--lr_nodata: not a number or 'none': 'abc'" in one_error_line(capsys)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "none" in capsys.readouterr().out


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_non_finite_pixels_are_nodata(tmp_path, value):
    """NaN and +-inf in a float image: the patches holding them are skipped, never written."""
    hr = np.random.default_rng(5).uniform(1, 100, (SCALE * W, SCALE * W, 2)).astype(np.float32)
    lr = block_mean(hr).astype(np.float32)
    lr[5, 6, 1] = value  # in the patch at LR column 4, row 4 (--step S)
    hr[SCALE * 30, SCALE * 31, 0] = value  # in the patch at LR column 28, row 28
    lr_path = write_raster(str(tmp_path / "lr.tif"), lr, origin=(X0, Y0), pixel_size=10.0)
    hr_path = write_raster(str(tmp_path / "hr.tif"), hr, origin=(X0, Y0), pixel_size=10.0 / SCALE)
    out_lr, out_hr = str(tmp_path / "o_lr.tif"), str(tmp_path / "o_hr.tif")
    assert extract("--lr", lr_path, "--hr", hr_path, "--lr_patchsize", str(S), "--step", str(S),
                   "--out_lr", out_lr, "--out_hr", out_hr) == 0
    lr_p, hr_p = read_patches(out_lr, S), read_patches(out_hr, SCALE * S)
    assert len(lr_p) == (W // S) ** 2 - 2
    assert np.isfinite(lr_p).all() and np.isfinite(hr_p).all()
