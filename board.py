"""TensorBoard logging of a training run: scalars, and previews of the generator on a small LR image
(read and, when too large for the network's depth, cropped around its centre)."""
from __future__ import annotations

import math
import os

import numpy as np
import tensorflow as tf

import constants
from errors import SR4RSError
from logs import get_logger
from network import nice_preview
from raster import open_raster, read_array

logger = get_logger("board")

# A preview costs about 16 * (4 * depth) * 4 bytes per LR pixel and live feature map: keep one map
# under this budget (previews larger than that are cropped around their centre).
PREVIEW_MAP_BUDGET = 256 * 2 ** 20
BICUBIC_PREVIEW = "preview_bicubic"


def read_preview(path: str, nbands: int, depth: int) -> np.ndarray:
    """The preview LR image as [1, H, W, C] float32, cropped around its centre when too large.

    Args:
        path: the preview image.
        nbands: band count of the patches (the preview must have as many).
        depth: base depth of the network (the largest preview it can afford).
    """
    ds = open_raster(path)
    if ds.RasterCount != nbands:
        raise SR4RSError(f"{path}: the preview has {ds.RasterCount} bands, the patches have {nbands}")
    max_side = max(16, int(math.sqrt(PREVIEW_MAP_BUDGET / (16 * 4 * depth * 4))))
    width, height = ds.RasterXSize, ds.RasterYSize
    if width > max_side or height > max_side:
        logger.warning("Preview %s (%sx%s) is too large for depth %s: using its central %sx%s pixels",
                       path, width, height, depth, min(width, max_side), min(height, max_side))
    cols, rows = min(width, max_side), min(height, max_side)
    image = read_array(ds, (width - cols) // 2, (height - rows) // 2, cols, rows)
    return image[np.newaxis].astype(np.float32)


class TensorBoard:
    """Scalars and previews of one run in logdir/<run name>, or nothing without a logdir.

    Args:
        logdir: the TensorBoard directory, or None.
        name: the run name.
    """

    def __init__(self, logdir: str | None, name: str):
        self.directory = os.path.join(logdir, name) if logdir else None
        self.writer = tf.summary.create_file_writer(self.directory) if self.directory else None

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Log scalars by tag."""
        if self.writer is not None:
            with self.writer.as_default(step=step):
                for key, value in values.items():
                    tf.summary.scalar(key, value)

    def images(self, images: dict[str, tf.Tensor], step: int) -> None:
        """Log [1, H, W, C] images by tag (first 3 bands, stretched by `network.nice_preview`)."""
        if self.writer is not None:
            with self.writer.as_default(step=step):
                for key, image in images.items():
                    tf.summary.image(key, nice_preview(image))
            self.writer.flush()

    def picture(self, tag: str, rgb: np.ndarray, step: int) -> None:
        """Log an 8-bit RGB image [1, H, W, 3] as it is (no stretch)."""
        if self.writer is not None:
            with self.writer.as_default(step=step):
                tf.summary.image(tag, rgb)
            self.writer.flush()

    def bicubic_preview(self, preview: np.ndarray, step: int) -> None:
        """Log the bicubic upsampling of the preview (once, to compare with the generator's)."""
        size = [constants.SCALE * preview.shape[1], constants.SCALE * preview.shape[2]]
        self.images({BICUBIC_PREVIEW: tf.image.resize(preview, size, method="bicubic")}, step)

    def generated_preview(self, generated: dict[int, tf.Tensor], step: int) -> None:
        """Log the generator's outputs on the preview, one image per factor."""
        self.images({f"{constants.PREVIEW_PREFIX}{f}": generated[f] for f in constants.FACTORS}, step)

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()
