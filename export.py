"""SavedModel export of a trained generator, and the model description that travels with it.

The SavedModel's `serving_default` signature takes `lr_input` (float32 [N, H, W, C], raw LR values)
and returns `output_32` ... `output_512`: the full-resolution generator output in raw HR values (scaling.py),
cropped by that many HR pixels on every side (what OTB's TensorflowModelServe and sr.py call).
Next to it, `assets.extra/sr4rs.json` describes the model (band count, scaling, training statistics);
TensorFlow and OTB ignore that folder.
"""
from __future__ import annotations

import datetime
import json
import os
import secrets
import shutil
from typing import Any

import tensorflow as tf

import constants
from cli import os_error_text
from errors import SR4RSError
from folders import check_new_savedmodel_path
from logs import get_logger
from scaling import Scaling

logger = get_logger("export")


class ServingModel(tf.Module):
    """The generator wrapped for serving: raw LR values in, raw HR values out, cropped per pad.

    Args:
        generator: a callable network LR values -> {1: HR, 2: ..., 4: ...} (network HR values).
        nbands: number of bands.
        scaling: raw values -> network values, as in training.
    """

    def __init__(self, generator: tf.Module, nbands: int, scaling: Scaling):
        super().__init__(name="sr4rs")
        self.generator = generator
        self.scaling = scaling
        spec = tf.TensorSpec([None, None, None, nbands], tf.float32, name=constants.LR_INPUT_NAME)
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, lr_input: tf.Tensor) -> dict[str, tf.Tensor]:
        hr = self.scaling.hr_to_raw(self.generator(self.scaling.lr(lr_input))[1])
        return {constants.output_name(pad): hr[:, pad:-pad, pad:-pad, :] for pad in constants.PADS}


def export_savedmodel(generator: tf.Module, path: str, nbands: int, scaling: Scaling,
                      description: dict[str, Any] | None = None) -> None:
    """Write the SavedModel and its description; the directory appears only when complete.

    Args:
        generator: the trained generator.
        path: the new SavedModel directory.
        nbands: number of bands.
        scaling: raw values -> network values, as in training.
        description: more fields for sr4rs.json (training statistics, network size, ...).
    """
    check_new_savedmodel_path(path)
    model = ServingModel(generator, nbands, scaling)
    parent = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(parent, f".{os.path.basename(os.path.abspath(path))}.{secrets.token_hex(4)}")
    try:
        os.makedirs(parent, exist_ok=True)  # like the checkpoint and log folders
        os.mkdir(tmp)  # the umask's permissions (tempfile.mkdtemp's 700 would lock other users out)
    except OSError as err:
        raise SR4RSError(f"{path}: cannot write in {parent} ({os_error_text(err)})") from None
    try:
        tf.saved_model.save(model, tmp, signatures={constants.SIGNATURE_KEY: model.serve})
        metadata = {"format": "sr4rs", "version": 1, "nbands": nbands, "scaling": scaling.as_dict(),
                    "scale_factor": constants.SCALE,
                    "input": constants.LR_INPUT_NAME,
                    "outputs": [constants.output_name(pad) for pad in constants.PADS],
                    "created": datetime.datetime.now().isoformat(timespec="seconds")}
        metadata.update(description or {})
        os.makedirs(os.path.join(tmp, constants.METADATA_DIR), exist_ok=True)
        with open(os.path.join(tmp, constants.METADATA_DIR, constants.METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("SavedModel written to %s", path)
