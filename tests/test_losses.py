"""Losses of docs/DESIGN.md §5 against values computed by hand."""
import numpy as np
import pytest
import tensorflow as tf

import losses


def pyramid(value, size=8, batch=2, bands=3):
    return {f: tf.fill([batch, size // f, size // f, bands], float(value)) for f in (1, 2, 4)}


def test_real_pyramid_downscales():
    hr = np.arange(2 * 8 * 8 * 1, dtype=np.int16).reshape(2, 8, 8, 1)
    real = losses.real_pyramid(0.5 * tf.constant(hr, tf.float32))
    assert [tuple(real[f].shape) for f in (1, 2, 4)] == [(2, 8, 8, 1), (2, 4, 4, 1), (2, 2, 2, 1)]
    np.testing.assert_allclose(real[1].numpy(), 0.5 * hr)
    np.testing.assert_allclose(real[4].numpy()[0, 0, 0, 0], 0.5 * hr[0, :4, :4, 0].mean())


def test_l1_and_l2_sum_the_three_scales():
    fake, real = pyramid(3.0), pyramid(1.0)
    assert float(losses.l1_loss(fake, real)) == pytest.approx(3 * 2.0)
    assert float(losses.l2_loss(fake, real)) == pytest.approx(3 * 4.0)


def test_lsgan():
    d_real, d_fake = tf.constant([[0.5], [1.0]]), tf.constant([[0.0], [2.0]])
    d_loss, g_loss = losses.lsgan_losses(d_real, d_fake)
    assert float(d_loss) == pytest.approx(((0.25 + 0) + (0 + 4)) / 2)
    assert float(g_loss) == pytest.approx((1 + 1) / 2)


def linear_critic(weights):
    """D(x) = sum over scales and pixels of w_f * x: its input gradient is w_f everywhere."""
    def critic(images):
        return tf.add_n([weights[f] * tf.reduce_sum(images[f], axis=[1, 2, 3]) for f in (1, 2, 4)])[:, None]
    return critic


def test_gradient_penalty_of_a_linear_critic():
    weights = {1: 0.1, 2: 0.5, 4: 2.0}
    real, fake = pyramid(0.0), pyramid(1.0)
    penalty = float(losses.gradient_penalty(linear_critic(weights), real, fake))
    # per sample, the norm of a constant gradient w over n = H*W*C values is |w| sqrt(n)
    norms = {f: weights[f] * np.sqrt((8 // f) ** 2 * 3) for f in (1, 2, 4)}
    assert penalty == pytest.approx(np.mean([(norms[f] - 1) ** 2 for f in (1, 2, 4)]), rel=1e-5)


def test_wgan_gp_losses():
    weights = {1: 0.0, 2: 0.0, 4: 0.0}  # zero gradient: penalty (0 - 1)^2 = 1 per scale
    d_real, d_fake = tf.constant([[1.0], [3.0]]), tf.constant([[0.0], [-2.0]])
    d_loss, g_loss = losses.wgan_gp_losses(linear_critic(weights), pyramid(0.0), pyramid(1.0), d_real, d_fake)
    expected = np.mean([0 - 1, -2 - 3]) + 10 * 1.0 + 0.001 * np.mean([1.0, 9.0])
    assert float(d_loss) == pytest.approx(expected)
    assert float(g_loss) == pytest.approx(1.0)
