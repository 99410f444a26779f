"""Tests of network.py against docs/DESIGN.md §2-4: each layer against a numpy reference computed here,
the networks' shapes, variable counts and names, trainability, determinism and mixed precision.

Networks are tiny (depth 4-8, 0-2 residual blocks, 7-16 pixel LR patches) to keep the suite fast.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import tensorflow as tf

import constants
import network

FACTORS = constants.FACTORS
BLUR = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16.0


# ---------------------------------------------------------------------------------------------
# numpy references (TensorFlow conventions: NHWC, kernels [kh, kw, c_in, c_out], SAME padding)
# ---------------------------------------------------------------------------------------------

def same_pads(size: int, ksize: int, stride: int) -> tuple[int, int, int]:
    """Output size and (before, after) padding of a SAME convolution."""
    out = -(-size // stride)
    total = max((out - 1) * stride + ksize - size, 0)
    return out, total // 2, total - total // 2


def np_conv2d(x: np.ndarray, w: np.ndarray, stride: int = 1) -> np.ndarray:
    x, w = x.astype(np.float64), w.astype(np.float64)
    kh, kw = w.shape[:2]
    oh, top, bottom = same_pads(x.shape[1], kh, stride)
    ow, left, right = same_pads(x.shape[2], kw, stride)
    xp = np.pad(x, [(0, 0), (top, bottom), (left, right), (0, 0)])
    out = np.zeros((x.shape[0], oh, ow, w.shape[3]))
    for a in range(kh):
        for b in range(kw):
            patch = xp[:, a:a + stride * (oh - 1) + 1:stride, b:b + stride * (ow - 1) + 1:stride, :]
            out += patch @ w[a, b]
    return out


def np_conv2d_transpose(x: np.ndarray, k: np.ndarray, stride: int = 2) -> np.ndarray:
    """Adjoint of a SAME conv of an image of stride * (H, W) pixels; k is [kh, kw, c_out, c_in]."""
    x, k = x.astype(np.float64), k.astype(np.float64)
    n, h, w, _ = x.shape
    kh, kw = k.shape[:2]
    _, top, _ = same_pads(stride * h, kh, stride)
    _, left, _ = same_pads(stride * w, kw, stride)
    out = np.zeros((n, stride * h + 2 * kh, stride * w + 2 * kw, k.shape[2]))  # with room on each side
    for a in range(kh):
        for b in range(kw):
            contrib = x @ k[a, b].T  # [n, h, w, c_out]
            r0, c0 = kh + a - top, kw + b - left
            out[:, r0:r0 + stride * h:stride, c0:c0 + stride * w:stride, :] += contrib
    return out[:, kh:kh + stride * h, kw:kw + stride * w, :]


def np_depthwise(x: np.ndarray, f: np.ndarray, stride: int = 1) -> np.ndarray:
    c = x.shape[-1]
    w = np.zeros(f.shape + (c, c))
    for i in range(c):
        w[:, :, i, i] = f
    return np_conv2d(x, w, stride)


def np_fused_kernel(w: np.ndarray) -> np.ndarray:
    """docs/DESIGN.md §2: K[i, j] = sum of w[i - di, j - dj] for di, dj in {0, 1} (indices inside w)."""
    k = w.shape[0]
    out = np.zeros((k + 1, k + 1) + w.shape[2:])
    for i in range(k + 1):
        for j in range(k + 1):
            for di in (0, 1):
                for dj in (0, 1):
                    if 0 <= i - di < k and 0 <= j - dj < k:
                        out[i, j] += w[i - di, j - dj]
    return out


def np_minibatch_stddev(x: np.ndarray, group: int) -> np.ndarray:
    """docs/DESIGN.md §2, written with explicit groups: sample i belongs to group i mod (N / group)."""
    n = x.shape[0]
    ngroups = n // group
    extra = np.zeros(x.shape[:3] + (1,))
    for g in range(ngroups):
        members = [i for i in range(n) if i % ngroups == g]
        assert len(members) == group
        values = x[members].astype(np.float64)
        std = np.sqrt(((values - values.mean(axis=0)) ** 2).mean(axis=0) + 1e-8)
        extra[members] = std.mean()
    return np.concatenate([x, extra], axis=-1)


def normal(shape, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


def randomize_biases(module: tf.Module, seed: int = 1) -> None:
    """Biases start at zero: give them values so that a test also sees them being used."""
    rng = np.random.default_rng(seed)
    for var in module.trainable_variables:
        if var.name.split(":")[0].endswith("/bias"):
            var.assign(rng.normal(scale=0.1, size=var.shape).astype(np.float32))


def hr_scales(n: int, size: int, nbands: int, seed: int = 0) -> dict[int, tf.Tensor]:
    return {f: tf.constant(normal((n, size // f, size // f, nbands), seed + f)) for f in FACTORS}


# ---------------------------------------------------------------------------------------------
# Equalized learning rate conv
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ksize, c_in, c_out", [(1, 5, 3), (3, 4, 6), (9, 2, 4)])
def test_conv_runtime_scale_and_output(ksize, c_in, c_out):
    conv = network.Conv2D("t/conv", ksize, c_in, c_out)
    assert conv.runtime_scale == pytest.approx(math.sqrt(2.0 / (ksize * ksize * c_in)), rel=1e-12)
    assert tuple(conv.weight.shape) == (ksize, ksize, c_in, c_out)
    assert tuple(conv.bias.shape) == (c_out,) and not np.any(conv.bias.numpy())
    randomize_biases(conv)
    x = normal((2, 7, 6, c_in))
    expected = np_conv2d(x, conv.weight.numpy() * conv.runtime_scale) + conv.bias.numpy()
    np.testing.assert_allclose(conv(tf.constant(x)).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_conv_weights_standard_normal_scaled_at_run_time():
    tf.random.set_seed(3)
    conv = network.Conv2D("t/conv", 3, 64, 64)
    w = conv.weight.numpy().ravel()  # 36864 draws: the bounds below are > 5 standard errors wide
    assert abs(w.mean()) < 0.03
    assert abs(w.std() - 1.0) < 0.03
    assert abs(np.mean(np.abs(w) < 1.0) - 0.6827) < 0.015
    kurtosis = np.mean((w - w.mean()) ** 4) / w.var() ** 2
    assert abs(kurtosis - 3.0) < 0.2
    assert not np.any(conv.bias.numpy())
    # The stored variable is N(0, 1); the scale sqrt(2 / fan_in) is applied at run time (He init):
    # on unit Gaussian input, interior outputs have a mean square of about 2.
    y = conv(tf.constant(normal((4, 18, 18, 64), seed=5)))
    assert abs(float(tf.reduce_mean(tf.square(y[:, 1:-1, 1:-1]))) - 2.0) < 0.2


def test_fused_convs_have_no_bias():
    for layer in (network.DownscaleConv2D("t/down", 3, 4, 5), network.UpscaleConv2D("t/up", 3, 4, 5)):
        assert layer.bias is None
        assert [v.name for v in layer.trainable_variables] == [layer.weight.name]
        assert layer.weight.name.endswith("/weight:0")


# ---------------------------------------------------------------------------------------------
# Pixel norm, blur
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [0.1, 1.0, 1000.0])
def test_pixel_norm_unit_mean_square(scale):
    x = normal((2, 5, 4, 7), scale=scale)
    y = network.pixel_norm(tf.constant(x)).numpy()
    np.testing.assert_allclose(np.mean(y.astype(np.float64) ** 2, axis=-1), 1.0, rtol=1e-5)
    expected = x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True) + 1e-8)
    np.testing.assert_allclose(y, expected, rtol=1e-5)


def test_pixel_norm_zero_and_float16():
    assert np.all(network.pixel_norm(tf.zeros([1, 2, 2, 3])).numpy() == 0.0)
    y = network.pixel_norm(tf.constant(normal((1, 3, 3, 8), scale=0.05), dtype=tf.float16))
    assert y.dtype == tf.float16
    np.testing.assert_allclose(np.mean(y.numpy().astype(np.float64) ** 2, axis=-1), 1.0, rtol=1e-2)


def test_blur_forward():
    x = normal((2, 7, 6, 3))
    np.testing.assert_allclose(network.blur(tf.constant(x)).numpy(), np_depthwise(x, BLUR), rtol=1e-5,
                               atol=1e-6)


def test_blur_gradient_is_blur_and_so_is_its_gradient():
    x, u, v = (tf.constant(normal((2, 7, 6, 3), seed=s)) for s in (1, 2, 3))
    with tf.GradientTape() as outer:
        outer.watch(u)
        with tf.GradientTape() as inner:
            inner.watch(x)
            loss = tf.reduce_sum(network.blur(x) * u)
        dx = inner.gradient(loss, x)
        second = tf.reduce_sum(dx * v)
    du = outer.gradient(second, u)
    np.testing.assert_allclose(dx.numpy(), np_depthwise(u.numpy(), BLUR), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(du.numpy(), np_depthwise(v.numpy(), BLUR), rtol=1e-5, atol=1e-6)
    # and it is the exact gradient: the one TensorFlow derives for the plain depthwise conv
    with tf.GradientTape() as tape:
        tape.watch(x)
        plain = tf.reduce_sum(network._depthwise_blur(x) * u)
    np.testing.assert_allclose(dx.numpy(), tape.gradient(plain, x).numpy(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Fused resampling convs
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ksize", [1, 3, 5])
def test_fused_kernel_construction(ksize):
    w = normal((ksize, ksize, 2, 3))
    k = network.fused_kernel(tf.constant(w)).numpy()
    assert k.shape == (ksize + 1, ksize + 1, 2, 3)
    np.testing.assert_allclose(k, np_fused_kernel(w), rtol=1e-6, atol=1e-6)
    # the same kernel, written as the spec says: pad to (k+2)x(k+2), add the 4 shifted copies
    p = np.pad(w, [(1, 1), (1, 1), (0, 0), (0, 0)])
    np.testing.assert_allclose(k, p[1:, 1:] + p[:-1, 1:] + p[1:, :-1] + p[:-1, :-1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("height, width", [(8, 8), (7, 9)])
def test_downscale_conv_output(height, width):
    layer = network.DownscaleConv2D("t/down", 3, 3, 5)
    x = normal((2, height, width, 3))
    y = layer(tf.constant(x)).numpy()
    assert y.shape == (2, -(-height // 2), -(-width // 2), 5)
    kernel = 0.25 * np_fused_kernel(layer.weight.numpy() * layer.runtime_scale)
    np.testing.assert_allclose(y, np_conv2d(x, kernel, stride=2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("height, width", [(4, 4), (5, 3)])
def test_upscale_conv_output(height, width):
    layer = network.UpscaleConv2D("t/up", 3, 3, 5)
    x = normal((2, height, width, 3))
    y = layer(tf.constant(x)).numpy()
    assert y.shape == (2, 2 * height, 2 * width, 5)
    # weight [k, k, c_in, c_out] with fan_in k*k*c_in, transposed to conv2d_transpose's [k, k, c_out, c_in]
    w = np.transpose(layer.weight.numpy() * layer.runtime_scale, [0, 1, 3, 2])
    assert layer.runtime_scale == pytest.approx(math.sqrt(2.0 / (9 * 3)))
    np.testing.assert_allclose(y, np_conv2d_transpose(x, np_fused_kernel(w)), rtol=1e-5, atol=1e-5)


def test_transposed_conv_reference_is_the_adjoint_of_the_conv_reference():
    """Guard for the numpy reference itself: <conv(z), x> == <z, conv_transpose(x)>."""
    k = normal((4, 4, 2, 3), seed=7)
    x, z = normal((1, 3, 5, 3), seed=8), normal((1, 6, 10, 2), seed=9)
    lhs = np.sum(np_conv2d(z, k, stride=2) * x)
    rhs = np.sum(z * np_conv2d_transpose(x, k))
    assert lhs == pytest.approx(rhs, rel=1e-9)


# ---------------------------------------------------------------------------------------------
# Minibatch standard deviation
# ---------------------------------------------------------------------------------------------

EXPECTED_GROUPS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 1, 6: 3, 7: 1, 8: 4, 9: 3}


def test_minibatch_stddev_adds_one_constant_channel():
    x = normal((4, 5, 6, 3))
    y = network.minibatch_stddev(tf.constant(x)).numpy()
    assert y.shape == (4, 5, 6, 4)
    np.testing.assert_array_equal(y[..., :3], x)
    assert np.all(y[..., 3] == y[:, :1, :1, 3])


def test_minibatch_stddev_strided_grouping():
    x = normal((8, 3, 4, 5), seed=4)
    y = network.minibatch_stddev(tf.constant(x)).numpy()
    np.testing.assert_allclose(y, np_minibatch_stddev(x, 4), rtol=1e-5)
    # the two groups are {0, 2, 4, 6} and {1, 3, 5, 7}, not {0..3} and {4..7}
    contiguous = [np.sqrt(x[s].astype(np.float64).var(axis=0) + 1e-8).mean() for s in (slice(0, 4),
                                                                                          slice(4, 8))]
    assert not np.isclose(y[0, 0, 0, -1], contiguous[0], rtol=1e-4)
    assert y[0, 0, 0, -1] == y[2, 0, 0, -1] and y[1, 0, 0, -1] == y[7, 0, 0, -1]
    assert y[0, 0, 0, -1] != y[1, 0, 0, -1]


@pytest.mark.parametrize("batch", sorted(EXPECTED_GROUPS))
def test_minibatch_stddev_any_batch_size(batch, caplog):
    group = EXPECTED_GROUPS[batch]
    assert network.minibatch_group_size(batch) == group
    x = normal((batch, 3, 2, 4), seed=batch)
    with caplog.at_level(logging.INFO, logger=network.logger.name):
        y = network.minibatch_stddev(tf.constant(x)).numpy()
    np.testing.assert_allclose(y, np_minibatch_stddev(x, group), rtol=1e-5)
    if group == min(4, batch):
        assert "groups of" not in caplog.text
    else:
        assert f"groups of {group}" in caplog.text
    if batch == 1:
        np.testing.assert_allclose(y[..., -1], 1e-4, rtol=1e-3)  # sqrt(0 + 1e-8)


def test_minibatch_stddev_unknown_batch_in_tf_function():
    fn = tf.function(network.minibatch_stddev,
                     input_signature=[tf.TensorSpec([None, 3, 2, 4], tf.float32)])
    for batch in (1, 3, 4, 5, 6, 8, 9):
        x = normal((batch, 3, 2, 4), seed=10 + batch)
        y = fn(tf.constant(x)).numpy()
        np.testing.assert_allclose(y, np_minibatch_stddev(x, EXPECTED_GROUPS[batch]), rtol=1e-5)
    assert fn.experimental_get_tracing_count() == 1


# ---------------------------------------------------------------------------------------------
# Downscaling of real HR images, previews
# ---------------------------------------------------------------------------------------------

def test_downscale_factors():
    x = normal((2, 16, 12, 3))
    np.testing.assert_array_equal(network.downscale(tf.constant(x), 1).numpy(), x)
    half = network.downscale(tf.constant(x), 2).numpy()
    assert half.shape == (2, 8, 6, 3)
    np.testing.assert_allclose(half, np_depthwise(x, BLUR, stride=2), rtol=1e-5, atol=1e-6)
    quarter = network.downscale(tf.constant(x), 4).numpy()
    np.testing.assert_allclose(quarter, x.reshape(2, 4, 4, 3, 4, 3).mean(axis=(2, 4)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        network.downscale(tf.constant(x), 3)


def test_nice_preview():
    x = normal((2, 6, 5, 5), seed=6)
    x[..., 1] = 1000.0 * x[..., 1] + 3000.0  # each band is stretched on its own
    preview = network.nice_preview(tf.constant(x)).numpy()
    assert preview.dtype == np.uint8 and preview.shape == (2, 6, 5, 3)
    rgb = x[..., :3].astype(np.float64)
    low = rgb.mean(axis=(0, 1, 2)) - 2 * rgb.std(axis=(0, 1, 2))
    high = rgb.mean(axis=(0, 1, 2)) + 2 * rgb.std(axis=(0, 1, 2))
    expected = 255.0 * np.clip((rgb - low) / (high - low), 0.0, 1.0)
    assert np.max(np.abs(preview - expected)) <= 1.0
    assert preview.min() == 0 and preview.max() == 255  # N(0, 1) data goes beyond +/- 2 std
    other = x.copy()
    other[..., 3:] = 0.0  # bands 4 and 5 are not shown
    np.testing.assert_array_equal(network.nice_preview(tf.constant(other)).numpy(), preview)
    single = network.nice_preview(tf.constant(x[..., :1])).numpy()
    assert single.dtype == np.uint8 and single.shape == (2, 6, 5, 1)


# ---------------------------------------------------------------------------------------------
# Generator and discriminator: shapes, variables
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("nbands", [1, 3, 4, 5])
def test_shapes(nbands):
    tf.random.set_seed(nbands)
    gen = network.Generator(nbands, nresblocks=1, dim=4)
    dis = network.Discriminator(dim=4)
    for batch, height, width in [(1, 8, 8), (2, 12, 16), (3, 9, 7)]:
        out = gen(tf.constant(normal((batch, height, width, nbands))))
        assert sorted(out) == [1, 2, 4]
        for f in FACTORS:
            assert tuple(out[f].shape) == (batch, 4 * height // f, 4 * width // f, nbands)
            assert out[f].dtype == tf.float32
        scores = dis(out)
        assert tuple(scores.shape) == (batch, 1) and np.all(np.isfinite(scores.numpy()))


def conv_count(ksize: int, c_in: int, c_out: int, bias: bool = True) -> int:
    return ksize * ksize * c_in * c_out + (c_out if bias else 0)


def spec_generator_count(c: int, d: int, n: int) -> tuple[int, int]:
    """(parameters, variables) of docs/DESIGN.md §3's layer list."""
    layers = [(9, c, d, True)]                                            # encoder conv 9x9
    layers += [(3, d, d, True)] * (2 * n)                                 # residual blocks
    layers += [(3, d, d, True), (1, d, c, True)]                          # scale 4 + output
    for c_in, last_ksize in ((d, 5), (4 * d, 9)):                          # scale 2, scale 1
        layers += [(3, c_in, 4 * d, False)]                                # fused upscale conv
        layers += [(k, 4 * d, 4 * d, True) for k in (3, 3, last_ksize)]
        layers += [(1, 4 * d, c, True)]                                    # output
    return sum(conv_count(*layer) for layer in layers), sum(2 if layer[3] else 1 for layer in layers)


