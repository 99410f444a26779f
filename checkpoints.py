"""Checkpoints of a training run: the whole training state saved at each epoch's end in the run's own
folder, resuming (refused when a setting that shapes the model differs), and loading the weights of an
original SR4RS (TF1) checkpoint.

A checkpoint holds the trainer's state (`Trainer.checkpointed`: networks, optimisers, float16 loss
scale) under `trainer/`, and the run's epoch, step, name and settings. With several machines, only the
chief writes in the run's folder; the other workers save as well (as TensorFlow's multi-worker pattern
asks) but into a scratch folder of their own.
"""
from __future__ import annotations

import json
import os

import tensorflow as tf

from errors import SR4RSError
from folders import checkpoint_location
from logs import get_logger
from trainer import LOSS_SCALE, Trainer

logger = get_logger("checkpoints")

TRAINER = "trainer"
# The trainer settings (TrainConfig fields) a resumed run must share with its checkpoint.
RESUME_SETTINGS = ("residual", "lr_scale", "hr_scale", "upsampling", "normalize")
# Their values in checkpoints written before they were settings.
SETTINGS_BEFORE = {"upsampling": "transposed", "normalize": False}
SETTINGS_KEY = "settings/.ATTRIBUTES/VARIABLE_VALUE"
MAX_TO_KEEP = 5
BEST_DIR = "best"  # the run's best checkpoint by validation PSNR, in this sub-folder of its folder


def find_checkpoint(path: str) -> str:
    """A checkpoint prefix: the prefix itself, or the newest checkpoint of a folder or of its run
    sub-folders."""
    if not os.path.isdir(path):
        return path
    folders = [path] + [os.path.join(path, d) for d in sorted(os.listdir(path)) if d != BEST_DIR]
    found = [c for c in (tf.train.latest_checkpoint(f) for f in folders if os.path.isdir(f)) if c]
    if not found:
        raise SR4RSError(f"{path}: no checkpoint in this directory or its sub-directories")
    return max(found, key=lambda c: os.path.getmtime(c + ".index"))


