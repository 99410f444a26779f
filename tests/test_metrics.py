"""metrics.py: hand-computed values, a brute-force SSIM, masks, and stacks of patches [N, H, W, C]
against their patches taken one by one."""
from __future__ import annotations

import math

import numpy as np
import pytest

import metrics


def textured(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Smooth variations + edges + noise, values in the hundreds."""
    *_, rows, cols, bands = shape
    y, x = np.mgrid[0:rows, 0:cols].astype(float)
    base = 300 + 80 * np.sin(x / 3.0 + rng.uniform(0, 6)) * np.cos(y / 4.0) + 150 * ((x + 2 * y) % 11 < 5)
    gains = rng.uniform(0.6, 1.4, (*shape[:-3], 1, 1, bands))  # per patch and band
    return base[..., np.newaxis] * gains + rng.normal(0, 10, shape)


def brute_force_ssim_map(x: np.ndarray, y: np.ndarray, data_range: float, mask: np.ndarray) -> list[float]:
    """SSIM of each valid window centre of a 2-D image, by explicit loops over 11x11 windows with 2-D
    Gaussian weights (sigma 1.5), written from the paper's definition; windows use only their valid
    pixels."""
    t = np.arange(11) - 5.0
    g = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.5 ** 2))
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for r in range(5, x.shape[0] - 5):
        for c in range(5, x.shape[1] - 5):
            if not mask[r, c]:
                continue
            w = g * mask[r - 5:r + 6, c - 5:c + 6]
            w = w / w.sum()
            px, py = x[r - 5:r + 6, c - 5:c + 6], y[r - 5:r + 6, c - 5:c + 6]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cov = (w * (px - mx) * (py - my)).sum()
            values.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    return values


@pytest.fixture
def stack() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3 patches 17 x 19, 2 bands: reference, a distorted copy, and a mask with a few holes."""
    rng = np.random.default_rng(7)
    reference = textured(rng, (3, 17, 19, 2))
    image = 0.8 * reference + rng.normal(0, 20, reference.shape) + 30
    mask = rng.random(reference.shape[:3]) > 0.15
    return image, reference, mask


# --- images: hand-computed values ---------------------------------------------------------------

def test_rmse_and_psnr_of_a_constant_offset():
    ref = np.arange(2 * 5 * 4, dtype=float).reshape(5, 4, 2)
    image = ref + np.array([3.0, 4.0])
    np.testing.assert_allclose(metrics.rmse_per_band(image, ref), [3.0, 4.0])
    # MSE over both bands = (9 + 16) / 2 = 12.5; PSNR = 10 log10(100^2 / 12.5) = 29.0309 dB.
    assert metrics.mse(image, ref) == pytest.approx(12.5)
    assert metrics.rmse(image, ref) == pytest.approx(math.sqrt(12.5))
    assert metrics.psnr(image, ref, 100.0) == pytest.approx(29.030899869919436, abs=1e-12)
    assert metrics.psnr(ref, ref, 100.0) == math.inf


def test_metrics_respect_the_mask():
    ref = np.zeros((2, 2, 1))
    image = np.array([[[1.0], [1.0]], [[1.0], [1000.0]]])
    mask = np.array([[True, True], [True, False]])
    assert metrics.rmse_per_band(image, ref, mask)[0] == pytest.approx(1.0)
    assert metrics.psnr(image, ref, 10.0, mask) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="no valid pixel"):
        metrics.rmse_per_band(image, ref, np.zeros((2, 2), dtype=bool))


def test_sam_known_angles():
    ref = np.array([[[1.0, 0.0], [1.0, 0.0], [0.0, 3.0]]])
    image = np.array([[[1.0, 1.0], [2.0, 0.0], [5.0, 0.0]]])  # 45, 0 (scaled), 90 degrees
    assert metrics.sam(image, ref) == pytest.approx(45.0)
    assert metrics.sam(image, ref, np.array([[True, True, False]])) == pytest.approx(22.5)
    with pytest.raises(ValueError):
        metrics.sam(image[:, :, :1], ref[:, :, :1])


def test_ssim_of_identical_images_is_one():
    image = textured(np.random.default_rng(1), (32, 32, 3))
    np.testing.assert_allclose(metrics.ssim_per_band(image, image, 5000.0), 1.0, atol=1e-12)


def test_ssim_of_two_constant_images():
    a, b, data_range = 100.0, 140.0, 255.0
    c1 = (0.01 * data_range) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # the structure term is C2 / C2 = 1
    value = metrics.ssim(np.full((16, 16), a), np.full((16, 16), b), data_range)
    assert value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("chunk", [1 << 19, 3 * 23])  # one strip, or strips of 3 map rows
def test_ssim_matches_a_brute_force_implementation(monkeypatch, chunk):
    monkeypatch.setattr(metrics, "SSIM_CHUNK_PIXELS", chunk)
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 255, (20, 23))
    y = 0.7 * x + rng.normal(0, 25, x.shape) + 20
    full = np.ones(x.shape, dtype=bool)
    expected = float(np.mean(brute_force_ssim_map(x, y, 255.0, full)))
    assert metrics.ssim(x, y, 255.0) == pytest.approx(expected, abs=1e-10)
    assert 0.3 < expected < 0.95
    mask = rng.random(x.shape) > 0.2
    x_bad = np.where(mask, x, np.nan)  # invalid pixels hold garbage: it must not leak in
    expected = float(np.mean(brute_force_ssim_map(x, y, 255.0, mask)))
    assert metrics.ssim(x_bad, y, 255.0, mask) == pytest.approx(expected, abs=1e-10)


