"""Numerical parity of network.py with the original SR4RS networks (TF1 code in ../shared/sr4rs-original).

tests/original_oracle.py builds the original generator and discriminator (4 bands, depth 8, 2 residual
blocks, a batch of 4 LR patches of 8x8) in a subprocess and dumps its variables, outputs and gradients to
an .npz; here the same variables are loaded by name into Generator / Discriminator and everything is
compared. Tolerance: float32 round-off only, |ours - original| <= RTOL * max|original| + ATOL for each
tensor (the two sides use the same TF kernels but not always the same op order).
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import ORIGINAL_CODE, ROOT, needs_original

import constants
import network

pytestmark = [needs_original, pytest.mark.original, pytest.mark.slow]

NCHANNELS, DEPTH, NRESBLOCKS = 4, 8, 2
FACTORS = constants.FACTORS
RTOL = 1e-5
ATOL = 1e-6
# Largest normalized difference measured per comparison (max |ours - original| / max |original|).
MEASURED: dict[str, float] = {}


def assert_close(name: str, ours, original, rtol: float = RTOL, atol: float = ATOL) -> None:
    ours = np.asarray(ours, dtype=np.float64)
    original = np.asarray(original, dtype=np.float64)
    assert ours.shape == original.shape, f"{name}: shape {ours.shape} != original {original.shape}"
    scale = float(np.max(np.abs(original))) if original.size else 0.0
    diff = float(np.max(np.abs(ours - original))) if original.size else 0.0
    group = name.split("/")[0]
    MEASURED[group] = max(MEASURED.get(group, 0.0), diff / scale if scale else diff)
    assert diff <= rtol * scale + atol, f"{name}: max diff {diff:.3g} for values up to {scale:.3g}"


@pytest.fixture(scope="module", autouse=True)
def report_differences():
    """After the module: print the largest normalized difference of each comparison (see it with -rA)."""
    yield
    print("\nparity, max |ours - original| / max |original|:")
    for group, value in sorted(MEASURED.items()):
        print(f"  {group:14s} {value:.2e}")


@pytest.fixture(scope="module")
def oracle(tmp_path_factory) -> dict[str, np.ndarray]:
    """Run the original once per session and load what it computed."""
    out = tmp_path_factory.mktemp("oracle") / "original.npz"
    env = dict(os.environ, PYTHONPATH=ORIGINAL_CODE, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "original_oracle.py"), str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"the original oracle failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    with np.load(out) as data:
        return {key: data[key] for key in data.files}


def variables_of(oracle: dict[str, np.ndarray], scope: str) -> dict[str, np.ndarray]:
    return {key[len("var/"):]: value for key, value in oracle.items() if key.startswith(f"var/{scope}/")}


def load_by_name(module: tf.Module, values: dict[str, np.ndarray]) -> None:
    ours = {v.name.split(":")[0]: v for v in module.trainable_variables}
    assert sorted(ours) == sorted(values), (
        f"variable names differ from the original: only ours {sorted(set(ours) - set(values))}, "
        f"only original {sorted(set(values) - set(ours))}")
    for name, var in ours.items():
        assert tuple(var.shape) == values[name].shape, f"{name}: {var.shape} != {values[name].shape}"
        var.assign(values[name])


@pytest.fixture(scope="module")
def nets(oracle):
    gen = network.Generator(NCHANNELS, nresblocks=NRESBLOCKS, dim=DEPTH)
    dis = network.Discriminator(dim=DEPTH)
    dis.build(NCHANNELS)
    load_by_name(gen, variables_of(oracle, constants.GEN_SCOPE))
    load_by_name(dis, variables_of(oracle, constants.DIS_SCOPE))
    return gen, dis


def real_of(hr: np.ndarray) -> dict[int, tf.Tensor]:
    return {f: network.downscale(tf.constant(hr), f) for f in FACTORS}


def compare_grads(kind: str, oracle, grads, variables) -> None:
    for var, grad in zip(variables, grads, strict=True):
        name = var.name.split(":")[0]
        ours = np.zeros(var.shape, np.float32) if grad is None else grad.numpy()
        assert_close(f"{kind}/{name}", ours, oracle[f"{kind}/{name}"])


def test_variable_names_and_shapes_match_the_original(oracle, nets):
    gen, dis = nets  # load_by_name asserted the exact name sets and shapes
    assert len(gen.trainable_variables) == len(variables_of(oracle, "gen")) == 32
    assert len(dis.trainable_variables) == len(variables_of(oracle, "dis")) == 30
    # the biases really are non-zero, so that adding them is compared too
    assert np.abs(oracle["var/gen/res_4x/output/bias"]).max() > 0


def test_generator_outputs(oracle, nets):
    gen, _ = nets
    fake = gen(tf.constant(oracle["input/lr"]))
    for f in FACTORS:
        assert_close(f"generator/{f}", fake[f], oracle[f"gen/{f}"])


def test_downscale_of_real_hr(oracle):
    hr = tf.constant(oracle["input/hr"])
    for f in FACTORS:
        assert_close(f"downscale/{f}", network.downscale(hr, f), oracle[f"real/{f}"], rtol=1e-6)


def test_discriminator_scores(oracle, nets):
    gen, dis = nets
    fake = {f: tf.constant(oracle[f"gen/{f}"]) for f in FACTORS}
    assert_close("scores/fake", dis(fake), oracle["dis/fake"])
    assert_close("scores/real", dis(real_of(oracle["input/hr"])), oracle["dis/real"])
    # batch of 8: two groups of 4, sample i in group i mod 2 -- the strided grouping of the original
    assert_close("scores/real8", dis(real_of(oracle["input/hr8"])), oracle["dis/real8"])
    # batch of 2: group size min(4, 2)
    real2 = {f: t[:2] for f, t in real_of(oracle["input/hr"]).items()}
    assert_close("scores/real2", dis(real2), oracle["dis/real2"])
    # the scores are not all alike, so the comparison means something
    assert np.ptp(oracle["dis/real8"]) > 1e-3


def test_generator_l1_gradients(oracle, nets):
    gen, _ = nets
    real = real_of(oracle["input/hr"])
    with tf.GradientTape() as tape:
        fake = gen(tf.constant(oracle["input/lr"]))
        loss = tf.add_n([tf.reduce_mean(tf.abs(fake[f] - real[f])) for f in FACTORS])
    assert_close("loss_l1", loss, oracle["loss/l1"])
    compare_grads("grad_l1", oracle, tape.gradient(loss, gen.trainable_variables), gen.trainable_variables)


def test_discriminator_gradients(oracle, nets):
    _, dis = nets
    fake = {f: tf.constant(oracle[f"gen/{f}"]) for f in FACTORS}
    real = real_of(oracle["input/hr"])
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(dis(fake)) + tf.reduce_sum(dis(real))
    compare_grads("grad_dis", oracle, tape.gradient(total, dis.trainable_variables), dis.trainable_variables)


def test_gradients_through_discriminator_into_generator(oracle, nets):
    """sum(D(G(lr))) w.r.t. the generator: every layer's backward pass, blur included, chained."""
    gen, dis = nets
    with tf.GradientTape() as tape:
        score = tf.reduce_sum(dis(gen(tf.constant(oracle["input/lr"]))))
    compare_grads("grad_gan", oracle, tape.gradient(score, gen.trainable_variables), gen.trainable_variables)


