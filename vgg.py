"""VGG19 perceptual loss (docs/DESIGN.md §6) from a `vgg19.npy` weights file.

The file is a pickled dict: layer name -> [kernel (3, 3, c_in, c_out), bias (c_out,)]. Only the
layers that the chosen feature set needs are loaded and computed.
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import tensorflow as tf

import constants
from errors import SR4RSError
from logs import get_logger

logger = get_logger("vgg")

VGG_MEAN_RGB = (123.68, 116.779, 103.939)
# Conv layers of VGG19 by block, with their output channels.
BLOCKS = (
    (("conv1_1", 64), ("conv1_2", 64)),
    (("conv2_1", 128), ("conv2_2", 128)),
    (("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256), ("conv3_4", 256)),
    (("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512), ("conv4_4", 512)),
    (("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512), ("conv5_4", 512)),
)


def layer_shapes() -> dict[str, tuple[int, int, int, int]]:
    """Kernel shape of every VGG19 conv layer."""
    shapes, c_in = {}, 3
    for block in BLOCKS:
        for name, c_out in block:
            shapes[name] = (3, 3, c_in, c_out)
            c_in = c_out
    return shapes


def _needed_layers(mode: str) -> list[str]:
    """Conv layers to compute, in order, up to the deepest feature of `mode`."""
    order = [name for block in BLOCKS for name, _ in block]
    deepest = 0
    for feature in constants.VGG_FEATURES[mode]:
        if feature.startswith("pool"):
            block = BLOCKS[int(feature[4:]) - 1]
            index = order.index(block[-1][0])
        else:
            index = order.index(feature.removesuffix("lin"))
        deepest = max(deepest, index)
    return order[:deepest + 1]


def load_vgg19_weights(path: str, mode: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read the conv layers that feature set `mode` needs from a vgg19.npy file.

    Args:
        path: the vgg19.npy file (a pickled dict, as distributed with tensorflow-vgg).
        mode: a key of constants.VGG_FEATURES.

    Raises:
        SR4RSError: missing file, not a pickled dict, or a missing or misshaped layer.
    """
    if mode not in constants.VGG_FEATURES:
        raise SR4RSError(f"unknown VGG features '{mode}' (choose one of {', '.join(constants.VGG_FEATURES)})")
    if not os.path.isfile(path):
        raise SR4RSError(f"{path}: no such VGG weights file")
    try:
        content = np.load(path, allow_pickle=True, encoding="latin1")
        data = content.item() if isinstance(content, np.ndarray) and content.dtype == object else content
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as err:
        raise SR4RSError(f"{path}: not a vgg19.npy file ({err})") from None
    if not isinstance(data, dict):
        raise SR4RSError(f"{path}: not a vgg19.npy file (expected a pickled dict of layers)")
    shapes = layer_shapes()
    weights = {}
    for name in _needed_layers(mode):
        if name not in data:
            raise SR4RSError(f"{path}: layer {name} is missing (needed by VGG features '{mode}')")
        try:
            kernel, bias = (np.asarray(a, dtype=np.float32) for a in data[name][:2])
        except (TypeError, ValueError, IndexError):
            raise SR4RSError(f"{path}: layer {name} is not [kernel, bias]") from None
        if kernel.shape != shapes[name] or bias.shape != shapes[name][-1:]:
            raise SR4RSError(f"{path}: layer {name} has kernel {kernel.shape} and bias {bias.shape}, "
                             f"expected {shapes[name]} and {shapes[name][-1:]}")
        weights[name] = (kernel, bias)
    logger.info("VGG19 weights loaded from %s (%s layers for features %s)", path, len(weights), mode)
    return weights


class VGG19Features(tf.Module):
    """VGG19 feature maps of an RGB image in [0, 1] (clipped), for one feature set.

    Args:
        weights: conv layers from `load_vgg19_weights`.
        mode: the feature set (a key of constants.VGG_FEATURES).
    """

    def __init__(self, weights: dict[str, tuple[np.ndarray, np.ndarray]], mode: str):
        super().__init__(name="vgg19")
        self.mode = mode
        self.layers = [(name, tf.constant(k), tf.constant(b)) for name, (k, b) in weights.items()]

    def __call__(self, rgb: tf.Tensor) -> list[tf.Tensor]:
        x = 255.0 * tf.clip_by_value(tf.cast(rgb, tf.float32), 0.0, 1.0)
        x = tf.concat([x[..., c:c + 1] - VGG_MEAN_RGB[c] for c in (2, 1, 0)], axis=-1)  # RGB -> BGR
        maps = {}
        block_ends = {block[-1][0]: f"pool{i + 1}" for i, block in enumerate(BLOCKS)}
        for name, kernel, bias in self.layers:
            linear = tf.nn.bias_add(tf.nn.conv2d(x, kernel, strides=1, padding="SAME"), bias)
            x = tf.nn.relu(linear)
            maps[f"{name}lin"], maps[name] = linear, x
            if name in block_ends:
                x = tf.nn.max_pool2d(x, ksize=2, strides=2, padding="SAME")
                maps[block_ends[name]] = x
        return [maps[feature] for feature in constants.VGG_FEATURES[self.mode]]


def perceptual_loss(features: VGG19Features, reference: tf.Tensor, generated: tf.Tensor) -> tf.Tensor:
    """Sum over the feature maps of the mean squared difference, on the first 3 bands (RGB)."""
    ref_maps = features(reference[..., :3])
    gen_maps = features(generated[..., :3])
    return tf.add_n([tf.reduce_mean(tf.square(r - g)) for r, g in zip(ref_maps, gen_maps, strict=True)])
