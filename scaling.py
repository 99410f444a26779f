"""How raw pixel values become the values the networks see, band by band: (raw - offset) * gain.

- The original (--lr_scale, --hr_scale): offset 0, gain lr_scale for the LR images and hr_scale for the
  HR images.
- --normalize (not in the original): the LR and the HR images both take the per-band mean (offset) and
  1 / standard deviation (gain) of the LR training patches, so that every band the network sees is centred
  on 0 with unit variance. Measured on real imagery (README, "Recommended recipes"), this is what lets the
  generator learn quickly: with the original scaling, raw digital numbers around 7000 +- 400 reach the
  network as 0.7 +- 0.04, a large constant that the first layers must learn to ignore.

Training applies it to the batches (trainer.py), the SavedModel inside its serving function (export.py),
so that both still take and give raw values.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import tensorflow as tf


@dataclass(frozen=True)
class Scaling:
    """Per-band affine maps of the LR and the HR values (tuples of one float per band)."""

    lr_offset: tuple[float, ...]
    lr_gain: tuple[float, ...]
    hr_offset: tuple[float, ...]
    hr_gain: tuple[float, ...]

    @classmethod
    def scales(cls, nbands: int, lr_scale: float, hr_scale: float) -> Scaling:
        """The original scaling: LR values times lr_scale, HR values times hr_scale."""
        zero = (0.0,) * nbands
        return cls(zero, (float(lr_scale),) * nbands, zero, (float(hr_scale),) * nbands)

    @classmethod
    def standardize(cls, mean: Sequence[float], std: Sequence[float]) -> Scaling:
        """LR and HR both centred on the LR per-band means and divided by the LR per-band standard
        deviations (a constant band keeps gain 1)."""
        offset = tuple(float(m) for m in mean)
        gain = tuple(1.0 / float(s) if s > 0 and math.isfinite(s) else 1.0 for s in std)
        return cls(offset, gain, offset, gain)

    @property
    def residual_gain(self) -> float:
        """What turns network LR values into network HR values (hr_gain / lr_gain, the same in every
        band): the gain of the generator's residual skip."""
        ratios = {round(h / g, 12) for h, g in zip(self.hr_gain, self.lr_gain, strict=True)}
        if len(ratios) != 1:
            raise ValueError("hr_gain / lr_gain differs between bands")
        return ratios.pop()

    def lr(self, raw: tf.Tensor) -> tf.Tensor:
        """Network LR values of raw LR values (float32)."""
        return (tf.cast(raw, tf.float32) - self.lr_offset) * self.lr_gain

    def hr(self, raw: tf.Tensor) -> tf.Tensor:
        """Network HR values of raw HR values (float32)."""
        return (tf.cast(raw, tf.float32) - self.hr_offset) * self.hr_gain

    def hr_to_raw(self, values: tf.Tensor) -> tf.Tensor:
        """Raw HR values of network HR values."""
        return values / self.hr_gain + self.hr_offset

    def as_dict(self) -> dict[str, list[float]]:
        """JSON-ready lists (checkpoint settings, sr4rs.json)."""
        return {"lr_offset": list(self.lr_offset), "lr_gain": list(self.lr_gain),
                "hr_offset": list(self.hr_offset), "hr_gain": list(self.hr_gain)}