def spec_discriminator_count(c: int, d: int) -> tuple[int, int]:
    """(parameters, variables) of docs/DESIGN.md §4's layer list; "+ 1" is the minibatch-stddev map."""
    layers = [(1, c, d, True), (3, d + 1, d, True), (3, d, d, True), (3, d, d, True), (3, d, d, False)]
    layers += [(1, c, d, True), (3, d + d + 1, 2 * d, True), (3, 2 * d, 2 * d, True), (3, 2 * d, 2 * d, True),
               (3, 2 * d, 2 * d, False)]
    layers += [(1, c, 2 * d, True), (3, 2 * d + 2 * d + 1, 4 * d, True), (3, 4 * d, 4 * d, False)]
    layers += [(3, 4 * d, 8 * d, True), (3, 8 * d, 8 * d, False), (1, 8 * d + 1, 16 * d, True),
               (1, 16 * d, 1, True)]
    return sum(conv_count(*layer) for layer in layers), sum(2 if layer[3] else 1 for layer in layers)


def counts(module: tf.Module) -> tuple[int, int]:
    variables = module.trainable_variables
    return sum(int(np.prod(v.shape)) for v in variables), len(variables)


@pytest.mark.parametrize("nbands, dim, nresblocks", [(4, 64, 16), (1, 4, 1), (5, 8, 2), (3, 6, 0)])
def test_trainable_variable_counts_follow_the_spec(nbands, dim, nresblocks):
    gen = network.Generator(nbands, nresblocks=nresblocks, dim=dim)
    dis = network.Discriminator(dim=dim)
    dis.build(nbands)
    assert counts(gen) == spec_generator_count(nbands, dim, nresblocks)
    assert counts(dis) == spec_discriminator_count(nbands, dim)
    if (nbands, dim, nresblocks) == (4, 64, 16):  # the defaults, as reported in the issue
        assert counts(gen) == (11_286_668, 2 + 4 * 16 + 4 + 9 + 9)
        assert counts(dis) == (5_989_889, 30)


