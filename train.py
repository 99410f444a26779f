"""Train an SR4RS super-resolution GAN on LR/HR patches images, log to TensorBoard, checkpoint,
and export a SavedModel (Step 2 of the README).

    python train.py --lr_patches lr_patches.tif --hr_patches hr_patches.tif \\
        --save_ckpt results/ckpts/ --logdir results/logs/ --savedmodel results/savedmodel
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from tqdm import tqdm

import constants
from cli import run_cli
from datasets import PatchesDataset
from errors import SR4RSError
from export import check_new_savedmodel_path, export_savedmodel
from logs import get_logger, setup_logging
from network import SKIP_RADIUS, nice_preview
from raster import open_raster, read_array
from skip_fit import fit_linear_skips
from trainer import TrainConfig, Trainer
from vgg import VGG19Features, load_vgg19_weights

logger = get_logger("train")

MIN_BATCH_SIZE = 3
# A preview costs about 16 * (4 * depth) * 4 bytes per LR pixel and live feature map: keep one map
# under this budget (previews larger than that are cropped around their centre).
PREVIEW_MAP_BUDGET = 256 * 2 ** 20
BICUBIC_PREVIEW = "preview_bicubic"
# The least-squares fit of --residual linear reads at most LSFIT_BATCHES batches of LSFIT_BATCH patches.
LSFIT_BATCH = 64
LSFIT_BATCHES = 500
LEARNING_RATE = "learning_rate"
# Training stops when the losses stay non-finite this many steps in a row (float16 may skip a few).
DIVERGED_STEPS = 10
# The float16 loss scale in this project's checkpoints (float32 and bfloat16 runs have none).
LOSS_SCALE_VARIABLE = "trainer/loss_scale/scale/.ATTRIBUTES/VARIABLE_VALUE"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, and the options' defaults (when they have one) in their help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help or ""
        return f"{action.help} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The command line of train.py (the original SR4RS parameters, same defaults)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = p.add_argument_group("inputs and outputs")
    g.add_argument("--lr_patches", nargs="+", required=True, help="LR patches images (OTBTF format)")
    g.add_argument("--hr_patches", nargs="+", required=True,
                   help="HR patches images, same count and order as --lr_patches")
    g.add_argument("--preview", help="small LR image (same dynamic as lr_patches) super-resolved in "
                                     "TensorBoard every --previews_step steps; large ones are cropped")
    g.add_argument("--logdir", help="TensorBoard directory (a sub-directory named after the settings is "
                                    "created in it)")
    g.add_argument("--save_ckpt", required=True,
                   help="checkpoints directory (or directory/prefix); one checkpoint per epoch, last 5 kept")
    g.add_argument("--load_ckpt", help="checkpoint to resume from: a checkpoint prefix (e.g. "
                                       "ckpts/SR4RS_...-3) or a directory (its latest checkpoint); an "
                                       "original SR4RS (TF1) checkpoint loads the network weights only")
    g.add_argument("--savedmodel", help="SavedModel exported at the end (must not exist yet)")
    g.add_argument("--vggfile", help="vgg19.npy weights for the perceptual loss")
    g = p.add_argument_group("images scaling")
    g.add_argument("--lr_scale", type=float, default=1e-4,
                   help="LR values are multiplied by this (aim for [0, 1]; 1e-4 for 12-bit sensors)")
    g.add_argument("--hr_scale", type=float, default=1e-4, help="HR values are multiplied by this")
    g = p.add_argument_group("network and training")
    g.add_argument("--previews_step", type=int, default=200, help="steps between previews")
    g.add_argument("--depth", type=int, default=64, help="base depth of generator and discriminator")
    g.add_argument("--nresblocks", type=int, default=16, help="residual blocks of the generator")
    g.add_argument("--epochs", type=int, default=120, help="epochs (of each phase with --pretrain)")
    g.add_argument("--batchsize", type=int, default=4, help="batch size (>= 3: minibatch statistics)")
    g.add_argument("--adam_lr", type=float, default=1e-3, help="Adam learning rate")
    g.add_argument("--adam_b1", type=float, default=0.0, help="Adam beta1")
    g.add_argument("--l1weight", type=float, default=0.0, help="L1 loss weight")
    g.add_argument("--l2weight", type=float, default=1000.0, help="L2 loss weight")
    g.add_argument("--vggweight", type=float, default=1e-5, help="VGG (perceptual) loss weight")
    g.add_argument("--vggfeatures", default="1234", nargs="?", const="1234",
                   choices=["vgg54", "vgg54lin", "vgg344454", "1234lin", "1234"],
                   help="VGG features of the perceptual loss")
    g.add_argument("--ganweight", type=float, default=1.0, help="GAN loss weight")
    g.add_argument("--losstype", default="WGAN-GP", nargs="?", const="WGAN-GP", choices=["WGAN-GP", "LSGAN"],
                   help="GAN loss type")
    g.add_argument("--streaming", action="store_true",
                   help="read patches from disk on the fly (low RAM, more file system reads)")
    g.add_argument("--pretrain", action="store_true",
                   help="first train --epochs epochs with the L1/L2 losses only, then the GAN")
    g.add_argument("--residual", choices=["bicubic", "linear"],
                   help="not in the original network (default: off): each output = an upsampling of the "
                        "input + the network's output (whose output convs start at zero). bicubic: fixed "
                        "bicubic upsampling; linear: a learned linear upsampling (7x7 LR window), first "
                        "fitted by least squares on the training patches, so training starts from the best "
                        "linear super-resolution of your data (see README)")
    g.add_argument("--mixed_precision", choices=["float16", "bfloat16"],
                   help="compute the networks in this dtype (default: off, float32 as the original); "
                        "variables, losses and gradients stay float32 and the SavedModel is float32. "
                        "bfloat16: NVIDIA Ampere or newer; float16: Volta or newer, with dynamic loss "
                        "scaling (see README)")
    g.add_argument("--seed", type=int, help="random seed (weights, shuffling) for reproducible runs")
    return p


def validate(args: argparse.Namespace) -> None:
    """Refuse bad parameters before anything long starts."""
    if args.batchsize < MIN_BATCH_SIZE:
        raise SR4RSError(f"--batchsize {args.batchsize} is too small: it must be >= {MIN_BATCH_SIZE}, "
                         "because the discriminator uses minibatch statistics (Karras et al.)")
    positive = {"epochs": args.epochs, "depth": args.depth, "previews_step": args.previews_step,
                "adam_lr": args.adam_lr, "lr_scale": args.lr_scale, "hr_scale": args.hr_scale}
    for name, value in positive.items():
        if not value > 0:
            raise SR4RSError(f"--{name} must be > 0 (got {value})")
    weights = {"nresblocks": args.nresblocks, "l1weight": args.l1weight, "l2weight": args.l2weight,
               "vggweight": args.vggweight, "ganweight": args.ganweight}
    for name, value in weights.items():
        if value < 0:
            raise SR4RSError(f"--{name} must be >= 0 (got {value})")
    if not 0 <= args.adam_b1 < 1:
        raise SR4RSError(f"--adam_b1 must be in [0, 1) (got {args.adam_b1})")
    if args.pretrain and args.l1weight == 0 and args.l2weight == 0:
        raise SR4RSError("--pretrain needs --l1weight or --l2weight > 0 (pre-training uses only them)")
    if args.savedmodel:
        check_new_savedmodel_path(args.savedmodel)
    if args.preview and not os.path.isfile(args.preview):
        raise SR4RSError(f"{args.preview}: no such preview image")
    if args.load_ckpt and not (os.path.isdir(args.load_ckpt) or os.path.exists(args.load_ckpt + ".index")):
        raise SR4RSError(f"{args.load_ckpt}: no such checkpoint (give a checkpoint prefix or a directory)")


def run_name(args: argparse.Namespace, now: datetime.datetime) -> str:
    """Name of the run (TensorBoard sub-directory, checkpoints) encoding the settings, as the original."""
    parts = [("E", args.epochs), ("B", args.batchsize), ("LR", args.adam_lr), ("Gan", args.ganweight),
             ("L1-", args.l1weight), ("L2-", args.l2weight), ("VGG", args.vggweight if args.vggfile else 0),
             ("VGGFeat", args.vggfeatures if args.vggfile else 0), ("Loss", args.losstype),
             ("D", args.depth), ("RB", args.nresblocks), ("LRSC", args.lr_scale), ("HRSC", args.hr_scale)]
    name = "SR4RS" + "".join(f"_{key}{value}" for key, value in parts if value)
    if args.residual:
        name += f"_Residual-{args.residual}"
    if args.mixed_precision:
        name += f"_MixedPrecision-{args.mixed_precision}"
    if args.pretrain:
        name += "pretrained"
    return name + f"_{now.day}{now.strftime('%b')}_{now.hour}h{now.minute}min"


def log_summary(args: argparse.Namespace) -> None:
    """One screen with the parameters, as the original prints them."""
    rows = [("Number of epochs", args.epochs), ("Batch size", args.batchsize),
            ("Adam learning rate", args.adam_lr), ("Adam beta1", args.adam_b1),
            ("L1 loss weight", args.l1weight), ("L2 loss weight", args.l2weight),
            ("GAN loss weight", args.ganweight), ("GAN loss type", args.losstype)]
    if args.vggfile:
        rows += [("VGG file", args.vggfile), ("VGG loss weight", args.vggweight),
                 ("VGG features", args.vggfeatures)]
    rows += [("Base depth", args.depth), ("Number of ResBlocks", args.nresblocks),
             ("Low-res image scale", args.lr_scale), ("Hi-res image scale", args.hr_scale),
             ("Pre-training", "yes" if args.pretrain else "no"),
             ("Residual skip", args.residual or "none (original network)"),
             ("Compute dtype", f"{args.mixed_precision} (mixed precision)" if args.mixed_precision
              else "float32"),
             ("Patches reading", "streaming" if args.streaming else "in memory")]
    logger.info("************ Parameters summary ************")
    for label, value in rows:
        logger.info("%-21s: %s", label, value)
    logger.info("********************************************")


def checkpoint_location(save_ckpt: str, name: str) -> str:
    """The run's own checkpoint folder: --save_ckpt/<run name>/ (or directory/<prefix><run name>/), so
    that the runs sharing --save_ckpt never delete each other's checkpoints."""
    if save_ckpt.endswith(os.sep) or os.path.isdir(save_ckpt):
        return os.path.join(save_ckpt, name)
    return os.path.join(os.path.dirname(save_ckpt) or ".", os.path.basename(save_ckpt) + name)


