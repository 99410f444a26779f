"""The SR4RS trainer: both networks, their Adam optimisers, and the train steps (each one
`tf.function`), running on a `tf.distribute` strategy (MirroredStrategy on several GPUs).

Each GAN step computes one forward pass, then updates the discriminator first and the generator
second, from the same forward pass (as the original graph does). Per-replica losses are divided by
the number of replicas and the gradients summed across replicas, so any number of devices trains
the same model as one device with the same global batch. With several machines
(MultiWorkerMirroredStrategy), `from_chief` gives every worker the chief's value of what each would
otherwise decide alone (docs/DESIGN.md §5).

Mixed precision (`TrainConfig.compute_dtype` float16 or bfloat16): the networks compute in that dtype
on inputs cast to it, their variables stay float32, and their outputs are cast back to float32 before
every loss, so losses, gradient penalty, VGG, gradients and optimiser states are float32. float16 adds
dynamic loss scaling (`DynamicLossScale`).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

import constants
import losses
from logs import get_logger
from network import Discriminator, Generator
from scaling import Scaling
from train_options import WORKER_JOBS, TrainConfig
from vgg import VGG19Features

logger = get_logger("trainer")

INITIAL_LOSS_SCALE = 2.0 ** 15
# tf.keras stops halving at 1; SR4RS's L2 weight (1000) gives gradients of 1e4 and more at the start,
# which can exceed float16's maximum (65504) even unscaled: a floor of 1 would then skip every step.
MIN_LOSS_SCALE = 2.0 ** -16
LOSS_SCALE = "loss_scale"


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

    def reduce(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        """Per-replica gradients summed onto the variables' devices (cross-replica context)."""
        return self.strategy.extended.batch_reduce_to(
            tf.distribute.ReduceOp.SUM, list(zip(grads, self.params, strict=True)))

    def update(self, grads: list[tf.Tensor]) -> None:
        """One Adam update from reduced gradients (cross-replica context)."""
        t = tf.cast(self.iterations.assign_add(1), tf.float32)
        step_size = self.learning_rate * tf.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)
        for var, grad, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            self.strategy.extended.update(var, self._update, args=(grad, m, v, step_size))

    def apply(self, grads: list[tf.Tensor]) -> None:
        """Sum per-replica gradients onto the variables' devices and apply one Adam update
        (cross-replica context, i.e. inside a tf.function but outside `strategy.run`)."""
        self.update(self.reduce(grads))


class DynamicLossScale(tf.Module):
    """Dynamic loss scaling for float16, as tf.keras's LossScaleOptimizer does it: gradients are taken
    of the loss times `scale` (so that small float16 gradients do not underflow) and divided by it; a
    step with a non-finite gradient is skipped by the caller and halves the scale (down to
    MIN_LOSS_SCALE, below tf.keras's 1); `interval` finite steps in a row double it. The state lives
    in variables (checkpointed): create it inside the scope of the training strategy.

    Args:
        interval: finite steps in a row before the scale doubles.
        initial: the first scale.
    """

    def __init__(self, interval: int = 2000, initial: float = INITIAL_LOSS_SCALE):
        super().__init__(name="loss_scale")
        self.interval = interval
        self.scale = tf.Variable(initial, dtype=tf.float32, trainable=False)
        self.finite_steps = tf.Variable(0, dtype=tf.int64, trainable=False)

    def gradients(self, tape: tf.GradientTape, loss: tf.Tensor,
                  variables: list[tf.Variable]) -> list[tf.Tensor]:
        """Unscaled float32 gradients of `loss`, backpropagated from `scale` instead of 1
        (replica context)."""
        scale = tf.convert_to_tensor(self.scale)
        return [g / scale for g in tape.gradient(loss, variables, output_gradients=scale)]

    def update(self, finite: tf.Tensor) -> None:
        """Halve the scale after a non-finite step, double it after `interval` finite steps in a row
        (cross-replica context)."""
        steps = tf.where(finite, self.finite_steps + 1, tf.constant(0, tf.int64))
        grow = steps >= self.interval
        doubled = 2.0 * self.scale
        grown = tf.where(grow & tf.math.is_finite(doubled), doubled, self.scale)
        self.scale.assign(tf.where(finite, grown, tf.maximum(self.scale / 2.0, MIN_LOSS_SCALE)))
        self.finite_steps.assign(tf.where(grow, tf.constant(0, tf.int64), steps))


def worker_count(strategy: tf.distribute.Strategy) -> int:
    """The machines training together: the chief and worker tasks of a MultiWorkerMirroredStrategy's
    cluster, else 1."""
    resolver = strategy.cluster_resolver
    jobs = resolver.cluster_spec().as_dict() if resolver is not None else {}
    return max(1, sum(len(jobs.get(job, [])) for job in WORKER_JOBS))


