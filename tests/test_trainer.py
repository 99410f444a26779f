"""Trainer: Adam as TF1's, the steps' effects, MirroredStrategy over two logical CPUs, mixed precision."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from helpers import ROOT, write_random_vgg19

import constants
import losses
from trainer import LOSS_SCALE, Adam, TrainConfig, Trainer
from vgg import VGG19Features, load_vgg19_weights

TINY = {"depth": 4, "nresblocks": 1}
NBANDS = 3


def batch(seed=0, n=4, size=8, bands=3):
    rng = np.random.default_rng(seed)
    hr = rng.integers(0, 4000, (n, 4 * size, 4 * size, bands)).astype(np.int16)
    lr = hr.reshape(n, size, 4, size, 4, bands).mean(axis=(2, 4)).astype(np.int16)
    return {constants.LR_KEY: tf.constant(lr), constants.HR_KEY: tf.constant(hr)}


@pytest.mark.parametrize("beta1", [0.0, 0.9])
def test_adam_follows_tf1_adam(beta1):
    var = tf.Variable([1.0, -2.0, 3.0])
    adam = Adam([var], learning_rate=0.1, beta1=beta1)
    x, m, v = np.array([1.0, -2.0, 3.0]), np.zeros(3), np.zeros(3)
    for t in range(1, 5):
        grad = 2 * x  # d/dx of sum(x^2)
        adam.apply([tf.constant(grad, tf.float32)])
        m = beta1 * m + (1 - beta1) * grad
        v = 0.999 * v + 0.001 * grad ** 2
        x = x - 0.1 * np.sqrt(1 - 0.999 ** t) / (1 - beta1 ** t) * m / (np.sqrt(v) + 1e-8)
        np.testing.assert_allclose(var.numpy(), x, rtol=1e-5)
    assert int(adam.iterations) == 4


def snapshot(module):
    return [v.numpy().copy() for v in module.trainable_variables]


def changed(before, module):
    after = module.trainable_variables
    return any(not np.array_equal(b, v.numpy()) for b, v in zip(before, after, strict=True))


def test_pretraining_lowers_the_content_loss_and_leaves_the_discriminator():
    tf.random.set_seed(0)
    trainer = Trainer(TrainConfig(**TINY, adam_lr=1e-3), NBANDS)
    dis_before = snapshot(trainer.discriminator)
    data = batch()
    first = trainer.pretrain_step(data)
    assert set(first) == {constants.GEN_LOSS_L1, constants.GEN_LOSS_L2}
    for _ in range(5):
        last = trainer.pretrain_step(data)
    assert float(last[constants.GEN_LOSS_L2]) < float(first[constants.GEN_LOSS_L2])
    assert not changed(dis_before, trainer.discriminator)


@pytest.mark.slow
@pytest.mark.parametrize("losstype", ["WGAN-GP", "LSGAN"])
def test_gan_step_updates_both_networks_with_finite_losses(losstype, tmp_path):
    tf.random.set_seed(0)
    features = VGG19Features(load_vgg19_weights(write_random_vgg19(str(tmp_path / "v.npy")), "1234"), "1234")
    config = TrainConfig(**TINY, losstype=losstype, l1weight=1.0, vggweight=1e-3)
    trainer = Trainer(config, NBANDS, vgg_features=features)
    gen_before, dis_before = snapshot(trainer.generator), snapshot(trainer.discriminator)
    values = trainer.train_step(batch())
    assert set(values) == {constants.GEN_LOSS_GAN, constants.GEN_LOSS_VGG, constants.GEN_LOSS_L1,
                           constants.GEN_LOSS_L2, constants.DIS_LOSS}
    assert all(np.isfinite(float(v)) for v in values.values())
    assert float(values[constants.GEN_LOSS_VGG]) > 0
    assert changed(gen_before, trainer.generator) and changed(dis_before, trainer.discriminator)


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, "tests")
    from test_trainer import NBANDS, TINY, batch
    from trainer import TrainConfig, Trainer

    def run(strategy):
        tf.random.set_seed(7)
        trainer = Trainer(TrainConfig(**TINY), NBANDS, strategy)
        data = tf.data.Dataset.from_tensor_slices(batch(n=8)).batch(4)
        if strategy is not None:
            data = strategy.experimental_distribute_dataset(data)
        for b in data:
            trainer.pretrain_step(b)
        weights = [v.numpy() for v in trainer.generator.trainable_variables]
        gan = [float(v) for v in trainer.train_step(next(iter(data))).values()]
        return weights, gan

    single, _ = run(None)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    mirrored, gan = run(strategy)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                      "max_diff": max(float(np.abs(a - b).max()) for a, b in zip(single, mirrored)),
                      "gan_finite": bool(np.all(np.isfinite(gan)))}))
""")


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_trains_like_one_device():
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["max_diff"] < 1e-5  # pre-training has no minibatch statistics: same updates
    assert result["gan_finite"]


# Mixed precision ------------------------------------------------------------------------------------

REDUCED = [tf.float16, tf.bfloat16]


def conv_dtypes(step, data):
    """The dtypes of every Conv2D of a traced step."""
    graph = step.get_concrete_function(data).graph
    return {op.get_attr("T") for op in graph.get_operations() if op.type == "Conv2D"}


def float32_state(trainer):
    optimizers = (trainer.gen_optimizer, trainer.dis_optimizer, trainer.pretrain_optimizer)
    return all(v.dtype == tf.float32 for v in trainer.generator.variables + trainer.discriminator.variables) \
        and all(m.dtype == tf.float32 for o in optimizers for m in o.m + o.v)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", REDUCED, ids=lambda d: d.name)
