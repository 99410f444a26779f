"""The opt-in residual generators (--residual bicubic / linear) and the least-squares skip fit."""
import numpy as np
import pytest
import tensorflow as tf

import constants
import network
from losses import real_pyramid
from scaling import Scaling
from skip_fit import fit_linear_skips

BORDER = 3  # LR pixels near the image border where mirrored padding and bicubic's clamping differ


def interior(x, factor):
    m = BORDER * (constants.SCALE // factor)
    return x.numpy()[:, m:-m, m:-m]


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_the_linear_skip_starts_as_bicubic_times_the_gain(factor):
    skip = network.LinearSkip("gen/skip", 3, factor, gain=2.5)
    lr = tf.random.uniform([2, 17, 19, 3], seed=1)
    expected = 2.5 * network.upsample_bicubic(lr, factor)
    np.testing.assert_allclose(interior(skip(lr), 4 // factor), interior(expected, 4 // factor), atol=1e-5)
    assert skip(lr).shape == expected.shape


@pytest.mark.parametrize("residual", ["bicubic", "linear"])
def test_an_untrained_residual_generator_is_its_skip(residual):
    tf.random.set_seed(0)
    generator = network.Generator(4, nresblocks=1, dim=4, residual=residual, residual_gain=0.5)
    lr = tf.random.uniform([2, 12, 12, 4], seed=2)
    out = generator(lr)
    for factor in constants.FACTORS:
        expected = 0.5 * network.upsample_bicubic(lr, constants.SCALE // factor)
        np.testing.assert_allclose(interior(out[factor], factor), interior(expected, factor), atol=1e-5)


def test_residual_generators_keep_the_original_variables():
    original = {v.name: v.shape for v in network.Generator(3, 1, 4).trainable_variables}
    bicubic = {v.name: v.shape for v in network.Generator(3, 1, 4, residual="bicubic").trainable_variables}
    linear = {v.name: v.shape for v in network.Generator(3, 1, 4, residual="linear").trainable_variables}
    assert bicubic == original
    extra = set(linear) - set(original)
    assert sorted(extra) == sorted(f"gen/skip_{f}x/{k}:0" for f in (1, 2, 4) for k in ("kernel", "bias"))
    assert linear["gen/skip_1x/kernel:0"] == (7, 7, 3, 48)


def test_least_squares_recovers_an_exactly_linear_super_resolution():
    """HR = a fixed sharpening of nearest-neighbour upsampling: the fit must reproduce it exactly."""
    rng = np.random.default_rng(0)
    lr = rng.uniform(0, 1000, (48, 12, 12, 2)).astype(np.float32)
    sharpened = 1.5 * lr - 0.25 * (np.roll(lr, 1, axis=1) + np.roll(lr, -1, axis=1))
    hr = np.repeat(np.repeat(sharpened, 4, axis=1), 4, axis=2)
    batches = tf.data.Dataset.from_tensor_slices({"lr": lr, "hr": hr}).batch(16)
    generator = network.Generator(2, nresblocks=1, dim=4, residual="linear", residual_gain=2.0)
    fit_linear_skips(generator, batches, Scaling.scales(2, 1e-3, 2e-3))
    real = real_pyramid(2e-3 * tf.constant(hr[:4]))
    for factor, skip in zip(constants.FACTORS, generator.skips, strict=True):
        got = skip(tf.constant(1e-3 * lr[:4]))
        # away from the patch borders (np.roll wraps around, the blur of factor 2 pads with zeros)
        np.testing.assert_allclose(interior(got, factor), interior(real[factor], factor), atol=1e-4)


def test_too_few_windows_keep_the_bicubic_start(caplog):
    lr = np.random.default_rng(1).uniform(0, 1, (4, 8, 8, 1)).astype(np.float32)
    hr = np.zeros((4, 32, 32, 1), np.float32)
    batches = tf.data.Dataset.from_tensor_slices({"lr": lr, "hr": hr}).batch(4)
    generator = network.Generator(1, nresblocks=1, dim=4, residual="linear")
    before = [s.kernel.numpy().copy() for s in generator.skips]
    fit_linear_skips(generator, batches, Scaling.scales(1, 1.0, 1.0))
    assert all(np.array_equal(b, s.kernel.numpy()) for b, s in zip(before, generator.skips, strict=True))
    assert "keep their bicubic start" in caplog.text


def test_patches_smaller_than_the_window_keep_the_bicubic_start(caplog):
    lr = np.random.default_rng(2).uniform(0, 1, (64, 5, 5, 1)).astype(np.float32)
    hr = np.zeros((64, 20, 20, 1), np.float32)
    batches = tf.data.Dataset.from_tensor_slices({"lr": lr, "hr": hr}).batch(8)
    generator = network.Generator(1, nresblocks=1, dim=4, residual="linear")
    before = generator.skips[0].kernel.numpy().copy()
    fit_linear_skips(generator, batches, Scaling.scales(1, 1.0, 1.0))
    np.testing.assert_array_equal(before, generator.skips[0].kernel.numpy())
    assert "keep their bicubic start" in caplog.text
