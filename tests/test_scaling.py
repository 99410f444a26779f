"""scaling.Scaling: the original scales, --normalize's standardization, the residual gain, round trips."""
import numpy as np
import pytest
import tensorflow as tf

from scaling import Scaling


def test_the_original_scaling_multiplies_by_the_scales():
    scaling = Scaling.scales(3, 1e-4, 2e-4)
    raw = np.full((1, 2, 2, 3), 5000.0, np.float32)
    np.testing.assert_allclose(scaling.lr(raw).numpy(), 0.5)
    np.testing.assert_allclose(scaling.hr(raw).numpy(), 1.0)
    assert scaling.residual_gain == pytest.approx(2.0)


def test_standardize_centres_and_reduces_each_band_and_round_trips():
    rng = np.random.default_rng(0)
    raw = rng.normal([7000.0, 300.0], [400.0, 20.0], (4, 16, 16, 2)).astype(np.float32)
    scaling = Scaling.standardize(raw.mean(axis=(0, 1, 2)), raw.std(axis=(0, 1, 2)))
    values = scaling.lr(tf.constant(raw)).numpy()
    np.testing.assert_allclose(values.mean(axis=(0, 1, 2)), 0.0, atol=1e-3)
    np.testing.assert_allclose(values.std(axis=(0, 1, 2)), 1.0, atol=1e-3)
    np.testing.assert_allclose(scaling.hr_to_raw(scaling.hr(tf.constant(raw))).numpy(), raw, rtol=1e-6)
    assert scaling.residual_gain == 1.0


def test_a_constant_band_keeps_gain_one_and_unequal_gain_ratios_are_refused():
    assert Scaling.standardize([3.0, 4.0], [0.0, 2.0]).lr_gain == (1.0, 0.5)
    with pytest.raises(ValueError, match="differs between bands"):
        _ = Scaling((0.0, 0.0), (1.0, 1.0), (0.0, 0.0), (1.0, 2.0)).residual_gain
