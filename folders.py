"""The folders of a training run (checkpoints, logs, the SavedModel) and the SavedModel given to sr.py:
checked before the work starts (and before TensorFlow loads); output folders are created when first
written."""
from __future__ import annotations

import json
import os
from typing import Any

import constants
from errors import SR4RSError


def check_writable_folder(path: str, option: str, name: str | None = None) -> None:
    """Refuse a folder that exists and is not a directory, or whose missing part could not be created
    because its nearest existing ancestor is not a writable directory.

    Args:
        path: the folder (it may not exist yet).
        option: the option that gave it, for the message (e.g. "--logdir").
        name: what the message names (default: path), e.g. the file to be written in the folder.
    """
    name = name or path
    ancestor = os.path.abspath(path)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise SR4RSError(f"{name}: {option} needs a directory, and {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise SR4RSError(f"{name}: permission denied for {option} (cannot write in {ancestor})")


def checkpoint_location(save_ckpt: str, name: str) -> str:
    """The run's own checkpoint folder: save_ckpt/<run name>/ (or directory/<prefix><run name>/), so
    that the runs sharing save_ckpt never delete each other's checkpoints."""
    if save_ckpt.endswith(os.sep) or os.path.isdir(save_ckpt):
        return os.path.join(save_ckpt, name)
    return os.path.join(os.path.dirname(save_ckpt) or ".", os.path.basename(save_ckpt) + name)


def check_checkpoint(path: str) -> None:
    """Refuse a checkpoint path that is neither a directory nor a checkpoint prefix."""
    if not (os.path.isdir(path) or os.path.exists(path + ".index")):
        raise SR4RSError(f"{path}: no such checkpoint (give a checkpoint prefix or a directory)")


def check_new_savedmodel_path(path: str) -> None:
    """Refuse an existing SavedModel path or a parent folder that cannot be written or created (before
    hours of training)."""
    if os.path.lexists(path):
        raise SR4RSError(f"{path}: already exists; give a new directory for --savedmodel")
    check_writable_folder(os.path.dirname(os.path.abspath(path)), "--savedmodel", path)


def check_savedmodel(path: str) -> str:
    """Refuse a SavedModel path that is not a folder with a saved_model.pb (before TensorFlow loads); the
    saved_model.pb file."""
    pb = os.path.join(path, "saved_model.pb")
    if not os.path.isdir(path):
        raise SR4RSError(f"{path}: no such SavedModel directory")
    if not os.path.isfile(pb):
        raise SR4RSError(f"{path}: not a SavedModel (no saved_model.pb inside)")
    return pb


def read_metadata(savedmodel: str) -> dict[str, Any] | None:
    """The sr4rs.json description of a SavedModel, or None (e.g. a model made by the original SR4RS)."""
    path = os.path.join(savedmodel, constants.METADATA_DIR, constants.METADATA_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise SR4RSError(f"{path}: unreadable model description ({err})") from None
