"""Train an SR4RS super-resolution GAN on LR/HR patches images, log to TensorBoard, checkpoint,
and export a SavedModel (Step 2 of the README).

    python train.py --lr_patches lr_patches.tif --hr_patches hr_patches.tif \\
        --save_ckpt results/ckpts/ --logdir results/logs/ --savedmodel results/savedmodel
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import constants
from cli import run_cli
from logs import get_logger, native_start_up, quiet_libraries, setup_logging
from train_options import (
    DEFAULTS,
    EXPORTS,
    TF_CONFIG,
    Cluster,
    TrainConfig,
    TrainOptions,
    read_tf_config,
    validate,
)

if TYPE_CHECKING:
    import tensorflow as tf

    from training import TrainResult

__all__ = ["TrainConfig", "TrainOptions", "build_parser", "main", "options_from_args", "train"]

logger = get_logger("train")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, and the options' defaults (when they have one) in their help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help or ""
        return f"{action.help} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The command line of train.py (the original SR4RS parameters, same defaults); every option's
    destination is a field of TrainOptions or TrainConfig."""
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
    g = p.add_argument_group("validation (not in the original): SR vs bicubic on pairs not trained on")
    g.add_argument("--valid_lr_patches", nargs="+", help="LR patches images of validation pairs, from "
                                                          "another area than the training patches")
    g.add_argument("--valid_hr_patches", nargs="+", help="their HR patches images")
    g.add_argument("--valid_split", type=float, metavar="FRACTION",
                   help="or hold out this share of the training pairs, by position (a strip at the end of "
                        "each patches image's area; with extract_patches.py's centres file, overlapping "
                        "neighbours are left out)")
    g.add_argument("--valid_step", type=int, help="also validate every this many steps (0: at each "
                                                  "epoch's end only)")
    g.add_argument("--export", choices=EXPORTS,
                   help="weights of the SavedModel: best = the checkpoint with the best validation PSNR "
                        "(the last one without validation data), last = the last one")
    g.add_argument("--early_stop", type=int, metavar="N",
                   help="stop a phase after N epochs without a better validation PSNR (0: never)")
    g = p.add_argument_group("images scaling")
    g.add_argument("--lr_scale", type=float,
                   help="LR values are multiplied by this (aim for [0, 1]; 1e-4 for 12-bit sensors)")
    g.add_argument("--hr_scale", type=float, help="HR values are multiplied by this")
    g.add_argument("--normalize", action="store_true",
                   help="not in the original: instead of the scales, centre each band on the mean of the LR "
                        "training patches and divide it by their standard deviation (LR and HR alike; the "
                        "SavedModel still takes and gives raw values); --hr_scale then only scales the VGG "
                        "loss's input. Strongly recommended (see README, Recommended recipes)")
    g = p.add_argument_group("network and training")
    g.add_argument("--previews_step", type=int, help="steps between previews")
    g.add_argument("--depth", type=int, help="base depth of generator and discriminator")
    g.add_argument("--nresblocks", type=int, help="residual blocks of the generator")
    g.add_argument("--epochs", type=int, help="epochs (of each phase with --pretrain)")
    g.add_argument("--batchsize", type=int, help="batch size (>= 3: minibatch statistics)")
    g.add_argument("--adam_lr", type=float, help="Adam learning rate")
    g.add_argument("--adam_b1", type=float, help="Adam beta1")
    g.add_argument("--l1weight", type=float, help="L1 loss weight")
    g.add_argument("--l2weight", type=float, help="L2 loss weight")
    g.add_argument("--vggweight", type=float, help="VGG (perceptual) loss weight")
    g.add_argument("--vggfeatures", nargs="?", const=DEFAULTS["vggfeatures"],
                   choices=list(constants.VGG_FEATURES), help="VGG features of the perceptual loss")
    g.add_argument("--ganweight", type=float, help="GAN loss weight")
    g.add_argument("--losstype", nargs="?", const=DEFAULTS["losstype"], choices=constants.LOSS_TYPES,
                   help="GAN loss type")
    g.add_argument("--streaming", action="store_true",
                   help="read patches from disk on the fly (low RAM, more file system reads)")
    g.add_argument("--pretrain", action="store_true",
                   help="first train --epochs epochs with the L1/L2 losses only, then the GAN")
    g.add_argument("--pretrain_epochs", type=int, metavar="N",
                   help="not in the original: with --pretrain, N pre-training epochs instead of --epochs "
                        "(then --epochs GAN epochs; --epochs 0: pre-training only)")
    g.add_argument("--residual", choices=[r for r in constants.RESIDUALS if r],
                   help="not in the original network (default: off): each output = an upsampling of the "
                        "input + the network's output (whose output convs start at zero). bicubic: fixed "
                        "bicubic upsampling; linear: a learned linear upsampling (7x7 LR window), first "
                        "fitted by least squares on the training patches, so training starts from the best "
                        "linear super-resolution of your data (see README)")
    g.add_argument("--upsampling", choices=constants.UPSAMPLINGS,
                   help="not in the original (default: transposed, the original network): how the x2 and "
                        "x4 outputs are made. pixelshuffle: sub-pixel convolutions of the LR-resolution "
                        "features (ESPCN), at a small fraction of the cost of the original's x2/x4 stages, "
                        "and they learn where those do not (see README, Recommended recipes)")
    g.add_argument("--mixed_precision", dest="compute_dtype",
                   choices=[d for d in constants.COMPUTE_DTYPES if d != DEFAULTS["compute_dtype"]],
                   help="compute the networks in this dtype instead of float32 (the original's); "
                        "variables, losses and gradients stay float32 and the SavedModel is float32. "
                        "bfloat16: NVIDIA Ampere or newer; float16: Volta or newer, with dynamic loss "
                        "scaling (see README)")
    g.add_argument("--augment", action="store_true",
                   help="not in the original: turn each training pair by one of the 8 flips/quarter-turns "
                        "(the same for LR and HR), drawn at random")
    g.add_argument("--time_limit", type=float, metavar="MINUTES",
                   help="not in the original: stop after this many minutes of training (e.g. a job's wall "
                        "time), as at the end: validation, checkpoint, SavedModel (0: no limit)")
    g.add_argument("--seed", type=int, help="random seed (weights, shuffling) for reproducible runs")
    p.set_defaults(**DEFAULTS)  # the dataclasses' defaults
    return p


