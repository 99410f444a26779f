"""Image quality metrics as pure numpy functions: PSNR, MSE, RMSE, SAM, SSIM and the 4x4 block mean.

Every metric takes an image [rows, cols, bands] (or [rows, cols], one band) or a stack of patches
[N, rows, cols, bands], and an optional boolean mask of the same leading shape ([rows, cols] or
[N, rows, cols]), True where a pixel is valid. On a stack, a metric is computed over all the valid
pixels of all the patches, as if they were one image, except that SSIM windows never cross a patch
border. numpy only (no GDAL, no TensorFlow): `evaluate.py` uses it on whole images, the validation
during training on batches of patches.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

import constants

# SSIM constants (Wang, Bovik, Sheikh, Simoncelli 2004).
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
# Input pixels (patches x rows x cols) whose SSIM map is computed at once: bounds the memory
# (about 20 float64 temporaries of this size) whatever the image or stack size.
SSIM_CHUNK_PIXELS = 1 << 19


def as_stack(image: np.ndarray) -> np.ndarray:
    """A view of an image as a stack [N, rows, cols, bands].

    Args:
        image: [rows, cols] (one band), [rows, cols, bands] (N = 1) or [N, rows, cols, bands].
    """
    image = np.asarray(image)
    if image.ndim == 2:
        return image[np.newaxis, :, :, np.newaxis]
    if image.ndim == 3:
        return image[np.newaxis]
    if image.ndim == 4:
        return image
    raise ValueError(f"expected [rows, cols(, bands)] or [N, rows, cols, bands], got shape {image.shape}")


def _check_pair(image: np.ndarray, reference: np.ndarray,
                mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image, reference and mask as stacks [N, rows, cols, bands] and [N, rows, cols]."""
    stacked = np.ndim(image) == 4
    image, reference = as_stack(image), as_stack(reference)
    if image.shape != reference.shape:
        raise ValueError(f"shapes differ: {image.shape} and {reference.shape}")
    if mask is None:
        return image, reference, np.ones(image.shape[:3], dtype=bool)
    mask = np.asarray(mask)
    expected = image.shape[:3] if stacked else image.shape[1:3]
    if mask.shape != expected:
        raise ValueError(f"mask shape {mask.shape} does not match the images {expected}")
    return image, reference, mask if stacked else mask[np.newaxis]


