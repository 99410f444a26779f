"""The SavedModel side of inference: what a model expects (read from saved_model.pb, no weights
loaded), the checks of an input image against it, and the loaded `serving_default` signature.

Accepts the SavedModels of this project (`lr_input` float32, outputs `output_32` ... `output_512`)
and those of the original SR4RS (TF1 `simple_save`: keys `lr_input:0`, `output_64:0`, ..., and an
`lr_input` of the training patches' integer type).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import constants
from errors import SR4RSError
from folders import check_savedmodel, read_metadata
from logs import get_logger

logger = get_logger("sr_model")

# The input's dynamic is "far" from training when its magnitude (|mean| + std) differs by more than this
# factor (reflectance in [0, 1] vs [0, 10000], 8 bits vs 16 bits), or its mean is outside the training range.
MAGNITUDE_RATIO = 10.0


def _base_name(key: str) -> str:
    """A signature key without its `:N` suffix (`lr_input:0` -> `lr_input`), as OTB compares them."""
    return key.split(":", 1)[0]


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a SavedModel's `serving_default` signature expects and gives.

    Attributes:
        path: the SavedModel directory.
        input_key: key of the LR input in the signature (`lr_input` or `lr_input:0`).
        input_dtype: its data type (float32, or the training patches' type for original models).
        nbands: its band count (None when the signature leaves it open).
        outputs: pad -> output key (`output_64` or `output_64:0`).
        metadata: the sr4rs.json description, or None.
    """

    path: str
    input_key: str
    input_dtype: tf.DType
    nbands: int | None
    outputs: dict[int, str]
    metadata: dict[str, Any] | None

    def output_key(self, pad: int) -> str:
        """The key of `output_<pad>`, or SR4RSError listing the pads this model offers."""
        if pad not in self.outputs:
            raise SR4RSError(f"{self.path}: the model has no output {constants.output_name(pad)} "
                             f"(available pads: {', '.join(map(str, sorted(self.outputs))) or 'none'})")
        return self.outputs[pad]


def inspect_savedmodel(path: str) -> ModelInfo:
    """Read the serving signature of a SavedModel directory (cheap: the weights are not loaded).

    Args:
        path: the SavedModel directory.
    """
    pb = check_savedmodel(path)
    saved = saved_model_pb2.SavedModel()
    try:
        with open(pb, "rb") as f:
            saved.ParseFromString(f.read())
    except Exception as err:  # protobuf raises its own DecodeError
        raise SR4RSError(f"{pb}: unreadable SavedModel ({err})") from None
    sigs = [mg.signature_def[constants.SIGNATURE_KEY] for mg in saved.meta_graphs
            if constants.SIGNATURE_KEY in mg.signature_def]
    if not sigs:
        raise SR4RSError(f"{path}: the SavedModel has no '{constants.SIGNATURE_KEY}' signature")
    sig = sigs[0]
    inputs = {key: value for key, value in sig.inputs.items() if _base_name(key) == constants.LR_INPUT_NAME}
    if not inputs:
        raise SR4RSError(f"{path}: the signature has no '{constants.LR_INPUT_NAME}' input "
                         f"(inputs: {', '.join(sig.inputs) or 'none'})")
    input_key, tensor = next(iter(inputs.items()))
    dims = [d.size for d in tensor.tensor_shape.dim]
    outputs = {}
    for key in sig.outputs:
        suffix = _base_name(key)[len(constants.OUTPUTS_PREFIX):]
        if _base_name(key).startswith(constants.OUTPUTS_PREFIX) and suffix.isdigit():
            outputs[int(suffix)] = key
    return ModelInfo(path=path, input_key=input_key, input_dtype=tf.dtypes.as_dtype(tensor.dtype),
                     nbands=dims[-1] if len(dims) == 4 and dims[-1] > 0 else None, outputs=outputs,
                     metadata=read_metadata(path))


