"""The epoch loop of a training run (`Fit`): the steps of each phase with a progress bar, losses and
previews in TensorBoard, validation against bicubic with the best checkpoint kept and early stopping,
the time limit, a checkpoint at each epoch's end and on Ctrl-C; and which weights get exported.

With several machines every worker runs this loop, and their collective operations (each step's, each
checkpoint's) must pair up: whatever a worker would decide from its own clock or scores (time limit,
validation due, best PSNR) is the chief's decision on all of them (`Trainer.from_chief`).
"""
from __future__ import annotations

import json
import math
import secrets
from collections.abc import Callable
from time import monotonic, perf_counter
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from board import TensorBoard
from checkpoints import Checkpoints
from datasets import PatchesDataset
from errors import SR4RSError
from logs import get_logger
from trainer import Trainer
from validation import Validator

if TYPE_CHECKING:
    from train_options import TrainOptions

logger = get_logger("fit")

LEARNING_RATE = "learning_rate"
# Training stops when the losses stay non-finite this many steps in a row (float16 may skip a few).
DIVERGED_STEPS = 10
VALID = "valid/"  # TensorBoard tag prefix of the validation scores
# At an epoch's end, validation waits for this many times its own duration of training (<= 5% of the time).
VALID_TIME_RATIO = 19