def test_variable_names_follow_the_original_scoping():
    gen = network.Generator(3, nresblocks=2, dim=4)
    dis = network.Discriminator(dim=4)
    dis.build(3)

    def both(*scopes):
        return [f"{s}/{v}" for s in scopes for v in ("weight", "bias")]

    expected_gen = both("gen/encoder/conv1_9x9", "gen/encoder/ResBlock0/conv1", "gen/encoder/ResBlock0/conv2",
                        "gen/encoder/ResBlock1/conv1", "gen/encoder/ResBlock1/conv2", "gen/res_1x/conv1",
                        "gen/res_1x/output")
    for scope in ("gen/res_2x", "gen/res_4x"):
        expected_gen += [f"{scope}/conv_upsample/weight"]
        expected_gen += both(f"{scope}/conv1", f"{scope}/conv2", f"{scope}/conv3", f"{scope}/output")
    expected_dis = both("dis/res_4x/from_input", "dis/res_4x/conv1", "dis/res_4x/conv2", "dis/res_4x/conv3")
    expected_dis += ["dis/res_4x/conv_down/weight"]
    expected_dis += both("dis/res_2x/from_input", "dis/res_2x/conv1", "dis/res_2x/conv2", "dis/res_2x/conv3")
    expected_dis += ["dis/res_2x/conv_down/weight"]
    expected_dis += both("dis/res_1x/from_input", "dis/res_1x/conv") + ["dis/res_1x/conv_down/weight"]
    expected_dis += both("dis/bn/conv1") + ["dis/bn/conv_down1/weight"]
    expected_dis += both("dis/bn/dense1", "dis/bn/dense2")

    for module, expected in ((gen, expected_gen), (dis, expected_dis)):
        names = [v.name for v in module.trainable_variables]
        assert len(names) == len(set(names))
        assert sorted(names) == sorted(f"{name}:0" for name in expected)
    # kernel sizes where the names alone would not tell
    shapes = {v.name: tuple(v.shape) for v in gen.trainable_variables + dis.trainable_variables}
    assert shapes["gen/res_2x/conv3/weight:0"] == (5, 5, 16, 16)
    assert shapes["gen/res_4x/conv3/weight:0"] == (9, 9, 16, 16)
    assert shapes["gen/res_2x/conv_upsample/weight:0"] == (3, 3, 4, 16)
    assert shapes["dis/res_2x/conv1/weight:0"] == (3, 3, 9, 8)
    assert shapes["dis/bn/dense1/weight:0"] == (1, 1, 33, 64)


