"""Self-supervised patches (issue 12, Wald protocol): degradation.py (PSF with a given MTF at the LR
Nyquist frequency, block mean, decimation phase, nodata, mirrored edges) and
`extract_patches.py --self_supervised`."""
from __future__ import annotations

import logging
import math
import os

import numpy as np
import pytest
from helpers import write_points, write_raster
from osgeo import gdal
from test_extract_patches import X0, Y0, block_mean, read_centers, read_patches
from test_extract_reliability import extract, one_error_line

from cli import run_cli
from constants import SCALE
from degradation import (
    LR_NYQUIST,
    MAX_MTF,
    Degradation,
    gaussian_sigma,
    kernel_mtf,
    read_mirrored,
    tap_offsets,
    to_image_type,
)
from extract_patches import main

PX = 10.0  # the image's pixel size (e.g. Sentinel-2 10 m): the LR side is at 40 m
S = 4  # LR patch size



def degrade_whole(image: np.ndarray, degradation: Degradation) -> tuple[np.ndarray, np.ndarray]:
    """The whole (tiny) image degraded in one go, mirrored beyond its edges: the reference the windows
    computed with margins must match."""
    m = degradation.margin
    return degradation.apply(np.pad(image, ((m, m), (m, m), (0, 0)), mode="symmetric"))


# --- the PSF --------------------------------------------------------------------------------------------

def test_gaussian_sigma_formula():
    """sigma = 4 sqrt(-2 ln mtf) / pi: the continuous Gaussian's MTF exp(-2 pi^2 sigma^2 f^2) at 1/8."""
    assert LR_NYQUIST == 1 / 8
    for mtf in (0.05, 0.3, 0.6, 0.9):
        sigma = gaussian_sigma(mtf)
        assert sigma == pytest.approx(4 * math.sqrt(-2 * math.log(mtf)) / math.pi, rel=1e-12)
        assert math.exp(-2 * math.pi ** 2 * sigma ** 2 * LR_NYQUIST ** 2) == pytest.approx(mtf, rel=1e-12)
    assert gaussian_sigma(0.3) == pytest.approx(1.9758, abs=1e-4)


