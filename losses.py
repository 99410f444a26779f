"""Training losses of SR4RS (docs/DESIGN.md §5), as plain functions of tensors and networks.

Images are dicts {factor: [N, H, W, C]} over the three scales (1 = HR, 2 = HR/2, 4 = LR size).
"""
from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

import constants
from network import downscale
from vgg import VGG19Features, perceptual_loss

Pyramid = dict[int, tf.Tensor]
GP_WEIGHT = 10.0
EPSILON_DRIFT = 0.001


def real_pyramid(hr: tf.Tensor) -> Pyramid:
    """The real HR image (network values, see scaling.py) at the three scales."""
    hr = tf.cast(hr, tf.float32)
    return {f: downscale(hr, f) for f in constants.FACTORS}


def l1_loss(fake: Pyramid, real: Pyramid) -> tf.Tensor:
    """Sum over scales of the mean absolute difference."""
    return tf.add_n([tf.reduce_mean(tf.abs(fake[f] - real[f])) for f in constants.FACTORS])


def l2_loss(fake: Pyramid, real: Pyramid) -> tf.Tensor:
    """Sum over scales of the mean squared difference."""
    return tf.add_n([tf.reduce_mean(tf.square(fake[f] - real[f])) for f in constants.FACTORS])


def vgg_loss(features: VGG19Features, fake: Pyramid, real: Pyramid) -> tf.Tensor:
    """Sum over scales of the VGG19 perceptual loss on the first 3 bands."""
    return tf.add_n([perceptual_loss(features, real[f], fake[f]) for f in constants.FACTORS])


def lsgan_losses(d_real: tf.Tensor, d_fake: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Least-squares GAN: (discriminator loss, generator adversarial loss)."""
    d_loss = tf.reduce_mean(tf.square(d_real - 1.0) + tf.square(d_fake))
    return d_loss, tf.reduce_mean(tf.square(d_fake - 1.0))


Critic = Callable[[Pyramid], tf.Tensor]


def gradient_penalty(discriminator: Critic, real: Pyramid, fake: Pyramid) -> tf.Tensor:
    """WGAN-GP penalty: one alpha per sample shared by the scales; per scale, mean((|grad| - 1)^2)
    of sum(D(interpolates)) with respect to that scale's interpolates; mean over scales."""
    batch = tf.shape(real[1])[0]
    alpha = tf.random.uniform([batch, 1, 1, 1], 0.0, 1.0)
    interpolates = {f: real[f] + alpha * (fake[f] - real[f]) for f in constants.FACTORS}
    with tf.GradientTape() as tape:
        tape.watch(interpolates)
        score = tf.reduce_sum(discriminator(interpolates))
    grads = tape.gradient(score, interpolates)
    penalties = [tf.reduce_mean(tf.square(tf.sqrt(tf.reduce_sum(tf.square(grads[f]), axis=[1, 2, 3])) - 1.0))
                 for f in constants.FACTORS]
    return tf.reduce_mean(tf.stack(penalties))


def wgan_gp_losses(discriminator: Critic, real: Pyramid, fake: Pyramid,
                   d_real: tf.Tensor, d_fake: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Wasserstein GAN with gradient penalty and epsilon drift: (discriminator loss, generator loss)."""
    penalty = gradient_penalty(discriminator, real, fake)
    d_loss = tf.reduce_mean(d_fake - d_real) + GP_WEIGHT * penalty + EPSILON_DRIFT * tf.reduce_mean(
        tf.square(d_real))
    return d_loss, -tf.reduce_mean(d_fake)