def test_second_order_gradients_of_a_gradient_penalty(oracle, nets):
    """WGAN-GP needs gradients of input gradients: compare them on the discriminator's variables."""
    gen, dis = nets
    real = real_of(oracle["input/hr"])
    fake = {f: tf.constant(oracle[f"gen/{f}"]) for f in FACTORS}
    alpha = tf.constant(oracle["input/alpha"])
    inter = {f: real[f] + alpha * (fake[f] - real[f]) for f in FACTORS}
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            inner.watch(list(inter.values()))
            mixed = tf.reduce_sum(dis(inter))
        grads = inner.gradient(mixed, [inter[f] for f in FACTORS])
        norms = [tf.sqrt(tf.reduce_sum(tf.square(g), axis=[1, 2, 3])) for g in grads]
        gp = tf.add_n([tf.reduce_mean(tf.square(n - 1.0)) for n in norms]) / len(FACTORS)
    assert_close("loss_gp", gp, oracle["loss/gp"])
    compare_grads("grad_gp", oracle, outer.gradient(gp, dis.trainable_variables), dis.trainable_variables)


def test_minibatch_stddev_strided_groups_like_the_original(oracle):
    assert_close("mbstd/batch8", network.minibatch_stddev(tf.constant(oracle["input/x8"])),
                 oracle["mbstd/batch8"], rtol=1e-6)


def test_batch_of_6_original_fails_ours_uses_groups_of_3(oracle, nets):
    """The original reshapes to [min(4, N), -1, H, W, C]: with N = 6 that cannot be done, so it fails
    (at graph construction when the batch is static, at run time in its training graph, where the batch
    is unknown). Ours uses groups of 3 (largest divisor of 6 that is <= 4), which equals the original's
    layer when that one is explicitly given group_size=3."""
    for key in ("batch6/mbstd_error", "batch6/dis_error"):
        message = str(oracle[key])
        assert message.startswith("InvalidArgumentError"), message
        assert "Input to reshape" in message and "MinibatchStd/Reshape" in message, message
    assert "dis_5/res_4x/MinibatchStd" in str(oracle["batch6/dis_error"])  # fails at its first mbstd
    assert str(oracle["batch6/static_mbstd_error"]).startswith("ValueError")
    assert "batch6/dis_output" not in oracle

    x6 = tf.constant(oracle["input/x6"])
    assert network.minibatch_group_size(6) == 3
    assert_close("mbstd/batch6", network.minibatch_stddev(x6), oracle["mbstd/g3_on_6"], rtol=1e-6)

    _, dis = nets
    scores = dis(real_of(oracle["input/hr6"])).numpy()
    assert scores.shape == (6, 1) and np.all(np.isfinite(scores))
    # Batch 6 with groups of 3 is two independent groups {0, 2, 4} and {1, 3, 5}: scoring the two groups
    # as batches of 3 (one group each) gives the same scores.
    hr6 = oracle["input/hr6"]
    for members in ([0, 2, 4], [1, 3, 5]):
        alone = dis(real_of(hr6[members])).numpy()
        np.testing.assert_allclose(scores[members], alone, rtol=1e-5, atol=1e-6)