class Checkpoints:
    """Per-epoch checkpoints of a run (trainer state, epoch, step, run name, settings, validation
    scores), the last MAX_TO_KEEP kept, and the best one by validation PSNR in BEST_DIR.

    Args:
        trainer: the trainer to save and restore.
        save_ckpt: the checkpoints directory (ending with a separator), or directory/prefix.
        name: the run name (a resumed run takes its checkpoint's).
        scratch: write there instead of the run's folder, keeping only the last checkpoint and the best
            one (a worker other than the chief; the caller removes the folder); None: the run's folder.
    """

    def __init__(self, trainer: Trainer, save_ckpt: str, name: str, scratch: str | None = None):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.trainer = trainer
        self.save_ckpt = save_ckpt
        # the latest validation scores and the best ones (JSON; "{}" without validation)
        self.validation = tf.Variable("{}", dtype=tf.string, trainable=False)
        self.best = tf.Variable("{}", dtype=tf.string, trainable=False)
        self._run = tf.Variable(name, dtype=tf.string, trainable=False)
        self._settings = tf.Variable(json.dumps(self._current_settings(), sort_keys=True), dtype=tf.string,
                                     trainable=False)
        self._state = trainer.checkpointed()
        self._checkpoint = tf.train.Checkpoint(**{TRAINER: self._state}, epoch=self.epoch, step=self.step,
                                               run=self._run, settings=self._settings,
                                               validation=self.validation, best=self.best)
        self._manager: tf.train.CheckpointManager | None = None
        self._best_manager: tf.train.CheckpointManager | None = None
        self._scratch = scratch

    @property
    def name(self) -> str:
        """The run name."""
        return self._run.numpy().decode()

    @property
    def directory(self) -> str:
        """The run's checkpoint folder."""
        return checkpoint_location(self.save_ckpt, self.name)

    @property
    def _folder(self) -> str:
        """Where this process writes its checkpoints: the run's folder, or its scratch folder."""
        return self.directory if self._scratch is None else self._scratch

    def _current_settings(self) -> dict[str, object]:
        settings = {key: getattr(self.trainer.config, key) for key in RESUME_SETTINGS}
        if self.trainer.config.normalize:  # the statistics it took from the patches
            settings["scaling"] = self.trainer.scaling.as_dict()
        return settings

    def restore(self, path: str) -> None:
        """Resume from a checkpoint of this project, or load the weights of an original SR4RS one.

        Args:
            path: a checkpoint prefix, or a directory (its newest checkpoint, run sub-folders included).
        """
        path = find_checkpoint(path)
        try:
            names = tf.train.load_checkpoint(path).get_variable_to_shape_map()
        except (tf.errors.OpError, ValueError) as err:
            raise SR4RSError(f"{path}: not a readable checkpoint ({err})") from None
        if "_CHECKPOINTABLE_OBJECT_GRAPH" not in names:
            self._load_original(path, names)
            return
        if LOSS_SCALE in self._state and not any(n.startswith(f"{TRAINER}/{LOSS_SCALE}/") for n in names):
            raise SR4RSError(f"{path}: a float32 or bfloat16 run (no float16 loss scale in it): resume "
                             "it without --mixed_precision or with --mixed_precision bfloat16")
        self._check_settings(path)
        try:
            self._checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as err:
            raise SR4RSError(f"{path}: the checkpoint does not match this network (same bands, "
                             f"--depth and --nresblocks?): {str(err).splitlines()[0]}") from None
        logger.info("Resumed from %s: epoch %s, step %s", path, int(self.epoch), int(self.step))

    def _check_settings(self, path: str) -> None:
        """Refuse a checkpoint whose RESUME_SETTINGS differ from this run's, naming them."""
        saved = json.loads(tf.train.load_checkpoint(path).get_tensor(SETTINGS_KEY))
        saved, wanted = {**SETTINGS_BEFORE, **saved}, self._current_settings()
        differ = [f"--{k} {saved.get(k)} in the checkpoint, {wanted[k]} here" for k in RESUME_SETTINGS
                  if saved.get(k) != wanted[k]]
        if not differ and saved.get("scaling") != wanted.get("scaling"):
            differ = ["--normalize took other statistics from other patches: give the same patches"]
        if differ:
            raise SR4RSError(f"{path}: resume with the settings of the checkpoint ({'; '.join(differ)})")

    def _load_original(self, path: str, names: dict) -> None:
        """Assign the variables of an original (TF1) SR4RS checkpoint by name; optimisers start anew."""
        if self.trainer.config.residual or self.trainer.config.upsampling != "transposed":
            raise SR4RSError(f"{path}: an original SR4RS checkpoint is the original network: load it without "
                             "--residual and --upsampling")
        reader = tf.train.load_checkpoint(path)
        for var in self.trainer.generator.variables + self.trainer.discriminator.variables:
            name = var.name.split(":")[0]
            if name not in names:
                raise SR4RSError(f"{path}: variable {name} is missing (not an SR4RS checkpoint, or another "
                                 "network size)")
            value = reader.get_tensor(name)
            if tuple(value.shape) != tuple(var.shape):
                raise SR4RSError(f"{path}: {name} has shape {value.shape}, the network expects {var.shape} "
                                 "(check --depth, --nresblocks and the band count)")
            var.assign(value)
        logger.info("Loaded the weights of the original SR4RS checkpoint %s", path)

    def save(self, number: int) -> str:
        """Write checkpoint `number` in the run's folder (created at the first save); its prefix.

        Args:
            number: the checkpoint number (ckpt-<number>).
        """
        if self._manager is None:
            os.makedirs(self._folder, exist_ok=True)
            keep = MAX_TO_KEEP if self._scratch is None else 1
            self._manager = tf.train.CheckpointManager(self._checkpoint, self._folder, max_to_keep=keep)
        return self._manager.save(checkpoint_number=number)

    def save_best(self) -> str:
        """Write the current state as the run's best checkpoint (BEST_DIR, replacing the previous one);
        its prefix."""
        if self._best_manager is None:
            folder = os.path.join(self._folder, BEST_DIR)
            self._best_manager = tf.train.CheckpointManager(self._checkpoint, folder, max_to_keep=1)
        return self._best_manager.save(checkpoint_number=int(self.epoch))

    def restore_best(self) -> str | None:
        """Go back to the run's best checkpoint, if there is one; its prefix (None: nothing done)."""
        best = tf.train.latest_checkpoint(os.path.join(self._folder, BEST_DIR))
        if best is not None:
            self._checkpoint.restore(best).assert_existing_objects_matched()
        return best