@pytest.mark.parametrize("mtf", [0.01, 0.1, 0.2, 0.3, 0.45, 0.65, 0.8, 0.9, 0.92])
def test_discrete_kernel_has_the_mtf_at_nyquist(mtf):
    degradation = Degradation.gaussian(mtf)
    taps = degradation.taps
    assert len(taps) == SCALE + 2 * degradation.margin and taps.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(taps, taps[::-1], rtol=0, atol=1e-15)  # symmetric about the block centre
    assert (np.diff(taps[len(taps) // 2:]) < 0).all()  # decreasing from the centre: a Gaussian
    assert kernel_mtf(taps) == pytest.approx(mtf, abs=1e-9)
    # independently, with an FFT: the frequency response's modulus at 1/8 cycle per pixel
    n = 64 * len(taps)
    assert abs(np.fft.rfft(taps, n)[n // 8]) == pytest.approx(mtf, abs=1e-9)
    # the taps sample a Gaussian of std sigma, close to the continuous formula (away from MAX_MTF)
    x = tap_offsets(len(taps))
    expected = np.exp(-x ** 2 / (2 * degradation.sigma ** 2))
    np.testing.assert_allclose(taps, expected / expected.sum(), rtol=1e-9)
    if mtf <= 0.8:
        assert degradation.sigma == pytest.approx(gaussian_sigma(mtf), rel=1e-3)
        assert degradation.margin >= 4 * degradation.sigma - SCALE / 2  # truncated at 4 sigma at least


def test_block_mean_kernel():
    degradation = Degradation.mean()
    assert degradation.margin == 0 and degradation.taps.tolist() == [0.25] * 4
    box_mtf = (math.cos(math.pi / 8) + math.cos(3 * math.pi / 8)) / 2  # taps at +-0.5, +-1.5
    assert kernel_mtf(degradation.taps) == pytest.approx(box_mtf) and round(box_mtf, 2) == 0.65
    assert MAX_MTF == pytest.approx(math.cos(math.pi / 8))


@pytest.mark.parametrize("degradation", [Degradation.gaussian(0.3), Degradation.gaussian(0.6),
                                         Degradation.mean()], ids=["mtf0.3", "mtf0.6", "mean"])
def test_cosine_at_nyquist_comes_out_with_the_mtf(degradation):
    """A cosine at the LR Nyquist frequency peaking at the centres of the 4x4 blocks (image column
    4j + 1.5): LR column j holds +-MTF exactly, which tests both the MTF and the decimation phase (a PSF
    centred one image pixel off would give MTF * cos(pi / 4))."""
    cols = np.arange(4 * 24)
    image = np.tile(np.cos(2 * np.pi * LR_NYQUIST * (cols - 1.5)), (4 * 6, 1))[:, :, np.newaxis]
    lr, invalid = degrade_whole(image, degradation)
    assert lr.shape == (6, 24, 1) and not invalid.any()
    inner = slice(math.ceil(degradation.margin / 4), 24 - math.ceil(degradation.margin / 4))  # off the edges
    expected = kernel_mtf(degradation.taps) * (-1.0) ** np.arange(24)
    np.testing.assert_allclose(lr[:, inner, 0], np.broadcast_to(expected[inner], (6, len(expected[inner]))),
                               rtol=0, atol=1e-12)


def test_block_mean_is_exact_in_memory():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 5000, (4 * 5 + 3, 4 * 7 + 2, 3)).astype(np.float64)  # partial blocks ignored
    lr, invalid = Degradation.mean().apply(image)
    np.testing.assert_array_equal(lr, block_mean(image[:20, :28]))
    assert not invalid.any()


def test_nodata_and_nan_spread_over_the_psf_support():
    degradation = Degradation.gaussian(0.3)
    m = degradation.margin
    image = np.ones((4 * 12, 4 * 10, 2), np.float32)
    invalid = np.zeros(image.shape[:2], dtype=bool)
    invalid[21, 17] = True  # a nodata value
    image[30, 5, 1] = np.nan  # NaN in one band
    lr, lr_invalid = degrade_whole(image, degradation)
    expected = np.zeros((12, 10), dtype=bool)
    for (r, c) in ((21, 17), (30, 5)):
        rows = [i for i in range(12) if 4 * i - m <= r < 4 * i + 4 + m]
        cols = [j for j in range(10) if 4 * j - m <= c < 4 * j + 4 + m]
        expected[np.ix_(rows, cols)] = True
    lr2, lr_invalid2 = degradation.apply(np.pad(image, ((m, m), (m, m), (0, 0)), mode="symmetric"),
                                         np.pad(invalid, m, mode="symmetric"))
    np.testing.assert_array_equal(lr_invalid2, expected)
    assert lr_invalid.sum() == len([1 for i in range(12) if 4 * i - m <= 30 < 4 * i + 4 + m]) * \
        len([1 for j in range(10) if 4 * j - m <= 5 < 4 * j + 4 + m])  # the NaN alone
    assert (lr2[lr_invalid2] == 0).all() and np.isfinite(lr2).all()
    np.testing.assert_allclose(lr2[~lr_invalid2], 1.0, rtol=1e-12)  # the other pixels: blur of ones


def test_read_mirrored_and_to_image_type():
    image = np.arange(5 * 6, dtype=np.float64).reshape(5, 6, 1)

    def read(x, y, w, h):
        return image[y:y + h, x:x + w], np.zeros((h, w), dtype=bool)

    full = np.pad(image, ((7, 7), (7, 7), (0, 0)), mode="symmetric")  # edge pixel repeated: ... b a | a b
    arr, bad = read_mirrored(read, -3, -2, 8, 9, (6, 5))
    np.testing.assert_array_equal(arr, full[7 - 2:7 - 2 + 9, 7 - 3:7 - 3 + 8])
    assert arr[2, 3, 0] == image[0, 0, 0] == arr[1, 2, 0] and bad.shape == (9, 8)
    arr, _ = read_mirrored(read, 1, 1, 3, 3, (6, 5))  # inside: read as is
    np.testing.assert_array_equal(arr, image[1:4, 1:4])
    values = np.array([-0.6, 0.4, 2.5, 3.5, 255.6, 1e9])
    assert to_image_type(values, np.uint8).tolist() == [0, 0, 2, 4, 255, 255]  # rounded half to even
    assert to_image_type(values, np.int16).tolist() == [-1, 0, 2, 4, 256, 32767]
    assert to_image_type(values, np.float32).dtype == np.float32


# --- extract_patches.py --self_supervised ----------------------------------------------------------------

@pytest.fixture(scope="module")
def image(tmp_path_factory) -> dict:
    """A 2-band uint16 image whose size is not a multiple of 4 (83 rows, 98 columns): 20 x 24 LR pixels."""
    d = tmp_path_factory.mktemp("selfsup")
    rng = np.random.default_rng(5)
    arr = rng.integers(0, 3000, (83, 98, 2)).astype(np.uint16)
    return {"arr": arr, "path": write_raster(str(d / "s2_10m.tif"), arr, origin=(X0, Y0), pixel_size=PX)}


def test_block_mean_patches_and_georeferencing(image, tmp_path):
    arr = image["arr"]
    out_lr, out_hr = str(tmp_path / "lr.tif"), str(tmp_path / "hr.tif")
    assert extract("--self_supervised", "--lr", image["path"], "--degradation", "mean", "--lr_patchsize",
                   str(S), "--step", "3", "--out_lr", out_lr, "--out_hr", out_hr) == 0
    lr_p, hr_p = read_patches(out_lr, S), read_patches(out_hr, 4 * S)
    assert lr_p.dtype == hr_p.dtype == np.uint16  # the image's type, rounded
    centers = read_centers(str(tmp_path / "lr_centers.gpkg"))
    # windows every 3 LR pixels that fit in the 24 x 20 LR grid (the last, partial image blocks are not used)
    assert sorted({c["lr_col"] for c in centers}) == list(range(0, 21, 3))
    assert sorted({c["lr_row"] for c in centers}) == list(range(0, 17, 3))
    assert len(centers) == len(lr_p) == len(hr_p) == 7 * 6
    for c, lr_patch, hr_patch in zip(centers, lr_p, hr_p, strict=True):
        col, row = c["lr_col"], c["lr_row"]
        window = arr[4 * row:4 * row + 4 * S, 4 * col:4 * col + 4 * S]
        np.testing.assert_array_equal(hr_patch, window)  # the HR side is the image itself
        np.testing.assert_array_equal(lr_patch, np.rint(block_mean(window.astype(np.float64))))
        # the LR grid: the image's origin, a 40 m pixel size
        assert c["x"] == X0 + (col + S / 2 + 1 / 16) * 4 * PX
        assert c["y"] == Y0 - (row + S / 2 + 1 / 16) * 4 * PX
    assert gdal.Open(out_lr).GetGeoTransform() == (-2 * PX, 4 * PX, 0.0, 2 * PX, 0.0, -4 * PX)
    assert gdal.Open(out_hr).GetGeoTransform() == (-PX / 2, PX, 0.0, PX / 2, 0.0, -PX)


def test_block_mean_of_a_float_image_is_not_rounded(tmp_path):
    arr = np.random.default_rng(6).integers(0, 1000, (4 * 8, 4 * 8, 1)).astype(np.float32)
    path = write_raster(str(tmp_path / "f.tif"), arr, origin=(X0, Y0), pixel_size=PX)
    out_lr, out_hr = str(tmp_path / "lr.tif"), str(tmp_path / "hr.tif")
    assert extract("--self_supervised", "--lr", path, "--degradation", "mean", "--lr_patchsize", str(S),
                   "--step", str(S), "--out_lr", out_lr, "--out_hr", out_hr) == 0
    lr_p, hr_p = read_patches(out_lr, S), read_patches(out_hr, 4 * S)
    assert lr_p.dtype == np.float32 and len(lr_p) == 4
    np.testing.assert_array_equal(lr_p, block_mean(hr_p.astype(np.float64)).astype(np.float32))
    assert (lr_p != np.round(lr_p)).any()


def test_gaussian_patches_are_windows_of_the_degraded_image(image, tmp_path, caplog):
    """Every LR window (step 1, edges included) computed with its margins equals the same window of the
    whole image degraded at once: no seam, the image mirrored at its edges."""
    arr = image["arr"]
    degradation = Degradation.gaussian(0.3)
    lr_full, invalid = degrade_whole(arr, degradation)
    assert lr_full.shape[:2] == (20, 24) and not invalid.any()
    lr_full = to_image_type(lr_full, np.uint16)
    out_lr, out_hr = str(tmp_path / "lr.tif"), str(tmp_path / "hr.tif")
    with caplog.at_level(logging.INFO):
        assert run_cli(main, ["--self_supervised", "--lr", image["path"], "--lr_patchsize", str(S),
                              "--step", "1", "--out_lr", out_lr, "--out_hr", out_hr]) == 0
    assert "Gaussian PSF (MTF 0.3 at the LR Nyquist frequency, sigma 1.976 pixels" in caplog.text
    assert f"kept {17 * 21} patches; skipped 0 outside an image, 0 with nodata" in caplog.text
    lr_p, hr_p = read_patches(out_lr, S), read_patches(out_hr, 4 * S)
    centers = read_centers(str(tmp_path / "lr_centers.gpkg"))
    for c, lr_patch, hr_patch in zip(centers, lr_p, hr_p, strict=True):
        col, row = c["lr_col"], c["lr_row"]
        np.testing.assert_array_equal(lr_patch, lr_full[row:row + S, col:col + S])
        np.testing.assert_array_equal(hr_patch, arr[4 * row:4 * row + 4 * S, 4 * col:4 * col + 4 * S])
    # --mtf changes the blur; --encoding converts as usual
    assert extract("--self_supervised", "--lr", image["path"], "--mtf", "0.15", "--lr_patchsize", str(S),
                   "--step", "1", "--encoding", "float32", "--out_lr", out_lr, "--out_hr", out_hr) == 0
    lr_soft = read_patches(out_lr, S)
    assert lr_soft.dtype == np.float32 and lr_soft.shape == lr_p.shape
    assert lr_soft.std(axis=(1, 2)).mean() < lr_p.std(axis=(1, 2)).mean()  # blurrier


def test_points_go_to_the_lr_grid(image, tmp_path):
    cols, rows = np.array([5, 12, 20]), np.array([7, 10, 15])  # LR (40 m) pixels
    xy = np.column_stack([X0 + (cols + 0.5) * 4 * PX, Y0 - (rows + 0.5) * 4 * PX])
    vec = write_points(str(tmp_path / "pts.gpkg"), np.vstack([xy, [(X0 + 23.5 * 4 * PX, Y0)]]))
    out_lr, out_hr = str(tmp_path / "lr.tif"), str(tmp_path / "hr.tif")
    assert extract("--self_supervised", "--lr", image["path"], "--degradation", "mean", "--lr_patchsize",
                   str(S), "--vec", vec, "--field", "label", "--out_lr", out_lr, "--out_hr", out_hr) == 0
    centers = read_centers(str(tmp_path / "lr_centers.gpkg"))
    assert [c["lr_col"] for c in centers] == (cols - S // 2).tolist()  # the last point's window is outside
    assert [c["lr_row"] for c in centers] == (rows - S // 2).tolist()
    assert [c["label"] for c in centers] == [100, 101, 102]
    hr_p = read_patches(out_hr, 4 * S)
    np.testing.assert_array_equal(hr_p[1], image["arr"][4 * 8:4 * 12, 4 * 10:4 * 14])


def test_nodata_in_the_psf_support_skips_the_patch(tmp_path, caplog):
    arr = np.full((4 * 16, 4 * 16, 1), 100, np.int16)
    arr[4 * 8 + 1, 4 * 8 + 2] = -9999  # in LR pixel (8, 8)
    path = write_raster(str(tmp_path / "nd.tif"), arr, origin=(X0, Y0), pixel_size=PX, nodata=-9999)
    out_lr, out_hr = str(tmp_path / "lr.tif"), str(tmp_path / "hr.tif")
    args = ["--self_supervised", "--lr", path, "--lr_patchsize", str(S), "--step", "1",
            "--out_lr", out_lr, "--out_hr", out_hr]
    with caplog.at_level(logging.INFO):
        assert run_cli(main, args) == 0
    m = Degradation.gaussian(0.3).margin  # 7: the PSF of LR pixels 6 .. 10 reaches image row 33
    r = 4 * 8 + 1
    hit = [i for i in range(16) if 4 * i - m <= r < 4 * i + 4 + m]
    assert hit == [6, 7, 8, 9, 10]
    windows = [w for w in range(13) if set(range(w, w + S)) & set(hit)]  # windows holding such a pixel
    assert f"skipped 0 outside an image, {len(windows) ** 2} with nodata" in caplog.text
    centers = read_centers(str(tmp_path / "lr_centers.gpkg"))
    assert len(centers) == 13 * 13 - len(windows) ** 2
    assert all(c["lr_col"] not in windows or c["lr_row"] not in windows for c in centers)
    assert (read_patches(out_lr, S) == 100).all()
    # the block mean only looks at the LR pixel's own 4x4 block
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run_cli(main, [*args, "--degradation", "mean"]) == 0
    assert f"skipped 0 outside an image, {S * S} with nodata" in caplog.text
    # --lr_nodata none: -9999 is a value like any other
    assert extract(*args, "--degradation", "mean", "--lr_nodata", "none") == 0
    assert len(read_patches(out_lr, S)) == 13 * 13


def test_all_nodata_explains_the_nodata_value(tmp_path, capsys):
    arr = np.full((4 * 8, 4 * 8, 1), 100, np.int16)
    arr[::9, ::9] = 0
    path = write_raster(str(tmp_path / "nd.tif"), arr, origin=(X0, Y0), pixel_size=PX, nodata=0)
    assert extract("--self_supervised", "--lr", path, "--lr_patchsize", str(S), "--step", str(S),
                   "--out_lr", str(tmp_path / "lr.tif"), "--out_hr", str(tmp_path / "hr.tif")) == 2
    line = one_error_line(capsys)
    assert "no patch to extract: 0 outside an image, 4 with nodata" in line
    assert f"4 patches held pixels equal to {path}'s nodata value 0" in line and "--lr_nodata none" in line
    assert "--hr_nodata" not in line


@pytest.mark.parametrize("extra, expected", [
    (["--hr", "{image}"], "--self_supervised makes the HR side from --lr itself: remove --hr"),
    (["--resample_hr", "--hr_nodata", "0"], "remove --hr_nodata, --resample_hr"),
    (["--resampling", "nearest"], "remove --resampling"),
    (["--mtf", "0"], "--mtf must be in (0, 1) (got 0)"),
    (["--mtf", "1"], "--mtf must be in (0, 1) (got 1)"),
    (["--mtf", "-0.3"], "--mtf must be in (0, 1) (got -0.3)"),
    (["--mtf", "nan"], "--mtf must be in (0, 1) (got nan)"),
    (["--mtf", "0.95"], "--mtf 0.95 is too high"),
    (["--mtf", "0.001"], "--mtf 0.001 is too low"),
    (["--mtf", "abc"], "--mtf: invalid float value: 'abc'"),
    (["--degradation", "mean", "--mtf", "0.3"], "--mtf goes with --degradation gaussian, not mean"),
    (["--degradation", "median"], "--degradation: invalid choice: 'median'"),
])
def test_refusals(extra, expected, image, tmp_path, capsys):
    out = ["--out_lr", str(tmp_path / "lr.tif"), "--out_hr", str(tmp_path / "hr.tif")]
    extra = [e.replace("{image}", image["path"]) for e in extra]
    assert extract("--self_supervised", "--lr", image["path"], "--lr_patchsize", str(S), "--step", "4",
                   *extra, *out) == 2
    assert expected in one_error_line(capsys)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("extra, expected", [
    ([], "--hr is required (or --self_supervised to make the pairs from --lr alone)"),
    (["--hr", "{image}", "--mtf", "0.3"], "--mtf goes with --self_supervised"),
    (["--hr", "{image}", "--degradation", "mean", "--mtf", "0.3"], "--degradation and --mtf go with"),
])
def test_refusals_without_self_supervised(extra, expected, image, tmp_path, capsys):
    extra = [e.replace("{image}", image["path"]) for e in extra]
    assert extract("--lr", image["path"], "--lr_patchsize", str(S), "--step", "4", *extra,
                   "--out_lr", str(tmp_path / "lr.tif"), "--out_hr", str(tmp_path / "hr.tif")) == 2
    assert expected in one_error_line(capsys)


def test_too_small_image(tmp_path, capsys):
    path = write_raster(str(tmp_path / "tiny.tif"), np.ones((3, 40, 1), np.uint8), origin=(X0, Y0))
    assert extract("--self_supervised", "--lr", path, "--lr_patchsize", "1", "--step", "1",
                   "--out_lr", str(tmp_path / "lr.tif"), "--out_hr", str(tmp_path / "hr.tif")) == 2
    assert "40 x 3 pixels, too small to be decimated 4 times" in one_error_line(capsys)


def test_help_documents_self_supervised(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for word in ("--self_supervised", "--degradation", "--mtf", "Wald protocol", "mirrored", "rounded",
                 "Nyquist"):
        assert word in text