# ---------------------------------------------------------------------------------------------
# Behaviour: training steps, dependence on the scales, determinism, tf.function, float16
# ---------------------------------------------------------------------------------------------

def l1_loss(out: dict[int, tf.Tensor], target: dict[int, tf.Tensor]) -> tf.Tensor:
    return tf.add_n([tf.reduce_mean(tf.abs(out[f] - target[f])) for f in FACTORS])


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_generator_steps_lower_l1(optimizer):
    tf.random.set_seed(11)
    gen = network.Generator(3, nresblocks=1, dim=8)
    lr = tf.constant(normal((2, 8, 8, 3), seed=12))
    target = hr_scales(2, 32, 3, seed=13)
    opt = tf.keras.optimizers.Adam(1e-2) if optimizer == "adam" else tf.keras.optimizers.SGD(1e-1)
    losses = []
    for _ in range(6):
        with tf.GradientTape() as tape:
            loss = l1_loss(gen(lr), target)
        grads = tape.gradient(loss, gen.trainable_variables)
        assert all(g is not None for g in grads)
        opt.apply_gradients(zip(grads, gen.trainable_variables, strict=True))
        losses.append(float(loss))
    final = float(l1_loss(gen(lr), target))
    assert final < 0.9 * losses[0], losses + [final]