def find_checkpoint(path: str) -> str:
    """A checkpoint prefix from --load_ckpt: the prefix itself, or the newest checkpoint of a folder or of
    its run sub-folders."""
    if not os.path.isdir(path):
        return path
    folders = [path] + [os.path.join(path, d) for d in sorted(os.listdir(path))]
    found = [c for c in (tf.train.latest_checkpoint(f) for f in folders if os.path.isdir(f)) if c]
    if not found:
        raise SR4RSError(f"{path}: no checkpoint in this directory or its sub-directories")
    return max(found, key=lambda c: os.path.getmtime(c + ".index"))


def read_preview(path: str, nbands: int, depth: int) -> np.ndarray:
    """The preview LR image as [1, H, W, C] float32, cropped around its centre when too large."""
    ds = open_raster(path)
    if ds.RasterCount != nbands:
        raise SR4RSError(f"{path}: the preview has {ds.RasterCount} bands, the patches have {nbands}")
    max_side = max(16, int(math.sqrt(PREVIEW_MAP_BUDGET / (16 * 4 * depth * 4))))
    width, height = ds.RasterXSize, ds.RasterYSize
    if width > max_side or height > max_side:
        logger.warning("Preview %s (%sx%s) is too large for depth %s: using its central %sx%s pixels",
                       path, width, height, depth, min(width, max_side), min(height, max_side))
    cols, rows = min(width, max_side), min(height, max_side)
    image = read_array(ds, (width - cols) // 2, (height - rows) // 2, cols, rows)
    return image[np.newaxis].astype(np.float32)


def make_strategy() -> tf.distribute.Strategy:
    """MirroredStrategy over all GPUs when there are several, else the default strategy."""
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        logger.info("Training on %s GPUs (MirroredStrategy)", len(gpus))
        return tf.distribute.MirroredStrategy([gpu.name for gpu in gpus])
    return tf.distribute.get_strategy()


def check_scales(stats: dict, scale: float, what: str) -> None:
    """Warn when the scaled values are far from [0, 1] (the usual symptom of a wrong --lr/hr_scale)."""
    top = max(stats["max"])
    if top <= 0:
        logger.warning("%s patches: no positive value (maximum %s): empty or fill areas?", what.upper(), top)
    elif not 0.05 <= top * scale <= 10:
        logger.warning("%s patches times --%s_scale %s reach %.3g: aim for values mostly in [0, 1] "
                       "(--%s_scale about %.2g)", what.upper(), what, scale, top * scale, what, 1.0 / top)


class Checkpoints:
    """Per-epoch checkpoints of the whole training state (networks, optimisers, epoch, step, run name).

    Args:
        trainer: the trainer to save.
        save_ckpt: --save_ckpt (a directory, or directory/prefix).
        name: run name, used in checkpoint file names.
    """

    def __init__(self, trainer: Trainer, save_ckpt: str, name: str, settings: dict[str, object]):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.run = tf.Variable(name, dtype=tf.string, trainable=False)
        self.settings = tf.Variable(json.dumps(settings, sort_keys=True), dtype=tf.string, trainable=False)
        self.checkpoint = tf.train.Checkpoint(trainer=trainer, epoch=self.epoch, step=self.step, run=self.run,
                                              settings=self.settings)
        self.trainer = trainer
        self.save_ckpt = save_ckpt

    def restore(self, path: str) -> None:
        """Resume from a checkpoint of this project, or load the weights of an original SR4RS one."""
        path = find_checkpoint(path)
        try:
            names = tf.train.load_checkpoint(path).get_variable_to_shape_map()
        except (tf.errors.OpError, ValueError) as err:
            raise SR4RSError(f"{path}: not a readable checkpoint ({err})") from None
        if "_CHECKPOINTABLE_OBJECT_GRAPH" not in names:
            self._load_original(path, names)
            return
        if self.trainer.loss_scale is not None and LOSS_SCALE_VARIABLE not in names:
            raise SR4RSError(f"{path}: a float32 or bfloat16 run (no float16 loss scale in it): resume "
                             "it without --mixed_precision or with --mixed_precision bfloat16")
        wanted = json.loads(self.settings.numpy())
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as err:
            raise SR4RSError(f"{path}: the checkpoint does not match this network (same bands, "
                             f"--depth and --nresblocks?): {str(err).splitlines()[0]}") from None
        saved = json.loads(self.settings.numpy())
        differ = [f"--{k} {saved.get(k)} in the checkpoint, {wanted[k]} here" for k in wanted
                  if saved.get(k) != wanted[k]]
        if differ:
            raise SR4RSError(f"{path}: resume with the settings of the checkpoint ({'; '.join(differ)})")
        logger.info("Resumed from %s: epoch %s, step %s", path, int(self.epoch), int(self.step))

    def _load_original(self, path: str, names: dict) -> None:
        """Assign the variables of an original (TF1) SR4RS checkpoint by name; optimisers start anew."""
        if self.trainer.config.residual:
            raise SR4RSError(f"{path}: an original SR4RS checkpoint has no residual skip: load it without "
                             "--residual")
        reader = tf.train.load_checkpoint(path)
        variables = self.trainer.generator.variables + self.trainer.discriminator.variables
        for var in variables:
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

    def manager(self) -> tf.train.CheckpointManager:
        directory = checkpoint_location(self.save_ckpt, self.run.numpy().decode())
        os.makedirs(directory, exist_ok=True)
        return tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=5)


