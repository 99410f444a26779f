"""Trainer: Adam as TF1's, the steps' effects, and MirroredStrategy over two logical CPUs."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from helpers import ROOT, write_random_vgg19

import constants
from trainer import Adam, TrainConfig, Trainer
from vgg import VGG19Features, load_vgg19_weights

TINY = {"nbands": 3, "depth": 4, "nresblocks": 1}


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
    trainer = Trainer(TrainConfig(**TINY, adam_lr=1e-3))
    dis_before = snapshot(trainer.discriminator)
    data = batch()
    first = trainer.pretrain_step(data)
    assert set(first) == {constants.GEN_LOSS_L1, constants.GEN_LOSS_L2}
    for _ in range(5):
        last = trainer.pretrain_step(data)
    assert float(last[constants.GEN_LOSS_L2]) < float(first[constants.GEN_LOSS_L2])
    assert not changed(dis_before, trainer.discriminator)


@pytest.mark.parametrize("losstype", ["WGAN-GP", "LSGAN"])
def test_gan_step_updates_both_networks_with_finite_losses(losstype, tmp_path):
    tf.random.set_seed(0)
    features = VGG19Features(load_vgg19_weights(write_random_vgg19(str(tmp_path / "v.npy")), "1234"), "1234")
    config = TrainConfig(**TINY, losstype=losstype, l1weight=1.0, vggweight=1e-3)
    trainer = Trainer(config, vgg_features=features)
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
    from test_trainer import TINY, batch
    from trainer import TrainConfig, Trainer

    def run(strategy):
        tf.random.set_seed(7)
        trainer = Trainer(TrainConfig(**TINY), strategy)
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