def test_discriminator_score_depends_on_each_scale():
    tf.random.set_seed(10)
    dis = network.Discriminator(dim=4)
    images = hr_scales(4, 16, 3)
    base = dis(images).numpy()
    for f in FACTORS:
        changed = dict(images)
        changed[f] = images[f] + tf.constant(normal(images[f].shape, seed=20 + f, scale=0.5))
        diff = np.abs(dis(changed).numpy() - base)
        assert np.all(diff > 1e-6 * np.abs(base).max()), (f, diff)


def test_determinism_with_a_fixed_seed():
    lr = tf.constant(normal((2, 8, 8, 3)))

    def build(seed):
        tf.random.set_seed(seed)
        gen = network.Generator(3, nresblocks=1, dim=4)
        dis = network.Discriminator(dim=4)
        out = gen(lr)
        return gen, dis, out, dis(out)

    gen_a, dis_a, out_a, score_a = build(5)
    gen_b, dis_b, out_b, score_b = build(5)
    for va, vb in zip(gen_a.trainable_variables + dis_a.trainable_variables,
                      gen_b.trainable_variables + dis_b.trainable_variables, strict=True):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    for f in FACTORS:
        np.testing.assert_array_equal(out_a[f].numpy(), out_b[f].numpy())
    np.testing.assert_array_equal(score_a.numpy(), score_b.numpy())
    np.testing.assert_array_equal(gen_a(lr)[1].numpy(), out_a[1].numpy())  # the forward pass is not random
    gen_c, *_ = build(6)
    assert not np.array_equal(gen_c.trainable_variables[1].numpy(), gen_a.trainable_variables[1].numpy())


