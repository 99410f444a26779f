"""The SR4RS trainer: both networks, their Adam optimisers, and the train steps (each one
`tf.function`), running on a `tf.distribute` strategy (MirroredStrategy on several GPUs).

Each GAN step computes one forward pass, then updates the discriminator first and the generator
second, from the same forward pass (as the original graph does). Per-replica losses are divided by
the number of replicas and the gradients summed across replicas, so any number of devices trains
the same model as one device with the same global batch.
"""
from __future__ import annotations

import dataclasses
import logging

import tensorflow as tf

import constants
import losses
from network import Discriminator, Generator
from vgg import VGG19Features

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainConfig:
    """Network, scaling, optimiser and loss settings (defaults: the original SR4RS ones)."""

    nbands: int
    depth: int = 64
    nresblocks: int = 16
    lr_scale: float = 1e-4
    hr_scale: float = 1e-4
    adam_lr: float = 1e-3
    adam_b1: float = 0.0
    l1weight: float = 0.0
    l2weight: float = 1000.0
    vggweight: float = 1e-5
    ganweight: float = 1.0
    losstype: str = "WGAN-GP"
    residual: str | None = None


class Adam(tf.Module):
    """Adam with TF1 AdamOptimizer's update (bias-corrected step size, epsilon 1e-8), whose state
    lives in variables (checkpointed), and which updates mirrored variables on every device.
    Create it inside the scope of the strategy that trains the variables.

    Args:
        variables: the variables to train.
        learning_rate: step size.
        beta1: first moment decay.
        beta2: second moment decay.
        epsilon: added to sqrt(v).
    """

    def __init__(self, variables: list[tf.Variable], learning_rate: float, beta1: float,
                 beta2: float = 0.999, epsilon: float = 1e-8):
        super().__init__()
        self.strategy = tf.distribute.get_strategy()  # the strategy whose scope created the variables
        self.params = list(variables)
        self.learning_rate = tf.Variable(learning_rate, dtype=tf.float32, trainable=False)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.m = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in self.params]
        self.v = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in self.params]

    def _update(self, var: tf.Variable, grad: tf.Tensor, m: tf.Variable, v: tf.Variable,
                step_size: tf.Tensor) -> tf.Operation:
        m_t = m.assign(self.beta1 * m + (1.0 - self.beta1) * grad)
        v_t = v.assign(self.beta2 * v + (1.0 - self.beta2) * tf.square(grad))
        return var.assign_sub(step_size * m_t / (tf.sqrt(v_t) + self.epsilon))

    def apply(self, grads: list[tf.Tensor]) -> None:
        """Sum per-replica gradients onto the variables' devices and apply one Adam update
        (cross-replica context, i.e. inside a tf.function but outside `strategy.run`)."""
        strategy = self.strategy
        grads = strategy.extended.batch_reduce_to(
            tf.distribute.ReduceOp.SUM, list(zip(grads, self.params, strict=True)))
        t = tf.cast(self.iterations.assign_add(1), tf.float32)
        step_size = self.learning_rate * tf.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)
        for var, grad, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            strategy.extended.update(var, self._update, args=(grad, m, v, step_size))