def options_from_args(args: argparse.Namespace) -> TrainOptions:
    """The parsed command line as TrainOptions: each option goes to the field of its name."""

    def fields_of(cls: type) -> dict[str, object]:
        return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}

    return TrainOptions(**fields_of(TrainOptions), trainer=TrainConfig(**fields_of(TrainConfig)))


def log_summary(options: TrainOptions, cluster: Cluster | None = None) -> None:
    """One screen with the parameters, as the original prints them (and the machines training together,
    given a cluster)."""
    cfg = options.trainer
    rows = [("Number of epochs", options.epochs), ("Batch size", options.batchsize),
            ("Adam learning rate", cfg.adam_lr), ("Adam beta1", cfg.adam_b1),
            ("L1 loss weight", cfg.l1weight), ("L2 loss weight", cfg.l2weight),
            ("GAN loss weight", cfg.ganweight), ("GAN loss type", cfg.losstype)]
    if options.vggfile:
        rows += [("VGG file", options.vggfile), ("VGG loss weight", cfg.vggweight),
                 ("VGG features", options.vggfeatures)]
    mixed = cfg.compute_dtype != DEFAULTS["compute_dtype"]
    rows += [("Base depth", cfg.depth), ("Number of ResBlocks", cfg.nresblocks),
             ("Low-res image scale", "per-band mean/std (--normalize)" if cfg.normalize else cfg.lr_scale),
             ("Hi-res image scale", "per-band mean/std (--normalize)" if cfg.normalize else cfg.hr_scale),
             ("Pre-training", "yes" if options.pretrain else "no"),
             ("Residual skip", cfg.residual or "none (original network)"),
             ("Upsampling", cfg.upsampling),
             ("Compute dtype", f"{cfg.compute_dtype} (mixed precision)" if mixed else cfg.compute_dtype),
             ("Patches reading", "streaming" if options.streaming else "in memory"),
             ("Augmentation", "8 flips/quarter-turns" if options.augment else "none")]
    if options.valid_split:
        rows.append(("Validation", f"{options.valid_split:.0%} of the pairs held out by position"))
    elif options.valid_lr_patches:
        rows.append(("Validation", ", ".join(options.valid_lr_patches)))
    if cluster is not None:
        chief = " (the chief)" if cluster.is_chief else ""
        rows.append(("Machines", f"{cluster.workers} ({TF_CONFIG}), this one {cluster.task}{chief}"))
    logger.info("************ Parameters summary ************")
    for label, value in rows:
        logger.info("%-21s: %s", label, value)
    logger.info("********************************************")


def train(options: TrainOptions, strategy: tf.distribute.Strategy | None = None) -> TrainResult:
    """Train as train.py does: check the options, read the patches, build the trainer (resumed, or its
    linear skips fitted), train epoch by epoch with checkpoints, export the SavedModel.

    Args:
        options: the run.
        strategy: a tf.distribute strategy (default: MultiWorkerMirroredStrategy when TF_CONFIG names
            several workers, else MirroredStrategy over several GPUs, else none).

    Returns:
        What the run did (training.TrainResult): run name, folders, SavedModel, epochs and steps done,
        last losses, validation scores, trainer.

    Raises:
        SR4RSError: bad options or patches, a diverging or failing training.
    """
    validate(options)
    cluster = read_tf_config() if strategy is None else None  # a malformed TF_CONFIG: before TensorFlow loads
    log_summary(options, cluster)
    with native_start_up(quiet=False):  # TensorFlow loads here, once the options are checked
        import training

    return training.run(options, strategy)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line into TrainOptions and train."""
    options = options_from_args(build_parser().parse_args(argv))
    setup_logging()
    quiet_libraries(quiet=False)
    train(options)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