class Trainer(tf.Module):
    """Generator, discriminator, optimisers and steps.

    Args:
        config: the settings.
        nbands: band count of the patches.
        strategy: a tf.distribute strategy (default: the current one, i.e. no distribution).
        vgg_features: the VGG19 feature extractor, or None for no perceptual loss.
        scaling: raw values -> network values; required with config.normalize (the patches' statistics),
            else the scales of config.

    Attributes:
        workers: the machines training together (worker_count).
    """

    def __init__(self, config: TrainConfig, nbands: int, strategy: tf.distribute.Strategy | None = None,
                 vgg_features: VGG19Features | None = None, scaling: Scaling | None = None):
        super().__init__(name="trainer")
        if config.losstype not in constants.LOSS_TYPES:
            raise ValueError(f"unknown loss type {config.losstype}")
        if config.compute_dtype not in constants.COMPUTE_DTYPES:
            raise ValueError(f"unknown compute dtype {config.compute_dtype}")
        # Grappler's remapper fails on the LeakyRelu gradients and logs a (harmless) error on every
        # trace; without it the steps are as fast (measured).
        tf.config.optimizer.set_experimental_options({"remapping": False})
        if config.normalize and scaling is None:
            raise ValueError("normalize needs the scaling of the patches' statistics")
        self.config = config
        self.scaling = scaling or Scaling.scales(nbands, config.lr_scale, config.hr_scale)
        self.compute_dtype = tf.as_dtype(config.compute_dtype)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.vgg_features = vgg_features
        with self.strategy.scope():
            self.generator = Generator(nbands, config.nresblocks, config.depth, config.residual,
                                       residual_gain=self.scaling.residual_gain,
                                       upsampling=config.upsampling)
            self.discriminator = Discriminator(config.depth)
            self.discriminator.build(nbands)
            gen_vars = list(self.generator.trainable_variables)
            self.gen_optimizer = Adam(gen_vars, config.adam_lr, config.adam_b1)
            self.dis_optimizer = Adam(list(self.discriminator.trainable_variables), config.adam_lr,
                                      config.adam_b1)
            # The original pre-trains with a third Adam at TF1's default beta1 (0.9).
            self.pretrain_optimizer = Adam(gen_vars, config.adam_lr, 0.9)
            self.loss_scale = DynamicLossScale(config.loss_scale_interval) \
                if config.compute_dtype == "float16" else None
        # No autograph: the steps have no tensor-dependent Python control flow, and TF 2.12's autograph
        # rejects zip(..., strict=True).
        self.train_step = tf.function(self._train_step, autograph=False)
        self.pretrain_step = tf.function(self._pretrain_step, autograph=False)
        self.generate = tf.function(self._generate, autograph=False)
        self._broadcast = tf.function(self._from_first_replica, autograph=False, reduce_retracing=True)
        self.workers = worker_count(self.strategy)

    def from_chief(self, value: float | np.ndarray) -> np.ndarray:
        """The chief's `value` on every worker (float64): what a worker would decide from its own clock
        or scores must be the same on all of them, or their collective operations stop pairing up (a
        deadlock). Every worker must call it at the same point. With one machine, `value` itself.

        Args:
            value: a number or an array, of the same shape on every worker.
        """
        value = np.asarray(value, np.float64)
        if self.workers == 1:
            return value
        return self._broadcast(tf.constant(value)).numpy()

    def _from_first_replica(self, value: tf.Tensor) -> tf.Tensor:
        """The first replica's `value` (the chief's first device) on every replica: a sum to which only it
        contributes."""
        def replica(local: tf.Tensor) -> tf.Tensor:
            first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
            return tf.where(first, local, tf.zeros_like(local))

        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, self.strategy.run(replica, args=(value,)),
                                    axis=None)

    def checkpointed(self) -> dict[str, tf.Module]:
        """What a checkpoint must hold to resume training, by name (the checkpoint keys: keep them
        stable): both networks, the three optimisers and, in float16, the loss scale (LOSS_SCALE)."""
        state = {"generator": self.generator, "discriminator": self.discriminator,
                 "gen_optimizer": self.gen_optimizer, "dis_optimizer": self.dis_optimizer,
                 "pretrain_optimizer": self.pretrain_optimizer}
        if self.loss_scale is not None:
            state[LOSS_SCALE] = self.loss_scale
        return state

    def _inputs(self, batch: dict[str, tf.Tensor]) -> tuple[tf.Tensor, losses.Pyramid]:
        return (self.scaling.lr(batch[constants.LR_KEY]),
                losses.real_pyramid(self.scaling.hr(batch[constants.HR_KEY])))

    def _vgg_view(self, images: losses.Pyramid) -> losses.Pyramid:
        """Network HR values as the VGG loss wants them: raw values times hr_scale (mostly in [0, 1])."""
        if not self.config.normalize:
            return images  # already raw times hr_scale
        return {f: self.config.hr_scale * self.scaling.hr_to_raw(x) for f, x in images.items()}

    def _generator(self, lr: tf.Tensor) -> losses.Pyramid:
        """The generator in the compute dtype on float32 `lr`, its outputs in float32."""
        fake = self.generator(tf.cast(lr, self.compute_dtype))
        return {f: tf.cast(image, tf.float32) for f, image in fake.items()}

    def _critic(self, images: losses.Pyramid) -> tf.Tensor:
        """The discriminator in the compute dtype on float32 images, its scores in float32 (so the
        gradient penalty differentiates float32 interpolates and gets float32 gradients)."""
        return tf.cast(self.discriminator({f: tf.cast(x, self.compute_dtype) for f, x in images.items()}),
                       tf.float32)

    def _gradients(self, tape: tf.GradientTape, loss: tf.Tensor,
                   variables: list[tf.Variable]) -> list[tf.Tensor]:
        """float32 gradients of `loss`, through the loss scale in float16."""
        if self.loss_scale is None:
            return tape.gradient(loss, variables)
        return self.loss_scale.gradients(tape, loss, variables)

    def _content_losses(self, fake: losses.Pyramid, real: losses.Pyramid) -> dict[str, tf.Tensor]:
        cfg = self.config
        return {constants.GEN_LOSS_L1: cfg.l1weight * losses.l1_loss(fake, real),
                constants.GEN_LOSS_L2: cfg.l2weight * losses.l2_loss(fake, real)}

    def _replica_pretrain(self, batch: dict[str, tf.Tensor]):
        replicas = self.strategy.num_replicas_in_sync
        lr, real = self._inputs(batch)
        with tf.GradientTape() as tape:
            values = self._content_losses(self._generator(lr), real)
            total = tf.add_n(list(values.values())) / replicas
        grads = self._gradients(tape, total, self.pretrain_optimizer.params)
        return {k: v / replicas for k, v in values.items()}, grads

    def _replica_train(self, batch: dict[str, tf.Tensor]):
        cfg = self.config
        replicas = self.strategy.num_replicas_in_sync
        lr, real = self._inputs(batch)
        with tf.GradientTape(persistent=True) as tape:
            fake = self._generator(lr)
            d_real = self._critic(real)
            d_fake = self._critic(fake)
            if cfg.losstype == "LSGAN":
                d_loss, g_gan = losses.lsgan_losses(d_real, d_fake)
            else:
                d_loss, g_gan = losses.wgan_gp_losses(self._critic, real, fake, d_real, d_fake)
            values = self._content_losses(fake, real)
            values[constants.GEN_LOSS_GAN] = cfg.ganweight * g_gan
            vgg = tf.constant(0.0)
            if self.vgg_features is not None and cfg.vggweight > 0:
                vgg = losses.vgg_loss(self.vgg_features, self._vgg_view(fake), self._vgg_view(real))
            values[constants.GEN_LOSS_VGG] = cfg.vggweight * vgg
            g_loss = tf.add_n(list(values.values())) / replicas
            values[constants.DIS_LOSS] = d_loss
            d_loss = d_loss / replicas
        d_grads = self._gradients(tape, d_loss, self.dis_optimizer.params)
        g_grads = self._gradients(tape, g_loss, self.gen_optimizer.params)
        del tape
        return {k: v / replicas for k, v in values.items()}, d_grads, g_grads

    def _reduce(self, values: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in values.items()}

    def _apply(self, updates: list[tuple[Adam, list[tf.Tensor]]]) -> None:
        """Apply each optimiser's per-replica gradients, in order. With a loss scale, the step is skipped
        (no optimiser moves) when any reduced gradient is non-finite, and the scale is updated."""
        if self.loss_scale is None:
            for optimizer, grads in updates:
                optimizer.apply(grads)
            return
        reduced = [(optimizer, optimizer.reduce(grads)) for optimizer, grads in updates]
        # reduced gradients are the same on every device: check the first device's copy
        local = [self.strategy.experimental_local_results(g)[0] for _, grads in reduced for g in grads]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in local])

        def update() -> None:
            for optimizer, grads in reduced:
                optimizer.update(grads)

        tf.cond(finite, update, lambda: None)
        self.loss_scale.update(finite)

    def _finish(self, values: dict[str, tf.Tensor], updates: list[tuple[Adam, list[tf.Tensor]]]
                ) -> dict[str, tf.Tensor]:
        """Apply the updates; the reduced losses, and in float16 the loss scale of this step."""
        values = self._reduce(values)
        if self.loss_scale is not None:
            values[LOSS_SCALE] = tf.identity(self.loss_scale.scale)
        self._apply(updates)
        return values

    def _pretrain_step(self, batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        values, grads = self.strategy.run(self._replica_pretrain, args=(batch,))
        return self._finish(values, [(self.pretrain_optimizer, grads)])

    def _train_step(self, batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        values, d_grads, g_grads = self.strategy.run(self._replica_train, args=(batch,))
        return self._finish(values, [(self.dis_optimizer, d_grads), (self.gen_optimizer, g_grads)])

    def _generate(self, lr: tf.Tensor) -> dict[int, tf.Tensor]:
        """Generator outputs (in the compute dtype, returned as float32) in raw HR values for a raw LR
        image (for previews)."""
        fake = self._generator(self.scaling.lr(lr))
        return {f: self.scaling.hr_to_raw(fake[f]) for f in constants.FACTORS}