class Trainer(tf.Module):
    """Generator, discriminator, optimisers and steps.

    Args:
        config: the settings.
        strategy: a tf.distribute strategy (default: the current one, i.e. no distribution).
        vgg_features: the VGG19 feature extractor, or None for no perceptual loss.
    """

    def __init__(self, config: TrainConfig, strategy: tf.distribute.Strategy | None = None,
                 vgg_features: VGG19Features | None = None):
        super().__init__(name="trainer")
        if config.losstype not in losses.LOSS_TYPES:
            raise ValueError(f"unknown loss type {config.losstype}")
        self.config = config
        self.strategy = strategy or tf.distribute.get_strategy()
        self.vgg_features = vgg_features
        with self.strategy.scope():
            self.generator = Generator(config.nbands, config.nresblocks, config.depth, config.residual,
                                       residual_gain=config.hr_scale / config.lr_scale)
            self.discriminator = Discriminator(config.depth)
            self.discriminator.build(config.nbands)
            gen_vars = list(self.generator.trainable_variables)
            self.gen_optimizer = Adam(gen_vars, config.adam_lr, config.adam_b1)
            self.dis_optimizer = Adam(list(self.discriminator.trainable_variables), config.adam_lr,
                                      config.adam_b1)
            # The original pre-trains with a third Adam at TF1's default beta1 (0.9).
            self.pretrain_optimizer = Adam(gen_vars, config.adam_lr, 0.9)
        self.train_step = tf.function(self._train_step)
        self.pretrain_step = tf.function(self._pretrain_step)
        self.generate = tf.function(self._generate)

    def set_learning_rate(self, value: float) -> None:
        """Set the learning rate of all optimisers."""
        for optimizer in (self.gen_optimizer, self.dis_optimizer, self.pretrain_optimizer):
            optimizer.learning_rate.assign(value)

    def _inputs(self, batch: dict[str, tf.Tensor]) -> tuple[tf.Tensor, losses.Pyramid]:
        lr = self.config.lr_scale * tf.cast(batch[constants.LR_KEY], tf.float32)
        return lr, losses.real_pyramid(batch[constants.HR_KEY], self.config.hr_scale)

    def _content_losses(self, fake: losses.Pyramid, real: losses.Pyramid) -> dict[str, tf.Tensor]:
        cfg = self.config
        return {constants.GEN_LOSS_L1: cfg.l1weight * losses.l1_loss(fake, real),
                constants.GEN_LOSS_L2: cfg.l2weight * losses.l2_loss(fake, real)}

    def _replica_pretrain(self, batch: dict[str, tf.Tensor]):
        replicas = self.strategy.num_replicas_in_sync
        lr, real = self._inputs(batch)
        with tf.GradientTape() as tape:
            values = self._content_losses(self.generator(lr), real)
            total = tf.add_n(list(values.values())) / replicas
        grads = tape.gradient(total, self.pretrain_optimizer.params)
        return {k: v / replicas for k, v in values.items()}, grads

    def _replica_train(self, batch: dict[str, tf.Tensor]):
        cfg = self.config
        replicas = self.strategy.num_replicas_in_sync
        lr, real = self._inputs(batch)
        with tf.GradientTape(persistent=True) as tape:
            fake = self.generator(lr)
            d_real = self.discriminator(real)
            d_fake = self.discriminator(fake)
            if cfg.losstype == "LSGAN":
                d_loss, g_gan = losses.lsgan_losses(d_real, d_fake)
            else:
                d_loss, g_gan = losses.wgan_gp_losses(self.discriminator, real, fake, d_real, d_fake)
            values = self._content_losses(fake, real)
            values[constants.GEN_LOSS_GAN] = cfg.ganweight * g_gan
            vgg = tf.constant(0.0)
            if self.vgg_features is not None and cfg.vggweight > 0:
                vgg = losses.vgg_loss(self.vgg_features, fake, real)
            values[constants.GEN_LOSS_VGG] = cfg.vggweight * vgg
            g_loss = tf.add_n(list(values.values())) / replicas
            values[constants.DIS_LOSS] = d_loss
            d_loss = d_loss / replicas
        d_grads = tape.gradient(d_loss, self.dis_optimizer.params)
        g_grads = tape.gradient(g_loss, self.gen_optimizer.params)
        del tape
        return {k: v / replicas for k, v in values.items()}, d_grads, g_grads

    def _reduce(self, values: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in values.items()}

    def _pretrain_step(self, batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        values, grads = self.strategy.run(self._replica_pretrain, args=(batch,))
        self.pretrain_optimizer.apply(grads)
        return self._reduce(values)

    def _train_step(self, batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        values, d_grads, g_grads = self.strategy.run(self._replica_train, args=(batch,))
        self.dis_optimizer.apply(d_grads)
        self.gen_optimizer.apply(g_grads)
        return self._reduce(values)

    def _generate(self, lr: tf.Tensor) -> dict[int, tf.Tensor]:
        """Generator outputs in raw HR values for a raw LR image (for previews)."""
        fake = self.generator(self.config.lr_scale * tf.cast(lr, tf.float32))
        return {f: fake[f] / self.config.hr_scale for f in constants.FACTORS}
