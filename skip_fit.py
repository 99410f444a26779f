"""Least-squares fit of the generator's linear skips (`--residual linear`) on the training patches.

Each skip maps a (2r+1)x(2r+1) LR window to the factor^2 sub-pixel values of one output scale: a linear
regression, solved in closed form (ridge-regularised normal equations accumulated over all patches).
This is the best linear super-resolution of the training data; the network then learns what is left.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

import constants
from logs import get_logger
from losses import real_pyramid
from network import Generator
from scaling import Scaling

logger = get_logger("skip_fit")

RIDGE = 1e-6  # relative to the mean diagonal of X^T X
# Fewer LR windows than this many per unknown would over-fit: the skips then stay bicubic.
MIN_WINDOWS_PER_UNKNOWN = 10


def _windows(lr: np.ndarray, radius: int) -> np.ndarray:
    """Every (2r+1)^2 window fully inside the patches, flattened as conv kernel taps [dy, dx, c] + 1."""
    n, size, _, nbands = lr.shape
    inner = size - 2 * radius
    taps = [lr[:, dy:dy + inner, dx:dx + inner, :] for dy in range(2 * radius + 1)
            for dx in range(2 * radius + 1)]
    x = np.stack(taps, axis=3).reshape(n * inner * inner, -1)
    return np.hstack([x, np.ones((x.shape[0], 1), x.dtype)])


def _targets(image: np.ndarray, factor: int, radius: int, lr_size: int) -> np.ndarray:
    """Sub-pixel values [phase_y, phase_x, c] of the output cells matching _windows' centres."""
    n, _, _, nbands = image.shape
    inner = lr_size - 2 * radius
    cells = image[:, factor * radius:factor * (radius + inner), factor * radius:factor * (radius + inner)]
    cells = cells.reshape(n, inner, factor, inner, factor, nbands).transpose(0, 1, 3, 2, 4, 5)
    return cells.reshape(n * inner * inner, factor * factor * nbands)


def fit_linear_skips(generator: Generator, batches: tf.data.Dataset, scaling: Scaling) -> None:
    """Set every LinearSkip of `generator` to the least-squares fit on the patches.

    Args:
        generator: a Generator built with residual="linear".
        batches: one pass over the training patches ({"lr": [B, s, s, C], "hr": [B, 4s, 4s, C]}).
        scaling: raw values -> network values.
    """
    radius = generator.skips[0].radius
    unknowns = (2 * radius + 1) ** 2 * generator.nchannels + 1
    xtx, xty, windows = 0.0, {f: 0.0 for f in constants.FACTORS}, 0
    for batch in batches:
        lr = scaling.lr(batch[constants.LR_KEY]).numpy().astype(np.float64)
        if lr.shape[1] < 2 * radius + 1:
            break  # no whole window in these patches
        x = _windows(lr, radius)
        windows += len(x)
        xtx = xtx + x.T @ x
        real = real_pyramid(scaling.hr(batch[constants.HR_KEY]))
        for f in constants.FACTORS:
            y = _targets(real[f].numpy().astype(np.float64), constants.SCALE // f, radius, lr.shape[1])
            xty[f] = xty[f] + x.T @ y
    if windows < MIN_WINDOWS_PER_UNKNOWN * unknowns:
        logger.warning("Only %s LR windows of %sx%s pixels in the patches for %s unknowns: the linear skips "
                       "keep their bicubic start (use more or larger patches)", windows, 2 * radius + 1,
                       2 * radius + 1, unknowns)
        return
    regularised = xtx + RIDGE * np.trace(xtx) / len(xtx) * np.eye(len(xtx))
    for f, skip in zip(constants.FACTORS, generator.skips, strict=True):
        solution = np.linalg.solve(regularised, xty[f])
        skip.kernel.assign(solution[:-1].reshape(skip.kernel.shape).astype(np.float32))
        skip.bias.assign(solution[-1].astype(np.float32))
    logger.info("Linear skips fitted by least squares on %s LR windows of the training patches", windows)