def test_shapes_are_checked():
    image = np.zeros((12, 12, 2))
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.psnr(image, np.zeros((12, 12, 3)), 1.0)
    with pytest.raises(ValueError, match="mask shape"):
        metrics.psnr(image, image, 1.0, np.ones((12, 11), dtype=bool))
    with pytest.raises(ValueError, match="mask shape"):  # a stack needs a mask per patch
        metrics.psnr(image[np.newaxis], image[np.newaxis], 1.0, np.ones((12, 12), dtype=bool))
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(image[:10], image[:10], 1.0)


# --- stacks of patches [N, H, W, C] -------------------------------------------------------------

def test_identical_stacks_have_infinite_psnr_and_ssim_one(stack):
    _, reference, mask = stack
    assert metrics.psnr(reference, reference, 500.0) == math.inf
    assert metrics.psnr(reference, reference, 500.0, mask) == math.inf
    np.testing.assert_allclose(metrics.ssim_per_band(reference, reference, 500.0), 1.0, atol=1e-12)
    assert metrics.ssim(reference, reference, 500.0, mask) == pytest.approx(1.0, abs=1e-12)
    assert metrics.sam(reference, reference) == pytest.approx(0.0, abs=1e-5)


def test_a_stack_pools_the_squared_errors_of_its_patches(stack):
    """PSNR, RMSE and SAM of a stack = those of its patches put side by side in one image."""
    image, reference, mask = stack
    side_by_side = [np.concatenate(list(a), axis=1) for a in (image, reference, mask)]
    one_image, one_reference, one_mask = side_by_side
    assert metrics.psnr(image, reference, 500.0) == pytest.approx(
        metrics.psnr(one_image, one_reference, 500.0), abs=1e-12)
    assert metrics.psnr(image, reference, 500.0, mask) == pytest.approx(
        metrics.psnr(one_image, one_reference, 500.0, one_mask), abs=1e-12)
    np.testing.assert_allclose(metrics.rmse_per_band(image, reference, mask),
                               metrics.rmse_per_band(*side_by_side), rtol=1e-12)
    assert metrics.sam(image, reference, mask) == pytest.approx(metrics.sam(*side_by_side), abs=1e-12)
    # ... and not the mean of the patches' PSNRs
    mean_of_psnrs = np.mean([metrics.psnr(i, r, 500.0) for i, r in zip(image, reference, strict=True)])
    assert abs(metrics.psnr(image, reference, 500.0) - mean_of_psnrs) > 1e-6


@pytest.mark.parametrize("chunk", [1 << 19, 17 * 19, 50])  # all patches at once, one by one, strips
def test_ssim_of_a_stack_is_the_mean_of_its_patches_ssim_maps(monkeypatch, stack, chunk):
    monkeypatch.setattr(metrics, "SSIM_CHUNK_PIXELS", chunk)
    image, reference, mask = stack
    for m in (np.ones(mask.shape, dtype=bool), mask):
        per_band = []
        for b in range(image.shape[3]):
            values = [v for n in range(len(image))
                      for v in brute_force_ssim_map(image[n, :, :, b], reference[n, :, :, b], 500.0, m[n])]
            per_band.append(np.mean(values))
        np.testing.assert_allclose(metrics.ssim_per_band(image, reference, 500.0, m), per_band, atol=1e-10)
        assert metrics.ssim(image, reference, 500.0, m) == pytest.approx(np.mean(per_band), abs=1e-10)
    # SSIM windows never straddle two patches: side by side in one image, the result differs
    side_by_side = [np.concatenate(list(a), axis=1) for a in (image, reference)]
    assert abs(metrics.ssim(image, reference, 500.0) - metrics.ssim(*side_by_side, 500.0)) > 1e-4


def test_masks_exclude_the_pixels_of_a_stack(stack):
    image, reference, mask = stack
    for fill in (np.nan, 1e9):  # whatever the excluded pixels hold
        garbage = np.where(mask[..., np.newaxis], image, fill)
        assert metrics.psnr(garbage, reference, 500.0, mask) == pytest.approx(
            metrics.psnr(image, reference, 500.0, mask), abs=1e-12)
        assert metrics.ssim(garbage, reference, 500.0, mask) == pytest.approx(
            metrics.ssim(image, reference, 500.0, mask), abs=1e-12)
        assert metrics.sam(garbage, reference, mask) == pytest.approx(metrics.sam(image, reference, mask))
    # the mask changes the result: the excluded pixels did count without it
    assert metrics.psnr(image, reference, 500.0, mask) != pytest.approx(metrics.psnr(image, reference, 500.0))
    # a patch without any valid pixel is simply left out
    mask[1] = False
    kept = [0, 2]
    assert metrics.ssim(image, reference, 500.0, mask) == pytest.approx(
        metrics.ssim(image[kept], reference[kept], 500.0, mask[kept]), abs=1e-12)
    assert metrics.psnr(image, reference, 500.0, mask) == pytest.approx(
        metrics.psnr(image[kept], reference[kept], 500.0, mask[kept]), abs=1e-12)


# --- block mean ---------------------------------------------------------------------------------

def test_block_mean_of_an_image_and_of_a_stack(stack):
    _, reference, mask = stack
    one = metrics.block_mean(reference[0])
    assert one.shape == (4, 4, 2)  # 17 x 19 -> whole 4 x 4 blocks only
    assert one[1, 2, 1] == pytest.approx(reference[0, 4:8, 8:12, 1].mean())
    stacked = metrics.block_mean(reference)
    assert stacked.shape == (3, 4, 4, 2)
    for n in range(3):
        np.testing.assert_array_equal(stacked[n], metrics.block_mean(reference[n]))
        np.testing.assert_array_equal(metrics.block_all(mask)[n], metrics.block_all(mask[n]))
    assert metrics.block_all(mask[0])[0, 0] == mask[0, :4, :4].all()
    assert metrics.block_mean(reference[0, :, :, 0]).shape == (4, 4, 1)