@pytest.mark.parametrize("losstype", ["WGAN-GP", "LSGAN"])
def test_mixed_precision_gan_step_computes_in_the_dtype_with_float32_state(dtype, losstype):
    tf.random.set_seed(0)
    trainer = Trainer(TrainConfig(**TINY, losstype=losstype, compute_dtype=dtype.name), NBANDS)
    if trainer.loss_scale is not None:
        trainer.loss_scale.scale.assign(1.0)  # no overflow on this batch: every step applies
    data = batch()
    gen_before, dis_before = snapshot(trainer.generator), snapshot(trainer.discriminator)
    values = trainer.train_step(data)
    assert changed(gen_before, trainer.generator) and changed(dis_before, trainer.discriminator)
    assert all(np.isfinite(float(v)) for v in values.values())
    assert all(v.dtype == tf.float32 for v in values.values())
    # every generator and discriminator conv (forward, gradient penalty) runs in the compute dtype
    assert conv_dtypes(trainer.train_step, data) == {dtype}
    assert float32_state(trainer)
    assert all(v.dtype == tf.float32 for v in trainer.generate(data[constants.LR_KEY]).values())


@pytest.mark.slow
def test_float16_loss_scale_skips_non_finite_steps_halves_and_grows(tmp_path):
    tf.random.set_seed(0)
    trainer = Trainer(TrainConfig(**TINY, compute_dtype="float16", loss_scale_interval=2), NBANDS)
    scale = trainer.loss_scale
    assert float(scale.scale) == 2.0 ** 15
    data = batch()
    before = snapshot(trainer.generator)
    scale.scale.assign(2.0 ** 100)  # the scaled gradients overflow float16
    values = trainer.pretrain_step(data)
    assert float(values[LOSS_SCALE]) == 2.0 ** 100 and np.isfinite(float(values[constants.GEN_LOSS_L2]))
    assert not changed(before, trainer.generator)
    assert int(trainer.pretrain_optimizer.iterations) == 0
    assert all(not np.any(m.numpy()) for m in trainer.pretrain_optimizer.m)
    assert float(scale.scale) == 2.0 ** 99 and int(scale.finite_steps) == 0
    scale.scale.assign(1.0)
    trainer.pretrain_step(data)
    assert changed(before, trainer.generator) and int(trainer.pretrain_optimizer.iterations) == 1
    assert (float(scale.scale), int(scale.finite_steps)) == (1.0, 1)
    trainer.pretrain_step(data)  # the second finite step in a row doubles the scale
    assert (float(scale.scale), int(scale.finite_steps)) == (2.0, 0)
    # the scale is part of what a checkpoint holds
    assert trainer.checkpointed()[LOSS_SCALE] is scale
    path = tf.train.Checkpoint(trainer=trainer.checkpointed()).save(str(tmp_path / "ck"))
    restored = Trainer(TrainConfig(**TINY, compute_dtype="float16"), NBANDS)
    tf.train.Checkpoint(trainer=restored.checkpointed()).restore(path).assert_existing_objects_matched()
    assert float(restored.loss_scale.scale) == 2.0


@pytest.mark.slow
def test_reduced_precision_pretraining_follows_float32():
    data = batch()
    curves = {}
    for dtype in ("float32", "float16", "bfloat16"):
        tf.random.set_seed(0)
        trainer = Trainer(TrainConfig(**TINY, compute_dtype=dtype), NBANDS)
        if trainer.loss_scale is not None:
            trainer.loss_scale.scale.assign(1.0)
        curves[dtype] = [float(trainer.pretrain_step(data)[constants.GEN_LOSS_L2]) for _ in range(4)]
        assert conv_dtypes(trainer.pretrain_step, data) == {tf.as_dtype(dtype)}
    assert curves["float32"][-1] < 0.9 * curves["float32"][0]
    for dtype in ("float16", "bfloat16"):
        np.testing.assert_allclose(curves[dtype], curves["float32"], rtol=0.01)


@pytest.mark.parametrize("dtype", REDUCED, ids=lambda d: d.name)
def test_gradient_penalty_in_reduced_precision_matches_float32(dtype):
    def penalty(compute_dtype):
        tf.random.set_seed(0)
        trainer = Trainer(TrainConfig(**TINY, compute_dtype=compute_dtype), NBANDS)
        lr, real = trainer._inputs(batch())
        fake = {f: tf.cast(x, tf.float32) for f, x in trainer.generator(lr).items()}  # float32 fakes
        tf.random.set_seed(1)  # the same alpha
        with tf.GradientTape() as tape:
            value = losses.gradient_penalty(trainer._critic, real, fake)
        grads = tape.gradient(value, trainer.discriminator.trainable_variables)
        return float(value), np.concatenate([g.numpy().ravel() for g in grads if g is not None])

    value, grads = penalty(dtype.name)
    ref_value, ref_grads = penalty("float32")
    assert grads.dtype == np.float32
    np.testing.assert_allclose(value, ref_value, rtol=2e-3)
    assert np.linalg.norm(grads - ref_grads) < 0.05 * np.linalg.norm(ref_grads)


def test_unknown_compute_dtype_is_refused():
    with pytest.raises(ValueError, match="unknown compute dtype float64"):
        Trainer(TrainConfig(**TINY, compute_dtype="float64"), NBANDS)