class Fit:
    """The epoch loop: the epochs left (pre-training first with pretrain), losses and previews in
    TensorBoard, validation (at each epoch's end and every valid_step steps) with the best checkpoint kept
    and early stopping, a checkpoint at each epoch's end, one on Ctrl-C.

    Args:
        trainer: the trainer.
        patches: the training patches.
        checkpoints: the run's checkpoints (their epoch and step say where to start).
        board: the run's TensorBoard.
        options: the run.
        preview: the preview LR image [1, H, W, C], or None.
        validator: the validation pairs, or None.
        train_indices: the patches trained on (None: all).
    """

    def __init__(self, trainer: Trainer, patches: PatchesDataset, checkpoints: Checkpoints,
                 board: TensorBoard, options: TrainOptions, preview: np.ndarray | None,
                 validator: Validator | None = None, train_indices: np.ndarray | None = None):
        self.trainer, self.patches, self.checkpoints, self.board = trainer, patches, checkpoints, board
        self.options, self.preview, self.validator = options, preview, validator
        self.train_indices = train_indices
        self.pretraining = (options.epochs if options.pretrain_epochs is None else options.pretrain_epochs) \
            if options.pretrain else 0
        self.schedule = [("pre-training", trainer.pretrain_step)] * self.pretraining + \
            [("training", trainer.train_step)] * options.epochs
        pairs = patches.n_patches if train_indices is None else len(train_indices)
        self.steps_per_epoch = pairs // options.batchsize
        self.losses: dict[str, float] = {}
        self.non_finite = 0
        self.index = int(checkpoints.epoch)
        self.best = json.loads(checkpoints.best.numpy())  # the best validation scores so far ({}: none)
        # per phase: (best PSNR, epochs done then), for early stopping
        self.phase_best = {self.best["phase"]: (self.best["psnr"], self.best["epoch"])} if self.best else {}
        self.valid_postfix: dict[str, str] = {}
        self.valid_cost: float | None = None  # seconds the last validation took
        self.valid_end = 0.0  # when it ended (perf_counter)
        self.deadline = monotonic() + 60 * options.time_limit if options.time_limit else math.inf

    @property
    def out_of_time(self) -> bool:
        """Whether the time limit is reached (by the chief's clock: every worker must stop at the same
        step)."""
        if self.deadline == math.inf:
            return False
        return bool(self.trainer.from_chief(monotonic() >= self.deadline))

    def shuffling_seed(self) -> int | None:
        """The seed of the patches' order: --seed; with several machines and no --seed, one the chief
        draws, since every worker must cut the same global batches (each takes its share)."""
        if self.options.seed is not None or self.trainer.workers == 1:
            return self.options.seed
        return int(self.trainer.from_chief(secrets.randbelow(2 ** 31)))

    def run(self) -> dict[str, float]:
        """Train the epochs left; the losses of the last step."""
        options, checkpoints = self.options, self.checkpoints
        batches = self.patches.tf_dataset(options.batchsize, seed=self.shuffling_seed(),
                                          indices=self.train_indices, augment=options.augment)
        # Several machines: each runs the same pipeline and keeps its share of every global batch (DATA
        # sharding, after the batches are split per replica), so the global batch is --batchsize as on one.
        sharding = tf.data.Options()
        sharding.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        dataset = self.trainer.strategy.experimental_distribute_dataset(batches.with_options(sharding))
        if self.preview is not None:
            self.board.bicubic_preview(self.preview, int(checkpoints.step))
        logger.info("%s patches, %s steps per epoch, run %s", self.patches.n_patches, self.steps_per_epoch,
                    checkpoints.name)
        try:
            while self.index < len(self.schedule):
                if not self.epoch(dataset):
                    self.stop_in_epoch()
                    break
                self.index = self.end_of_epoch()
                if self.out_of_time and self.index < len(self.schedule):
                    logger.info("Time limit of %s min reached (step %s)", self.options.time_limit,
                                int(checkpoints.step))
                    break
        except tf.errors.OpError as err:  # e.g. a patches file that became unreadable, out of memory
            raise SR4RSError(f"training stopped at step {int(checkpoints.step)}: "
                             f"{err.message.strip().splitlines()[0]}") from None
        except KeyboardInterrupt:
            saved = checkpoints.save(self.index)
            logger.warning("Interrupted: checkpoint saved to %s (resume with --load_ckpt %s)", saved, saved)
            raise
        return self.losses

    @property
    def phase(self) -> str:
        """The phase of the current epoch: "pre-training" or "training"."""
        return self.schedule[self.index][0]

    def label(self) -> str:
        """How the logs name the current epoch, e.g. "pre-training epoch 2/10"."""
        if self.index < self.pretraining:
            return f"{self.phase} epoch {self.index + 1}/{self.pretraining}"
        return f"{self.phase} epoch {self.index - self.pretraining + 1}/{self.options.epochs}"

    def epoch(self, dataset: tf.distribute.DistributedDataset) -> bool:
        """The current epoch of the schedule: one pass over the patches, with a progress bar; False when
        the time limit cut it."""
        step_fn = self.schedule[self.index][1]
        with tqdm(total=self.steps_per_epoch, desc=self.label(), unit="step", mininterval=1.0,
                  dynamic_ncols=True) as bar:
            for batch in dataset:
                self.step(step_fn, batch)
                losses = {k.replace("gen_loss_", ""): f"{v:.4g}" for k, v in self.losses.items()}
                bar.set_postfix({**losses, **self.valid_postfix}, refresh=False)
                bar.update()
                if self.out_of_time and bar.n < bar.total:
                    return False
        return True

    def step(self, step_fn: Callable, batch: dict[str, tf.Tensor]) -> None:
        """One train step, its losses (stop after DIVERGED_STEPS non-finite ones) and preview logged, and
        the validation every valid_step steps."""
        step = int(self.checkpoints.step)
        self.losses = {k: float(v) for k, v in step_fn(batch).items()}
        self.non_finite = 0 if all(np.isfinite(v) for v in self.losses.values()) else self.non_finite + 1
        if self.non_finite >= DIVERGED_STEPS:
            bad = ", ".join(f"{name}={value}" for name, value in self.losses.items()
                            if not np.isfinite(value))
            raise SR4RSError(f"{self.phase} diverged: non-finite losses for {self.non_finite} steps, up to "
                             f"step {step} ({bad}): lower --adam_lr or check --lr_scale/--hr_scale")
        self.board.scalars({**self.losses, LEARNING_RATE: self.options.trainer.adam_lr}, step)
        if self.preview is not None and step % self.options.previews_step == 0:
            self.board.generated_preview(self.trainer.generate(self.preview), step)
        self.checkpoints.step.assign_add(1)
        valid_step = self.options.valid_step
        if self.validator is not None and valid_step and (step + 1) % valid_step == 0:
            self.validate(self.index)

    def end_of_epoch(self) -> int:
        """After the current epoch: validate, checkpoint and log; the index of the next epoch to run (the
        next phase's first when early stopping ends this one)."""
        following = self.index + 1
        if self.validator is not None and self.validation_due():
            self.validate(self.index + 1)
        if self.validator is not None and self.phase in self.phase_best:
            best_psnr, best_epochs = self.phase_best[self.phase]
            stale = self.index + 1 - best_epochs
            if self.options.early_stop and stale >= self.options.early_stop:
                following = self.pretraining if self.index < self.pretraining else len(self.schedule)
                if following > self.index + 1:
                    logger.info("Early stop of %s: no better validation PSNR than %.3f dB (after epoch %s) "
                                "for %s epoch(s)", self.phase, best_psnr, best_epochs, stale)
        self.checkpoints.epoch.assign(following)
        saved = self.checkpoints.save(self.index)
        logger.info("%s done (step %s), file system wait %.2fs, checkpoint %s", self.label(),
                    int(self.checkpoints.step), self.patches.pop_wait_seconds(), saved)
        return following

    def validation_due(self) -> bool:
        """Whether to validate at the end of the current epoch: the first time and at the end of a phase,
        else once the training time since the last validation reaches VALID_TIME_RATIO times what that
        validation took, so that validating costs at most about 5% of the time even with short epochs."""
        if self.valid_cost is None or self.index + 1 in (self.pretraining, len(self.schedule)):
            return True
        waited = perf_counter() - self.valid_end >= VALID_TIME_RATIO * self.valid_cost
        return bool(self.trainer.from_chief(waited))  # the chief's clock decides on every worker

    def stop_in_epoch(self) -> None:
        """The time limit cut the current epoch: validate, checkpoint (a resumed run restarts this epoch)
        and log."""
        if self.validator is not None:
            self.validate(self.index)
        saved = self.checkpoints.save(self.index)
        logger.info("Time limit of %s min reached in %s (step %s): checkpoint %s", self.options.time_limit,
                    self.label(), int(self.checkpoints.step), saved)

    def generate_hr(self, lr: np.ndarray) -> np.ndarray:
        """The generator's full-resolution output for raw LR patches, as numpy."""
        return self.trainer.generate(tf.constant(lr))[1].numpy()

    def validate(self, epochs_done: int) -> bool:
        """Score the generator on the validation pairs: TensorBoard, log, checkpoint; whether it is the
        best so far.

        Args:
            epochs_done: epochs done at this point (the current one included at its end).
        """
        started = perf_counter()
        step = int(self.checkpoints.step)
        scores, sr = self.validator.evaluate(self.generate_hr)
        # the chief's PSNR decides (best checkpoint, early stop) on every worker
        scores.update(psnr=float(self.trainer.from_chief(scores["psnr"])), epoch=epochs_done, step=step,
                      phase=self.phase)
        self.checkpoints.validation.assign(json.dumps(scores))
        self.board.scalars(validation_scalars(scores), step)
        self.board.picture(VALID + "preview", self.validator.preview(sr), step)
        improved = not self.best or scores["psnr"] > self.best["psnr"]
        if improved:
            self.best = scores
            self.checkpoints.best.assign(json.dumps(scores))
            self.checkpoints.save_best()
        if self.phase not in self.phase_best or scores["psnr"] > self.phase_best[self.phase][0]:
            self.phase_best[self.phase] = scores["psnr"], epochs_done
        self.valid_postfix = {"valid": f"{scores['gain_db']:+.2f}dB"}
        sam = "" if scores["sam"] is None else f"; SAM {scores['sam']:.3f} vs {scores['sam_bicubic']:.3f} deg"
        logger.info("Validation at step %s: SR %.3f dB, bicubic %.3f dB, gain %+.3f dB; SSIM %.4f vs %.4f%s; "
                    "best %+.3f dB (step %s)%s [%.1fs]", step, scores["psnr"], scores["psnr_bicubic"],
                    scores["gain_db"], scores["ssim"], scores["ssim_bicubic"], sam, self.best["gain_db"],
                    self.best["step"], " (new best)" if improved else "", perf_counter() - started)
        self.valid_cost, self.valid_end = perf_counter() - started, perf_counter()
        return improved


