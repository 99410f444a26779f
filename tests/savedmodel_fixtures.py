"""Real tiny SavedModels for the sr.py tests, built once per test session (see `cached`)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable

import numpy as np
import pytest
import tensorflow as tf
from helpers import ORIGINAL_CODE, ORIGINAL_SHIM, write_raster

import constants
from export import export_savedmodel
from network import Generator
from scaling import Scaling


def cached(factory: pytest.TempPathFactory, name: str, build: Callable[[str], None]) -> str:
    """The SavedModel `name` of this test session, built by `build(path)` the first time."""
    path = os.path.join(factory.getbasetemp(), "savedmodels", name)
    if not os.path.isdir(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        build(path)
    return path


def nearest_x4(lr: np.ndarray) -> np.ndarray:
    """Nearest-neighbour x4 upsampling of [..., rows, cols, bands]."""
    return np.repeat(np.repeat(lr, constants.SCALE, axis=-3), constants.SCALE, axis=-2)


class _NearestServing(tf.Module):
    """Exact x4 nearest-neighbour model with any band count (float32 `lr_input`)."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.float32,
                                                name=constants.LR_INPUT_NAME)])
    def serve(self, lr_input: tf.Tensor) -> dict[str, tf.Tensor]:
        hr = tf.repeat(tf.repeat(lr_input, constants.SCALE, axis=1), constants.SCALE, axis=2)
        return {constants.output_name(p): hr[:, p:-p, p:-p, :] for p in constants.PADS}


def nearest_model(path: str) -> None:
    """A TF2 SavedModel doing exact x4 nearest-neighbour upsampling, for any band count."""
    model = _NearestServing()
    tf.saved_model.save(model, path, signatures={constants.SIGNATURE_KEY: model.serve})


def nearest_export(path: str, nbands: int, lr_stats: dict[str, list[float]] | None = None) -> None:
    """Exact x4 nearest neighbour through this project's export (sr4rs.json, optional training stats)."""

    def generator(lr: tf.Tensor) -> dict[int, tf.Tensor]:
        return {1: tf.repeat(tf.repeat(lr, constants.SCALE, axis=1), constants.SCALE, axis=2)}

    export_savedmodel(generator, path, nbands, Scaling.scales(nbands, 1.0, 1.0),
                      {"lr_stats": lr_stats} if lr_stats else None)


def generator_model(path: str, nbands: int) -> None:
    """A tiny random generator (depth 4, 1 residual block: receptive-field radius 48 HR pixels)."""
    tf.random.set_seed(nbands)
    export_savedmodel(Generator(nbands, nresblocks=1, dim=4), path, nbands,
                      Scaling.scales(nbands, 1e-3, 1e-3))


TF1_NEAREST = textwrap.dedent("""
    import sys
    import tensorflow.compat.v1 as tf
    tf.disable_v2_behavior()
    with tf.Graph().as_default(), tf.Session() as sess:
        lr = tf.placeholder(tf.int16, [None, None, None, int(sys.argv[2])], name="lr_input")
        shape = tf.shape(lr)
        hr = tf.image.resize(tf.cast(lr, tf.float32), [4 * shape[1], 4 * shape[2]], method="nearest")
        outputs = {}
        for pad in (32, 64, 128, 256, 512):
            outputs["output_%d:0" % pad] = tf.identity(hr[:, pad:-pad, pad:-pad, :], name="output_%d" % pad)
        tf.saved_model.simple_save(sess, sys.argv[1], inputs={"lr_input:0": lr}, outputs=outputs)
""")


def tf1_nearest_model(path: str, nbands: int = 3) -> None:
    """A TF1 `simple_save` SavedModel like the original's (keys `lr_input:0`, `output_<pad>:0`, int16
    input) doing exact x4 nearest-neighbour upsampling. Built in a subprocess (TF1 graph mode)."""
    subprocess.run([sys.executable, "-c", TF1_NEAREST, path, str(nbands)], check=True, capture_output=True)


def original_model(path: str, nbands: int = 3) -> None:
    """A real SavedModel made by the original SR4RS train.py (depth 4, 1 block, one epoch, int16)."""
    work = path + "_work"
    os.makedirs(work)
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 3000, (32 * 8, 32, nbands)).astype(np.int16)
    lr = hr.reshape(8 * 8, 4, 8, 4, nbands).mean(axis=(1, 3)).astype(np.int16)
    write_raster(os.path.join(work, "lr.tif"), lr)
    write_raster(os.path.join(work, "hr.tif"), hr)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ORIGINAL_SHIM, ORIGINAL_CODE]))
    cmd = [sys.executable, os.path.join(ORIGINAL_CODE, "train.py"), "--lr_patches", "lr.tif",
           "--hr_patches", "hr.tif", "--save_ckpt", "ck/", "--savedmodel", path, "--depth", "4",
           "--nresblocks", "1", "--epochs", "1", "--batchsize", "4", "--vggweight", "0"]
    subprocess.run(cmd, cwd=work, env=env, check=True, capture_output=True)