class TensorBoard:
    """Scalars and previews of one run, or nothing when --logdir is not given."""

    def __init__(self, logdir: str | None, name: str):
        self.writer = tf.summary.create_file_writer(os.path.join(logdir, name)) if logdir else None

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            with self.writer.as_default(step=step):
                for key, value in values.items():
                    tf.summary.scalar(key, value)

    def images(self, images: dict[str, tf.Tensor], step: int) -> None:
        if self.writer is not None:
            with self.writer.as_default(step=step):
                for key, image in images.items():
                    tf.summary.image(key, nice_preview(image))
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def train(args: argparse.Namespace, name: str, strategy: tf.distribute.Strategy | None = None) -> None:
    """Read the patches, train (pre-training first with --pretrain), checkpoint, export.

    Args:
        args: the parsed command line.
        name: the run name (TensorBoard sub-directory, checkpoint names) unless resuming.
        strategy: a tf.distribute strategy (default: several GPUs -> MirroredStrategy).
    """
    if args.seed is not None:
        tf.random.set_seed(args.seed)
    strategy = strategy or make_strategy()
    if args.mixed_precision == "float16" and not tf.config.list_logical_devices("GPU"):
        logger.warning("--mixed_precision float16 without a GPU: CPUs have no fast float16 kernels (several "
                       "times slower than float32); bfloat16 is fast on CPUs with AVX512-BF16 or AMX")
    vgg_features = VGG19Features(load_vgg19_weights(args.vggfile, args.vggfeatures), args.vggfeatures) \
        if args.vggfile else None
    patches = PatchesDataset(args.lr_patches, args.hr_patches, streaming=args.streaming)
    if args.batchsize > patches.n_patches:
        raise SR4RSError(f"--batchsize {args.batchsize} is larger than the {patches.n_patches} patches: "
                         "one batch cannot be filled")
    if args.batchsize % strategy.num_replicas_in_sync:
        raise SR4RSError(f"--batchsize {args.batchsize} must be a multiple of the "
                         f"{strategy.num_replicas_in_sync} devices")
    if vgg_features is not None and patches.nbands < 3:
        raise SR4RSError(f"--vggfile needs RGB: the patches have {patches.nbands} band(s), 3 at least")
    if args.residual == "linear" and patches.lr_patch_size < SKIP_RADIUS:
        raise SR4RSError(f"--residual linear needs LR patches of at least {SKIP_RADIUS} pixels "
                         f"(they have {patches.lr_patch_size})")
    check_scales(patches.lr_stats, args.lr_scale, "lr")
    check_scales(patches.hr_stats, args.hr_scale, "hr")
    preview = read_preview(args.preview, patches.nbands, args.depth) if args.preview else None

    config = TrainConfig(nbands=patches.nbands, depth=args.depth, nresblocks=args.nresblocks,
                         lr_scale=args.lr_scale, hr_scale=args.hr_scale, adam_lr=args.adam_lr,
                         adam_b1=args.adam_b1, l1weight=args.l1weight, l2weight=args.l2weight,
                         vggweight=args.vggweight, ganweight=args.ganweight, losstype=args.losstype,
                         residual=args.residual, compute_dtype=args.mixed_precision or "float32")
    trainer = Trainer(config, strategy, vgg_features)
    checkpoints = Checkpoints(trainer, args.save_ckpt, name, {"residual": args.residual,
                                                              "lr_scale": args.lr_scale,
                                                              "hr_scale": args.hr_scale})
    if args.load_ckpt:
        checkpoints.restore(args.load_ckpt)
    elif args.residual == "linear":
        batches = patches.tf_dataset(min(LSFIT_BATCH, patches.n_patches), shuffle=False)
        fit_linear_skips(trainer.generator, batches.take(LSFIT_BATCHES), args.lr_scale, args.hr_scale)
    name = checkpoints.run.numpy().decode()
    manager = checkpoints.manager()
    board = TensorBoard(args.logdir, name)

    schedule = ([("pre-training", trainer.pretrain_step)] * args.epochs if args.pretrain else []) + \
        [("training", trainer.train_step)] * args.epochs
    steps_per_epoch = patches.n_patches // args.batchsize
    dataset = strategy.experimental_distribute_dataset(patches.tf_dataset(args.batchsize, seed=args.seed))
    if preview is not None:
        size = [4 * preview.shape[1], 4 * preview.shape[2]]
        board.images({BICUBIC_PREVIEW: tf.image.resize(preview, size, method="bicubic")},
                     int(checkpoints.step))
    logger.info("%s patches, %s steps per epoch, run %s", patches.n_patches, steps_per_epoch, name)
    index, non_finite = int(checkpoints.epoch), 0
    try:
        for index in range(int(checkpoints.epoch), len(schedule)):
            phase, step_fn = schedule[index]
            epoch = index % args.epochs + 1
            with tqdm(total=steps_per_epoch, desc=f"{phase} epoch {epoch}/{args.epochs}", unit="step",
                      mininterval=1.0, dynamic_ncols=True) as bar:
                for batch in dataset:
                    step = int(checkpoints.step)
                    values = {k: float(v) for k, v in step_fn(batch).items()}
                    non_finite = 0 if all(np.isfinite(v) for v in values.values()) else non_finite + 1
                    if non_finite >= DIVERGED_STEPS:
                        raise SR4RSError(f"{phase} diverged (non-finite losses for {non_finite} steps, up to "
                                         f"step {step}): lower --adam_lr or check --lr_scale/--hr_scale")
                    board.scalars({**values, LEARNING_RATE: args.adam_lr}, step)
                    if preview is not None and step % args.previews_step == 0:
                        fake = trainer.generate(preview)
                        board.images({f"{constants.PREVIEW_PREFIX}{f}": fake[f] for f in constants.FACTORS},
                                     step)
                    checkpoints.step.assign_add(1)
                    bar.set_postfix({k.replace("gen_loss_", ""): f"{v:.4g}" for k, v in values.items()},
                                    refresh=False)
                    bar.update()
            checkpoints.epoch.assign(index + 1)
            saved = manager.save(checkpoint_number=index)
            logger.info("%s epoch %s/%s done (step %s), file system wait %.2fs, checkpoint %s", phase, epoch,
                        args.epochs, int(checkpoints.step), patches.pop_wait_seconds(), saved)
    except tf.errors.OpError as err:  # e.g. a patches file that became unreadable, out of memory
        raise SR4RSError(f"training stopped at step {int(checkpoints.step)}: "
                         f"{err.message.strip().splitlines()[0]}") from None
    except KeyboardInterrupt:
        saved = manager.save(checkpoint_number=index)
        logger.warning("Interrupted: checkpoint saved to %s (resume with --load_ckpt %s)", saved, saved)
        raise
    finally:
        board.close()

    if args.savedmodel:
        export_savedmodel(trainer.generator, args.savedmodel, patches.nbands, args.lr_scale, args.hr_scale,
                          description={"lr_stats": patches.lr_stats, "hr_stats": patches.hr_stats,
                                       "dtype": np.dtype(patches.dtype).name, "depth": args.depth,
                                       "nresblocks": args.nresblocks, "residual": args.residual,
                                       "run": name,
                                       "epochs_done": int(checkpoints.epoch), "steps": int(checkpoints.step),
                                       "train_args": vars(args)})


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, check it, train, export."""
    args = build_parser().parse_args(argv)
    setup_logging()
    validate(args)
    log_summary(args)
    train(args, run_name(args, datetime.datetime.now()))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