def band_statistics(sample: np.ndarray, valid: np.ndarray) -> dict[str, list[float]]:
    """Per-band min, max, mean and std of the valid pixels of a sample [rows, cols, bands].

    Args:
        sample: pixel values.
        valid: True where a value is valid (same shape).
    """
    stats: dict[str, list[float]] = {"min": [], "max": [], "mean": [], "std": []}
    for b in range(sample.shape[-1]):
        values = sample[..., b][valid[..., b]].astype(np.float64)
        if values.size == 0:
            values = np.zeros(1)
        stats["min"].append(float(values.min()))
        stats["max"].append(float(values.max()))
        stats["mean"].append(float(values.mean()))
        stats["std"].append(float(values.std()))
    return stats


def check_input(info: ModelInfo, nbands: int, stats: dict[str, list[float]] | None = None) -> None:
    """Refuse an input whose band count differs from the model's; warn when its dynamic is far from
    the model's training LR statistics (when the model carries them).

    Args:
        info: the model.
        nbands: band count of the input image.
        stats: per-band statistics of the input (see band_statistics), or None to skip that check.
    """
    expected = info.nbands or (info.metadata or {}).get("nbands")
    if expected is not None and expected != nbands:
        raise SR4RSError(f"the input has {nbands} band(s) but the model {info.path} expects {expected}: "
                         "give an image with the bands (and band order) of the LR training patches")
    train = (info.metadata or {}).get("lr_stats")
    if not train or stats is None:
        return
    for b in range(min(nbands, len(train["mean"]))):
        mean, std = stats["mean"][b], stats["std"][b]
        t_min, t_max, t_mean, t_std = (train[k][b] for k in ("min", "max", "mean", "std"))
        ratio = max(abs(mean) + std, 1e-12) / max(abs(t_mean) + t_std, 1e-12)
        if not t_min <= mean <= t_max or not 1.0 / MAGNITUDE_RATIO <= ratio <= MAGNITUDE_RATIO:
            logger.warning("band %s of the input (mean %.4g, std %.4g) is far from the model's LR training "
                           "data (mean %.4g, std %.4g, range [%.4g, %.4g]): the input must have the same "
                           "dynamic as the LR patches the model was trained on (same units and scaling, "
                           "e.g. not reflectance in [0, 1] for a model trained on [0, 10000])",
                           b + 1, mean, std, t_mean, t_std, t_min, t_max)
            return


class Signature:
    """The loaded `serving_default` signature, called as float32 LR batch -> HR batch of `output_<pad>`.

    Args:
        info: the model (from inspect_savedmodel).
        pad: which output to return.
    """

    def __init__(self, info: ModelInfo, pad: int):
        self.output_key = info.output_key(pad)
        self.input_key = info.input_key
        self.input_dtype = info.input_dtype
        absl = logging.getLogger("absl")
        level = absl.level
        absl.setLevel(logging.ERROR)  # "unsaved custom gradients" (the blur's): irrelevant to inference
        try:
            self.model = tf.saved_model.load(info.path)
        except Exception as err:  # TensorFlow raises many types for broken models
            reason = str(err).strip()[:300]
            raise SR4RSError(f"{info.path}: the SavedModel cannot be loaded ({reason})") from None
        finally:
            absl.setLevel(level)
        self.function = self.model.signatures[constants.SIGNATURE_KEY]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on a batch [N, h, w, bands] of LR values (float32); returns float32 HR values."""
        lr = tf.convert_to_tensor(batch)
        if self.input_dtype.is_integer:
            lr = tf.clip_by_value(tf.round(lr), self.input_dtype.min, self.input_dtype.max)
        lr = tf.cast(lr, self.input_dtype)
        try:
            hr = self.function(**{self.input_key: lr})[self.output_key]
        except tf.errors.ResourceExhaustedError:
            raise SR4RSError(f"out of memory running the model on LR windows of {list(batch.shape)} "
                             "[tiles, rows, cols, bands]: use a smaller --ts (or --batch 1)") from None
        return tf.cast(hr, tf.float32).numpy()