def test_discriminator_in_tf_function_with_unknown_batch():
    dis = network.Discriminator(dim=4)
    dis.build(2)
    randomize_biases(dis)
    spec = {f: tf.TensorSpec([None, 16 // f, 16 // f, 2], tf.float32) for f in FACTORS}
    fn = tf.function(dis, input_signature=[spec])
    for batch in (6, 4, 5):
        images = hr_scales(batch, 16, 2, seed=batch)
        np.testing.assert_allclose(fn(images).numpy(), dis(images).numpy(), rtol=1e-5, atol=1e-6)
    assert fn.experimental_get_tracing_count() == 1


def test_discriminator_variables_created_inside_tf_function():
    """The usual training step: a tf.function whose first call builds the discriminator."""
    tf.random.set_seed(9)
    dis = network.Discriminator(dim=4)
    step = tf.function(lambda images: dis(images))
    images = hr_scales(4, 16, 2)
    scores = step(images).numpy()
    eager = network.Discriminator(dim=4)
    eager.build(2)
    names = sorted(v.name for v in dis.trainable_variables)
    assert len(names) == 30 and names == sorted(v.name for v in eager.trainable_variables)
    np.testing.assert_allclose(dis(images).numpy(), scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(step(hr_scales(6, 16, 2)).numpy(), dis(hr_scales(6, 16, 2)).numpy(), rtol=1e-5,
                               atol=1e-6)


def test_float16_inputs():
    tf.random.set_seed(8)
    gen = network.Generator(3, nresblocks=1, dim=4)
    dis = network.Discriminator(dim=4)
    randomize_biases(gen)
    lr = normal((2, 8, 8, 3), scale=0.5)
    ref = gen(tf.constant(lr))
    ref_score = dis(ref).numpy()
    with tf.GradientTape() as tape:
        out = gen(tf.constant(lr, dtype=tf.float16))
        score = dis(out)
        loss = tf.reduce_sum(tf.cast(score, tf.float32))
    for f in FACTORS:
        assert out[f].dtype == tf.float16
        scale = np.abs(ref[f].numpy()).max()
        assert np.max(np.abs(out[f].numpy().astype(np.float32) - ref[f].numpy())) < 2e-2 * scale
    assert score.dtype == tf.float16
    np.testing.assert_allclose(score.numpy().astype(np.float32), ref_score, rtol=2e-2,
                               atol=2e-2 * np.abs(ref_score).max())
    grads = tape.gradient(loss, gen.trainable_variables + dis.trainable_variables)
    assert all(g is not None and g.dtype == tf.float32 and np.all(np.isfinite(g.numpy())) for g in grads)


@pytest.mark.parametrize("nbands", [1, 4])
def test_pixelshuffle_generator_shapes_variables_and_cost(nbands):
    lr = tf.random.uniform([2, 7, 9, nbands], seed=3)
    shuffle = network.Generator(nbands, nresblocks=2, dim=8, upsampling="pixelshuffle")
    out = shuffle(lr)
    assert {f: tuple(out[f].shape) for f in constants.FACTORS} == {
        1: (2, 28, 36, nbands), 2: (2, 14, 18, nbands), 4: (2, 7, 9, nbands)}
    original = {v.name: v.shape for v in network.Generator(nbands, 2, 8).trainable_variables}
    names = {v.name: v.shape for v in shuffle.trainable_variables}
    # the encoder and the LR-resolution output are the original's; the x2/x4 stages are two 3x3 convs
    assert {k: v for k, v in original.items() if "res_2x" not in k and "res_4x" not in k} == \
        {k: v for k, v in names.items() if "res_2x" not in k and "res_4x" not in k}
    assert names["gen/res_2x/subpixel/weight:0"] == (3, 3, 8, 4 * nbands)
    assert names["gen/res_4x/subpixel/weight:0"] == (3, 3, 8, 16 * nbands)
    assert sum(np.prod(s) for s in names.values()) < sum(np.prod(s) for s in original.values()) / 2


def test_pixelshuffle_heads_place_each_phase_where_depth_to_space_puts_it():
    """A head whose conv copies channel k of the centre tap to output phase k: the x4 output of a constant
    LR image of value v puts 16 different values, in raster order, in each 4x4 block."""
    head = network._SubpixelHead("gen/res_4x", dim=16, nchannels=1, factor=4, zero_output=False)
    kernel = np.zeros((3, 3, 16, 16), np.float32)
    kernel[1, 1] = np.eye(16) / head.conv.runtime_scale
    head.conv.weight.assign(kernel)
    head.conv.bias.assign(np.zeros(16, np.float32))
    features = tf.reshape(tf.range(16, dtype=tf.float32), [1, 1, 1, 16]) * tf.ones([1, 3, 3, 16])
    out = head(features).numpy()[0, :, :, 0]
    np.testing.assert_allclose(out[4:8, 4:8], np.arange(16).reshape(4, 4), atol=1e-5)


@pytest.mark.parametrize("residual", ["bicubic", "linear"])
def test_an_untrained_residual_pixelshuffle_generator_is_its_skip(residual):
    generator = network.Generator(3, nresblocks=1, dim=4, residual=residual, upsampling="pixelshuffle")
    lr = tf.random.uniform([1, 12, 12, 3], seed=4)
    out = generator(lr)
    for factor in constants.FACTORS:
        expected = network.upsample_bicubic(lr, constants.SCALE // factor)
        m = 3 * (constants.SCALE // factor)  # mirrored (linear skip) and clamped (bicubic) borders differ
        np.testing.assert_allclose(out[factor].numpy()[:, m:-m, m:-m], expected.numpy()[:, m:-m, m:-m],
                                   atol=1e-5)


def test_an_unknown_upsampling_is_refused():
    with pytest.raises(ValueError, match="unknown upsampling"):
        network.Generator(3, upsampling="nearest")
