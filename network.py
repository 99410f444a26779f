"""SR4RS networks on `tf.Module`: the layers (docs/DESIGN.md §2), the MSG-GAN generator (§3)
and the multi-scale discriminator (§4).

Variables carry the original SR4RS names (`gen/encoder/conv1_9x9/weight`, `dis/res_4x/from_input/bias`,
...) so that original checkpoints map onto them by name. Every layer casts its float32 variables to
the dtype of its input, so the networks also run in float16 / bfloat16 (mixed precision).
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

import constants
from logs import get_logger

logger = get_logger("network")

SKIP_RADIUS = 3
BLUR_FILTER = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]).astype(np.float32) / 16.0


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------

def lrelu(x: tf.Tensor) -> tf.Tensor:
    """Leaky ReLU, slope 0.2."""
    return tf.nn.leaky_relu(x, alpha=constants.LRELU_SLOPE)


def pixel_norm(x: tf.Tensor) -> tf.Tensor:
    """Normalize each pixel's feature vector to unit mean square: x / sqrt(mean(x^2) + 1e-8).

    Computed in float32 whatever the input dtype (1e-8 underflows in float16).
    """
    x32 = tf.cast(x, tf.float32)
    norm = tf.math.rsqrt(tf.reduce_mean(tf.square(x32), axis=-1, keepdims=True) + constants.PIXNORM_EPSILON)
    return tf.cast(x32 * norm, x.dtype)


def _depthwise_blur(x: tf.Tensor, stride: int = 1) -> tf.Tensor:
    """Depthwise [1, 2, 1] x [1, 2, 1] / 16 filter, SAME padding."""
    kernel = np.tile(BLUR_FILTER[:, :, np.newaxis, np.newaxis], [1, 1, int(x.shape[-1]), 1])
    return tf.nn.depthwise_conv2d(x, tf.constant(kernel, dtype=x.dtype), strides=[1, stride, stride, 1],
                                  padding="SAME")


@tf.custom_gradient
def blur(x: tf.Tensor):
    """Blur with the 3x3 binomial filter; its gradient (and the gradient's gradient) is the same blur."""

    @tf.custom_gradient
    def grad(dy: tf.Tensor):
        return _depthwise_blur(dy), _depthwise_blur

    return _depthwise_blur(x), grad


def downscale(x: tf.Tensor, factor: int) -> tf.Tensor:
    """Downscale a real HR image to a generator scale: 1 identity, 2 blur stride 2, 4 mean of 4x4."""
    if factor == 1:
        return x
    if factor == 2:
        return _depthwise_blur(x, stride=2)
    if factor == 4:
        return tf.nn.avg_pool2d(x, ksize=4, strides=4, padding="VALID")
    raise ValueError(f"unsupported scale factor {factor}")


def upsample_bicubic(x: tf.Tensor, factor: int) -> tf.Tensor:
    """Bicubic upsampling by an integer factor (Keys a = -0.5, pixel centres aligned), in float32."""
    x = tf.cast(x, tf.float32)
    if factor == 1:
        return x
    shape = tf.shape(x)
    return tf.image.resize(x, [factor * shape[1], factor * shape[2]], method="bicubic")


def bicubic_phase_kernel(factor: int, radius: int, nchannels: int) -> np.ndarray:
    """Kernel [2r+1, 2r+1, C, factor^2 C] of a conv whose output, rearranged by depth_to_space(factor),
    is the bicubic upsampling of each band (exactly, away from the image borders)."""
    size = 2 * radius + 1
    impulse = np.zeros((1, size, size, 1), np.float32)
    impulse[0, radius, radius, 0] = 1.0
    response = upsample_bicubic(tf.constant(impulse), factor).numpy()[0, :, :, 0]
    kernel = np.zeros((size, size, nchannels, factor * factor * nchannels), np.float32)
    for dy in range(size):
        for dx in range(size):
            # the output cell (2r - dy, 2r - dx) sees the impulse through kernel tap (dy, dx)
            cell = response[factor * (2 * radius - dy):][:factor, factor * (2 * radius - dx):][:, :factor]
            if cell.shape != (factor, factor):
                continue
            for c in range(nchannels):
                kernel[dy, dx, c, c::nchannels] = cell.reshape(-1)
    return kernel


class LinearSkip(tf.Module):
    """Learned linear upsampling by `factor`: a (2r+1)x(2r+1) conv from the C bands to factor^2 x C
    sub-pixel maps, rearranged with depth_to_space; borders mirrored. Starts as bicubic times `gain`.

    Args:
        scope: variable name prefix.
        nchannels: bands.
        factor: upsampling factor (1, 2 or 4).
        gain: initial gain (hr_scale / lr_scale).
        radius: half size of the conv window, in LR pixels.
    """

    def __init__(self, scope: str, nchannels: int, factor: int, gain: float, radius: int = SKIP_RADIUS):
        super().__init__(name=scope.rsplit("/", 1)[-1])
        self.factor, self.radius = factor, radius
        initial = gain * bicubic_phase_kernel(factor, radius, nchannels)
        self.kernel = tf.Variable(initial, name=f"{scope}/kernel")
        self.bias = tf.Variable(tf.zeros([factor * factor * nchannels]), name=f"{scope}/bias")

    def __call__(self, lr: tf.Tensor) -> tf.Tensor:
        r = self.radius
        x = tf.pad(tf.cast(lr, tf.float32), [[0, 0], [r, r], [r, r], [0, 0]], mode="SYMMETRIC")
        y = tf.nn.conv2d(x, self.kernel, strides=1, padding="VALID") + self.bias
        return tf.nn.depth_to_space(y, self.factor) if self.factor > 1 else y


def fused_kernel(weight: tf.Tensor) -> tf.Tensor:
    """Kernel of a fused resampling conv: the kxk weight zero-padded to (k+2)x(k+2), and its four copies
    shifted by one pixel in x and y summed, giving a (k+1)x(k+1) kernel."""
    w = tf.pad(weight, [[1, 1], [1, 1], [0, 0], [0, 0]])
    return w[1:, 1:] + w[:-1, 1:] + w[1:, :-1] + w[:-1, :-1]


def minibatch_group_size(batch: int, group_size: int = constants.MBSTD_GROUP_SIZE) -> int:
    """Largest group size <= min(group_size, batch) that divides the batch."""
    for size in range(min(group_size, batch), 0, -1):
        if batch % size == 0:
            return size
    return 1


def _dynamic_group_size(batch: tf.Tensor, group_size: int) -> tf.Tensor:
    candidates = tf.range(group_size, 0, -1)
    fits = tf.logical_and(tf.math.floormod(batch, candidates) == 0, candidates <= batch)
    return tf.gather(candidates, tf.argmax(tf.cast(fits, tf.int32)))


def minibatch_stddev(x: tf.Tensor, group_size: int = constants.MBSTD_GROUP_SIZE) -> tf.Tensor:
    """Append one feature map: the standard deviation of the features within groups of samples.

    Samples are grouped with a stride (sample i falls in group i mod N/g); the std over each group is
    averaged over H, W and C to one scalar, broadcast over H, W. A batch that is not a multiple of
    `group_size` uses the largest smaller group size that divides it.
    """
    batch = x.shape[0]
    if batch is not None:
        size = minibatch_group_size(batch, group_size)
        if size != min(group_size, batch):
            logger.info("Minibatch stddev: batch of %s is not a multiple of %s, using groups of %s",
                        batch, min(group_size, batch), size)
    else:
        size = _dynamic_group_size(tf.shape(x)[0], group_size)
    shape = tf.shape(x)
    y = tf.reshape(tf.cast(x, tf.float32), [size, -1, shape[1], shape[2], shape[3]])
    y = y - tf.reduce_mean(y, axis=0, keepdims=True)
    y = tf.sqrt(tf.reduce_mean(tf.square(y), axis=0) + constants.MBSTD_EPSILON)
    y = tf.reduce_mean(y, axis=[1, 2, 3], keepdims=True)
    y = tf.tile(tf.cast(y, x.dtype), [size, shape[1], shape[2], 1])
    return tf.concat([x, y], axis=-1)


class Conv2D(tf.Module):
    """Convolution with equalized learning rate: weight ~ N(0, 1), scaled at run time by
    sqrt(2 / fan_in); bias starts at 0. SAME padding.

    Args:
        scope: variable name prefix, e.g. `gen/encoder/conv1_9x9`.
        ksize: kernel size.
        c_in: input channels.
        c_out: output channels.
        use_bias: add a bias (fused resampling convs have none).
        zero_init: start with zero weights instead of N(0, 1) (the output convs of a residual generator).
    """

    def __init__(self, scope: str, ksize: int, c_in: int, c_out: int, use_bias: bool = True,
                 zero_init: bool = False):
        super().__init__()
        shape = [ksize, ksize, c_in, c_out]
        initial = tf.zeros(shape) if zero_init else tf.random.normal(shape)
        self.weight = tf.Variable(initial, name=f"{scope}/weight")
        self.bias = tf.Variable(tf.zeros([c_out]), name=f"{scope}/bias") if use_bias else None
        self.runtime_scale = math.sqrt(2.0) / math.sqrt(ksize * ksize * c_in)

    def scaled_weight(self) -> tf.Tensor:
        return self.weight * self.runtime_scale

    def _add_bias(self, y: tf.Tensor) -> tf.Tensor:
        return y if self.bias is None else y + tf.cast(self.bias, y.dtype)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        w = tf.cast(self.scaled_weight(), x.dtype)
        return self._add_bias(tf.nn.conv2d(x, w, strides=1, padding="SAME"))


class DownscaleConv2D(Conv2D):
    """Fused conv + 2x downscaling: the fused kernel times 0.25, stride 2, no bias."""

    def __init__(self, scope: str, ksize: int, c_in: int, c_out: int):
        super().__init__(scope, ksize, c_in, c_out, use_bias=False)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        w = tf.cast(fused_kernel(self.scaled_weight()) * 0.25, x.dtype)
        return tf.nn.conv2d(x, w, strides=2, padding="SAME")


class UpscaleConv2D(Conv2D):
    """Fused 2x upscaling + conv: transposed conv with the fused kernel, stride 2, no bias."""

    def __init__(self, scope: str, ksize: int, c_in: int, c_out: int):
        super().__init__(scope, ksize, c_in, c_out, use_bias=False)
        self.c_out = c_out

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        w = tf.transpose(self.scaled_weight(), [0, 1, 3, 2])
        w = tf.cast(fused_kernel(w), x.dtype)
        shape = tf.shape(x)
        out_shape = tf.stack([shape[0], 2 * shape[1], 2 * shape[2], self.c_out])
        return tf.nn.conv2d_transpose(x, w, output_shape=out_shape, strides=2, padding="SAME")


def nice_preview(x: tf.Tensor) -> tf.Tensor:
    """An 8-bit picture of a batch for TensorBoard: first 3 bands (1 band when fewer than 3),
    stretched between mean - 2 std and mean + 2 std of the whole batch, per band."""
    x = tf.cast(x[..., :3] if x.shape[-1] >= 3 else x[..., :1], tf.float32)
    mean, var = tf.nn.moments(x, axes=[0, 1, 2], keepdims=True)
    std = tf.sqrt(var)
    low = mean - 2.0 * std
    span = tf.maximum(4.0 * std, 1e-12)
    return tf.cast(255.0 * tf.clip_by_value((x - low) / span, 0.0, 1.0), tf.uint8)


# ---------------------------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------------------------

class _ResBlock(tf.Module):
    """x + pixnorm(conv(pixnorm(lrelu(conv(x)))))."""

    def __init__(self, scope: str, dim: int):
        super().__init__(name=scope.rsplit("/", 1)[-1])
        self.conv1 = Conv2D(f"{scope}/conv1", 3, dim, dim)
        self.conv2 = Conv2D(f"{scope}/conv2", 3, dim, dim)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        y = pixel_norm(lrelu(self.conv1(x)))
        return x + pixel_norm(self.conv2(y))


class _UpscaleStage(tf.Module):
    """Fused 2x upscaling conv, blur, lrelu, pixnorm, then conv + lrelu + pixnorm blocks; 1x1 output."""

    def __init__(self, scope: str, c_in: int, dim: int, ksizes: tuple[int, ...], nchannels: int,
                 zero_output: bool):
        super().__init__(name=scope.rsplit("/", 1)[-1])
        self.upsample = UpscaleConv2D(f"{scope}/conv_upsample", 3, c_in, dim)
        self.convs = [Conv2D(f"{scope}/conv{i + 1}", k, dim, dim) for i, k in enumerate(ksizes)]
        self.output = Conv2D(f"{scope}/output", 1, dim, nchannels, zero_init=zero_output)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        x = pixel_norm(lrelu(blur(self.upsample(x))))
        for conv in self.convs:
            x = pixel_norm(lrelu(conv(x)))
        return x


class _SubpixelHead(tf.Module):
    """An output at `factor` times the LR resolution from LR-resolution features: a 3x3 conv to
    factor^2 x C maps, rearranged by depth_to_space (ESPCN, Shi et al. 2016)."""

    def __init__(self, scope: str, dim: int, nchannels: int, factor: int, zero_output: bool):
        super().__init__(name=scope.rsplit("/", 1)[-1])
        self.factor = factor
        self.conv = Conv2D(f"{scope}/subpixel", 3, dim, factor * factor * nchannels, zero_init=zero_output)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.depth_to_space(self.conv(x), self.factor)


class Generator(tf.Module):
    """MSG-GAN generator: LR image (already times lr_scale) -> {1: 4x, 2: 2x, 4: 1x} images.

    Args:
        nchannels: number of bands of the LR and HR images.
        nresblocks: residual blocks in the encoder.
        dim: base depth.
        residual: None for the original network. "bicubic": each output is the bicubic upsampling of
            the input (times residual_gain) plus the network's output; "linear": the same with a learned
            linear upsampling (LinearSkip, starting as bicubic) instead. In both, the output convs start
            at zero, so the untrained generator is exactly the skip.
        residual_gain: hr_scale / lr_scale, turning scaled LR values into scaled HR values.
        upsampling: "transposed" for the original x2 and x4 stages (fused transposed conv, blur, then
            convolutions of 4 x dim maps at the x2 and x4 resolutions); "pixelshuffle": each of the x2 and
            x4 outputs is a sub-pixel convolution of the LR-resolution features (_SubpixelHead), which
            costs a small fraction of the original stages (docs/DESIGN.md §3).
    """

    def __init__(self, nchannels: int, nresblocks: int = 16, dim: int = 64, residual: str | None = None,
                 residual_gain: float = 1.0, upsampling: str = "transposed"):
        super().__init__(name=constants.GEN_SCOPE)
        if residual not in constants.RESIDUALS:
            raise ValueError(f"unknown residual {residual}")
        if upsampling not in constants.UPSAMPLINGS:
            raise ValueError(f"unknown upsampling {upsampling}")
        self.upsampling = upsampling
        scope = constants.GEN_SCOPE
        self.nchannels = nchannels
        self.residual = residual
        self.residual_gain = residual_gain
        if residual == "linear":
            # one per output scale, in constants.FACTORS order (a list: checkpoints need string dict keys)
            self.skips = [LinearSkip(f"{scope}/skip_{f}x", nchannels, constants.SCALE // f, residual_gain)
                          for f in constants.FACTORS]
        zero = residual is not None
        self.conv1 = Conv2D(f"{scope}/encoder/conv1_9x9", 9, nchannels, dim)
        self.resblocks = [_ResBlock(f"{scope}/encoder/ResBlock{i}", dim) for i in range(nresblocks)]
        self.lr_conv = Conv2D(f"{scope}/res_1x/conv1", 3, dim, dim)
        self.lr_output = Conv2D(f"{scope}/res_1x/output", 1, dim, nchannels, zero_init=zero)
        if upsampling == "pixelshuffle":
            self.heads = [_SubpixelHead(f"{scope}/res_{s}x", dim, nchannels, s, zero) for s in (2, 4)]
        else:
            self.half = _UpscaleStage(f"{scope}/res_2x", dim, 4 * dim, (3, 3, 5), nchannels, zero)
            self.full = _UpscaleStage(f"{scope}/res_4x", 4 * dim, 4 * dim, (3, 3, 9), nchannels, zero)

    def __call__(self, lr: tf.Tensor) -> dict[int, tf.Tensor]:
        skip = lrelu(self.conv1(lr))
        net = skip
        for block in self.resblocks:
            net = block(net)
        net = pixel_norm(self.lr_conv(net)) + skip
        outputs = {4: self.lr_output(net)}
        if self.upsampling == "pixelshuffle":
            outputs[2], outputs[1] = (head(net) for head in self.heads)
        else:
            net = self.half(net)
            outputs[2] = self.half.output(net)
            net = self.full(net)
            outputs[1] = self.full.output(net)
        for i, factor in enumerate(constants.FACTORS if self.residual else ()):
            if self.residual == "linear":
                skip = self.skips[i](lr)
            else:
                skip = self.residual_gain * upsample_bicubic(lr, constants.SCALE // factor)
            outputs[factor] = tf.cast(outputs[factor], tf.float32) + skip  # the sum in float32
        return outputs


# ---------------------------------------------------------------------------------------------
# Discriminator
# ---------------------------------------------------------------------------------------------

class _DiscriminatorStage(tf.Module):
    """combine(image, k, previous) -> 3x3 convs -> fused downscale conv + lrelu."""

    def __init__(self, scope: str, nchannels: int, from_dim: int, c_prev: int, dim: int, nconvs: int):
        super().__init__(name=scope.rsplit("/", 1)[-1])
        self.from_input = Conv2D(f"{scope}/from_input", 1, nchannels, from_dim)
        c_in = from_dim + c_prev + 1
        names = ["conv"] if nconvs == 1 else [f"conv{i + 1}" for i in range(nconvs)]
        self.convs = []
        for name in names:
            self.convs.append(Conv2D(f"{scope}/{name}", 3, c_in, dim))
            c_in = dim
        self.conv_down = DownscaleConv2D(f"{scope}/conv_down", 3, dim, dim)

    def __call__(self, image: tf.Tensor, previous: tf.Tensor | None) -> tf.Tensor:
        x = lrelu(self.from_input(image))
        if previous is not None:
            x = tf.concat([x, previous], axis=-1)
        x = minibatch_stddev(x)
        for conv in self.convs:
            x = lrelu(conv(x))
        return lrelu(self.conv_down(x))


class Discriminator(tf.Module):
    """Multi-scale discriminator: {1: HR, 2: HR/2, 4: HR/4} (already times hr_scale) -> scores [N, 1].

    Its variables are created on the first call, from the band count of the input.

    Args:
        dim: base depth.
    """

    def __init__(self, dim: int = 64):
        super().__init__(name=constants.DIS_SCOPE)
        self.dim = dim
        self.stages: list[_DiscriminatorStage] = []

    def build(self, nchannels: int) -> None:
        """Create the variables for images of `nchannels` bands (done by the first call otherwise)."""
        if self.stages:
            return
        scope, d = constants.DIS_SCOPE, self.dim
        self.stages = [
            _DiscriminatorStage(f"{scope}/res_4x", nchannels, d, 0, d, 3),
            _DiscriminatorStage(f"{scope}/res_2x", nchannels, d, d, 2 * d, 3),
            _DiscriminatorStage(f"{scope}/res_1x", nchannels, 2 * d, 2 * d, 4 * d, 1),
        ]
        self.bn_conv = Conv2D(f"{scope}/bn/conv1", 3, 4 * d, 8 * d)
        self.bn_down = DownscaleConv2D(f"{scope}/bn/conv_down1", 3, 8 * d, 8 * d)
        self.dense1 = Conv2D(f"{scope}/bn/dense1", 1, 8 * d + 1, 16 * d)
        self.dense2 = Conv2D(f"{scope}/bn/dense2", 1, 16 * d, 1)

    def __call__(self, images: dict[int, tf.Tensor]) -> tf.Tensor:
        self.build(int(images[1].shape[-1]))
        net = None
        for factor, stage in zip(constants.FACTORS, self.stages, strict=True):
            net = stage(images[factor], net)
        net = lrelu(self.bn_down(lrelu(self.bn_conv(net))))
        net = minibatch_stddev(net)
        net = self.dense2(lrelu(self.dense1(net)))
        return tf.reduce_mean(net, axis=[1, 2])
