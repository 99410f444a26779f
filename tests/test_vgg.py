"""VGG19 perceptual loss: feature sets, preprocessing against numpy, weights file errors."""
import numpy as np
import pytest
import tensorflow as tf
from helpers import write_random_vgg19

import vgg
from errors import SR4RSError


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    return write_random_vgg19(str(tmp_path_factory.mktemp("vgg") / "vgg19.npy"))


def features(path, mode):
    return vgg.VGG19Features(vgg.load_vgg19_weights(path, mode), mode)


@pytest.mark.parametrize("mode, shapes", [
    ("1234", [(16, 16, 64), (8, 8, 128), (4, 4, 256), (2, 2, 512)]),
    ("1234lin", [(32, 32, 64), (16, 16, 128), (8, 8, 256), (4, 4, 512), (2, 2, 512)]),
    ("vgg344454", [(8, 8, 256), (4, 4, 512), (2, 2, 512)]),
    ("vgg54", [(2, 2, 512)]),
    ("vgg54lin", [(2, 2, 512)]),
])
def test_feature_sets_have_the_right_maps(vgg_file, mode, shapes):
    maps = features(vgg_file, mode)(tf.random.uniform([2, 32, 32, 3]))
    assert [tuple(m.shape[1:]) for m in maps] == shapes


def test_relu_features_are_the_linear_ones_rectified(vgg_file):
    image = tf.random.uniform([1, 16, 16, 3], seed=1)
    (linear,) = features(vgg_file, "vgg54lin")(image)
    (rectified,) = features(vgg_file, "vgg54")(image)
    np.testing.assert_allclose(rectified.numpy(), np.maximum(linear.numpy(), 0), atol=1e-5)


def _numpy_conv3x3(x, kernel, bias):
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    out = np.zeros(x.shape[:2] + (kernel.shape[-1],), np.float64)
    for dy in range(3):
        for dx in range(3):
            out += padded[dy:dy + x.shape[0], dx:dx + x.shape[1]] @ kernel[dy, dx]
    return out + bias


def test_first_block_matches_numpy_with_bgr_means_and_clipping(vgg_file):
    weights = vgg.load_vgg19_weights(vgg_file, "1234")
    rng = np.random.default_rng(3)
    rgb = rng.uniform(-0.2, 1.2, (6, 6, 3)).astype(np.float32)  # out of [0, 1]: clipped
    x = 255.0 * np.clip(rgb, 0, 1)
    bgr = np.stack([x[..., 2] - 103.939, x[..., 1] - 116.779, x[..., 0] - 123.68], axis=-1)
    y = np.maximum(_numpy_conv3x3(bgr, *weights["conv1_1"]), 0)
    y = np.maximum(_numpy_conv3x3(y, *weights["conv1_2"]), 0)
    pool1 = y.reshape(3, 2, 3, 2, 64).max(axis=(1, 3))
    got = features(vgg_file, "1234")(tf.constant(rgb[np.newaxis]))[0].numpy()[0]
    np.testing.assert_allclose(got, pool1, rtol=1e-4, atol=1e-2)


def test_perceptual_loss_is_zero_for_identical_images_and_uses_three_bands(vgg_file):
    extractor = features(vgg_file, "1234")
    image = tf.random.uniform([2, 16, 16, 4], seed=2)
    assert float(vgg.perceptual_loss(extractor, image, image)) == 0.0
    other_nir = tf.concat([image[..., :3], tf.zeros([2, 16, 16, 1])], axis=-1)
    assert float(vgg.perceptual_loss(extractor, image, other_nir)) == 0.0
    assert float(vgg.perceptual_loss(extractor, image, image * 0.5)) > 0.0


def test_only_the_layers_a_feature_set_needs_are_required(tmp_path):
    path = write_random_vgg19(str(tmp_path / "partial.npy"), skip=("conv5_1", "conv5_4"))
    assert len(vgg.load_vgg19_weights(path, "1234")) == 12
    with pytest.raises(SR4RSError, match="conv5_1 is missing"):
        vgg.load_vgg19_weights(path, "vgg54")


def test_weights_file_errors_name_the_file(tmp_path):
    with pytest.raises(SR4RSError, match="nope.npy: no such"):
        vgg.load_vgg19_weights(str(tmp_path / "nope.npy"), "1234")
    text = tmp_path / "text.npy"
    text.write_text("not numpy")
    with pytest.raises(SR4RSError, match="text.npy: not a vgg19.npy"):
        vgg.load_vgg19_weights(str(text), "1234")
    array = tmp_path / "array.npy"
    np.save(array, np.zeros(3))
    with pytest.raises(SR4RSError, match="array.npy: not a vgg19.npy"):
        vgg.load_vgg19_weights(str(array), "1234")
    bad = tmp_path / "bad.npy"
    np.save(bad, {"conv1_1": [np.zeros((3, 3, 3, 32)), np.zeros(32)]}, allow_pickle=True)
    with pytest.raises(SR4RSError, match=r"bad.npy: layer conv1_1 has kernel \(3, 3, 3, 32\)"):
        vgg.load_vgg19_weights(str(bad), "1234")
    with pytest.raises(SR4RSError, match="unknown VGG features"):
        vgg.load_vgg19_weights(str(bad), "vgg99")