def rmse_per_band(image: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Root mean square error of each band over the valid pixels.

    Args:
        image: image or stack (see the module docstring).
        reference: same shape.
        mask: True where valid (None: every pixel).
    """
    image, reference, mask = _check_pair(image, reference, mask)
    if not mask.any():
        raise ValueError("no valid pixel")
    result = []
    for b in range(image.shape[3]):  # band by band: no copy of the whole image
        diff = image[..., b][mask].astype(np.float64) - reference[..., b][mask]
        result.append(math.sqrt(float(np.mean(diff * diff))))
    return np.array(result)


def mse(image: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean square error over the valid pixels and every band.

    Args:
        image: image or stack.
        reference: same shape.
        mask: True where valid (None: every pixel).
    """
    return float(np.mean(rmse_per_band(image, reference, mask) ** 2))


def rmse(image: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root mean square error over the valid pixels and every band.

    Args:
        image: image or stack.
        reference: same shape.
        mask: True where valid (None: every pixel).
    """
    return math.sqrt(mse(image, reference, mask))


def psnr_from_mse(mse_value: float, data_range: float) -> float:
    """10 log10(data_range^2 / MSE); +inf when the MSE is 0.

    Args:
        mse_value: a mean square error.
        data_range: the signal range R.
    """
    if mse_value <= 0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / mse_value)


def psnr(image: np.ndarray, reference: np.ndarray, data_range: float,
         mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio (dB) over the valid pixels and every band: 10 log10(R^2 / MSE).

    Args:
        image: image or stack.
        reference: same shape.
        data_range: the signal range R (> 0).
        mask: True where valid (None: every pixel).
    """
    if data_range <= 0:
        raise ValueError("data_range must be > 0")
    return psnr_from_mse(mse(image, reference, mask), data_range)


def sam(image: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean spectral angle (degrees) between the pixels' band vectors, over the valid pixels.

    Pixels where either vector is all zeros (angle undefined) are left out.

    Args:
        image: image or stack, at least 2 bands.
        reference: same shape.
        mask: True where valid (None: every pixel).
    """
    image, reference, mask = _check_pair(image, reference, mask)
    if image.shape[3] < 2:
        raise ValueError("SAM needs at least 2 bands")
    count = int(mask.sum())
    dot, norm_a, norm_b = np.zeros(count), np.zeros(count), np.zeros(count)
    for band in range(image.shape[3]):
        a = image[..., band][mask].astype(np.float64)
        b = reference[..., band][mask].astype(np.float64)
        dot += a * b
        norm_a += a * a
        norm_b += b * b
    norms = np.sqrt(norm_a * norm_b)
    keep = norms > 0
    if not keep.any():
        raise ValueError("no valid pixel with a non-zero spectrum")
    cos = np.clip(dot[keep] / norms[keep], -1.0, 1.0)
    return float(np.degrees(np.mean(np.arccos(cos))))


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian of `size` taps (the 2-D SSIM window is its outer product).

    Args:
        size: number of taps.
        sigma: standard deviation, in taps.
    """
    t = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    w = np.exp(-t * t / (2.0 * sigma * sigma))
    return w / w.sum()


def filter_valid(image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Separable correlation with outer(weights, weights), 'valid' mode (no padding), over the last
    two axes of `image` ([..., rows, cols]: each leading index is filtered on its own).

    Args:
        image: the array to filter.
        weights: the 1-D weights.
    """
    n = len(weights)
    rows, cols = image.shape[-2:]
    tmp = weights[0] * image[..., 0:rows - n + 1, :]
    for k in range(1, n):
        tmp += weights[k] * image[..., k:rows - n + 1 + k, :]
    out = weights[0] * tmp[..., 0:cols - n + 1]
    for k in range(1, n):
        out += weights[k] * tmp[..., k:cols - n + 1 + k]
    return out


def _ssim_chunks(patches: int, rows: int, cols: int) -> Iterator[tuple[slice, slice]]:
    """(patches, SSIM map rows) of each chunk: whole patches while they fit in SSIM_CHUNK_PIXELS,
    else strips of one patch's map rows."""
    map_rows = rows - SSIM_WINDOW + 1
    per_chunk = max(1, SSIM_CHUNK_PIXELS // (rows * cols))
    strip = map_rows if per_chunk > 1 else max(1, SSIM_CHUNK_PIXELS // cols)
    for n0 in range(0, patches, per_chunk):
        for r0 in range(0, map_rows, strip):
            yield slice(n0, min(patches, n0 + per_chunk)), slice(r0, min(map_rows, r0 + strip))


def ssim_per_band(image: np.ndarray, reference: np.ndarray, data_range: float,
                  mask: np.ndarray | None = None) -> np.ndarray:
    """SSIM of each band: Gaussian window 11x11, sigma 1.5, K1 0.01, K2 0.03 (Wang et al. 2004).

    The SSIM map is computed where the window fits inside the image, or inside each patch of a stack
    (as in the authors' code), and averaged over the valid window centres (of every patch). Local
    statistics use only the valid pixels of each window (normalised weights), so nodata never leaks
    into them.

    Args:
        image: image or stack, at least 11 x 11 pixels.
        reference: same shape.
        data_range: the signal range R (> 0).
        mask: True where valid (None: every pixel).
    """
    image, reference, mask = _check_pair(image, reference, mask)
    if data_range <= 0:
        raise ValueError("data_range must be > 0")
    patches, rows, cols = mask.shape
    if rows < SSIM_WINDOW or cols < SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {rows}x{cols}")
    half = SSIM_WINDOW // 2
    centres = mask[:, half:rows - half, half:cols - half]
    if not centres.any():
        raise ValueError("no valid SSIM window centre")
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    bands = image.shape[3]
    # Second moments are taken around each patch's reference mean (no cancellation on large values).
    offsets = np.array([[float(reference[n, :, :, b][mask[n]].mean()) if mask[n].any() else 0.0
                         for b in range(bands)] for n in range(patches)])
    sums = np.zeros(bands)
    for chunk, map_rows in _ssim_chunks(patches, rows, cols):
        chunk_centres = centres[chunk, map_rows]
        if not chunk_centres.any():
            continue
        window = (chunk, slice(map_rows.start, map_rows.stop + 2 * half))
        for b in range(bands):
            ssim_map = _ssim_map(image[window + (slice(None), b)], reference[window + (slice(None), b)],
                                 mask[window], c1, c2, offsets[chunk, b, np.newaxis, np.newaxis])
            sums[b] += ssim_map[chunk_centres].sum()
    return sums / int(centres.sum())


def _ssim_map(x: np.ndarray, y: np.ndarray, mask: np.ndarray, c1: float, c2: float,
              offset: np.ndarray) -> np.ndarray:
    """SSIM maps ('valid' mode) of [patches, rows, cols] arrays; local statistics over the valid pixels
    only, second moments around `offset` ([patches, 1, 1])."""
    w = gaussian_window()
    xc = x.astype(np.float64) - offset
    yc = y.astype(np.float64) - offset
    if mask.all():
        def local_mean(a: np.ndarray) -> np.ndarray:
            return filter_valid(a, w)
    else:
        weight = filter_valid(mask.astype(np.float64), w)
        weight[weight <= 0] = 1.0
        xc = np.where(mask, xc, 0.0)  # not xc * mask: invalid pixels may hold NaN
        yc = np.where(mask, yc, 0.0)

        def local_mean(a: np.ndarray) -> np.ndarray:  # a is already zero where invalid
            return filter_valid(a, w) / weight
    mu_xc, mu_yc = local_mean(xc), local_mean(yc)
    var_x = local_mean(xc * xc) - mu_xc * mu_xc
    var_y = local_mean(yc * yc) - mu_yc * mu_yc
    cov = local_mean(xc * yc) - mu_xc * mu_yc
    mu_x, mu_y = mu_xc + offset, mu_yc + offset
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))


def ssim(image: np.ndarray, reference: np.ndarray, data_range: float,
         mask: np.ndarray | None = None) -> float:
    """Mean SSIM over the bands (see `ssim_per_band`).

    Args:
        image: image or stack, at least 11 x 11 pixels.
        reference: same shape.
        data_range: the signal range R (> 0).
        mask: True where valid (None: every pixel).
    """
    return float(np.mean(ssim_per_band(image, reference, data_range, mask)))


def block_mean(image: np.ndarray, factor: int = constants.SCALE) -> np.ndarray:
    """Degrade an image by the mean of factor x factor blocks (whole blocks only), as float64.

    Args:
        image: [rows, cols], [rows, cols, bands] or [N, rows, cols, bands].
        factor: block size (default: the SR scale, 4).

    Returns:
        [rows // factor, cols // factor, bands] (or [N, ...] for a stack).
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, np.newaxis]
    rows, cols = image.shape[-3] // factor, image.shape[-2] // factor
    blocks = image[..., :rows * factor, :cols * factor, :].astype(np.float64)
    shape = image.shape[:-3] + (rows, factor, cols, factor, image.shape[-1])
    return blocks.reshape(shape).mean(axis=(-4, -2))


def block_all(mask: np.ndarray, factor: int = constants.SCALE) -> np.ndarray:
    """True for blocks whose factor x factor pixels are all True.

    Args:
        mask: [rows, cols] or [N, rows, cols] booleans.
        factor: block size (default: the SR scale, 4).
    """
    rows, cols = mask.shape[-2] // factor, mask.shape[-1] // factor
    blocks = mask[..., :rows * factor, :cols * factor]
    return blocks.reshape(mask.shape[:-2] + (rows, factor, cols, factor)).all(axis=(-3, -1))