def validation_scalars(scores: dict) -> dict[str, float]:
    """TensorBoard scalars (valid/...) of validation scores: overall and per band (band1, band2, ...)."""
    values = {VALID + key: scores[key] for key in ("psnr", "psnr_bicubic", "gain_db", "ssim", "ssim_bicubic")}
    if scores["sam"] is not None:
        values.update({VALID + "sam": scores["sam"], VALID + "sam_bicubic": scores["sam_bicubic"]})
    for key in ("psnr", "gain_db", "ssim"):
        for band, value in enumerate(scores[f"{key}_bands"]):
            values[f"{VALID}{key}_band{band + 1}"] = value
    return values


def exported_weights(checkpoints: Checkpoints, export: str) -> dict:
    """With export "best", go back to the best checkpoint by validation PSNR (said in the log, with the
    last weights' score); the validation scores of the weights kept, with "export": best or last."""
    last = json.loads(checkpoints.validation.numpy())
    if export == "best" and checkpoints.restore_best() is not None:
        best = json.loads(checkpoints.best.numpy())
        if best["step"] != last["step"]:
            logger.info("Exporting the best weights by validation PSNR: step %s (%s), gain %+.3f dB over "
                        "bicubic (the last weights, step %s: %+.3f dB; --export last exports them)",
                        best["step"], best["phase"], best["gain_db"], last["step"], last["gain_db"])
        return {**best, "export": "best"}
    return {**last, "export": "last"} if last else {}
