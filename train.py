"""Train an SR4RS super-resolution GAN on LR/HR patches images, log to TensorBoard, checkpoint,
and export a SavedModel (Step 2 of the README).

    python train.py --lr_patches lr_patches.tif --hr_patches hr_patches.tif \\
        --save_ckpt results/ckpts/ --logdir results/logs/ --savedmodel results/savedmodel
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from board import TensorBoard, read_preview
from checkpoints import Checkpoints, check_checkpoint
from cli import run_cli
from constants import SCALE
from datasets import PatchesDataset
from errors import SR4RSError
from export import check_new_savedmodel_path, export_savedmodel
from fit import Fit, exported_weights
from logs import get_logger, setup_logging
from losses import LOSS_TYPES
from network import RESIDUALS, SKIP_RADIUS, UPSAMPLINGS, upsample_bicubic
from scaling import Scaling
from skip_fit import fit_linear_skips
from trainer import COMPUTE_DTYPES, TrainConfig, Trainer
from validation import Validator, split_by_position
from vgg import FEATURES, VGG19Features, load_vgg19_weights

logger = get_logger("train")

MIN_BATCH_SIZE = 3
# The least-squares fit of --residual linear reads at most LSFIT_BATCHES batches of LSFIT_BATCH patches.
LSFIT_BATCH = 64
LSFIT_BATCHES = 500
PATH_FIELDS = ("save_ckpt", "preview", "logdir", "load_ckpt", "savedmodel", "vggfile")
PATCHES_FIELDS = ("lr_patches", "hr_patches", "valid_lr_patches", "valid_hr_patches")
EXPORTS = ("best", "last")


@dataclasses.dataclass
class TrainOptions:
    """One training run: train.py's options, with the same names and defaults (README, Step 2); the
    network, scaling, optimiser and loss options are the fields of `trainer`.

    Args:
        lr_patches: LR patches images (OTBTF format); one path or a list.
        hr_patches: HR patches images, same count and order as lr_patches.
        save_ckpt: checkpoints directory (ending with a separator), or directory/prefix.
        preview: small LR image super-resolved in TensorBoard every previews_step steps.
        logdir: TensorBoard directory (the run gets a sub-directory named after the settings).
        load_ckpt: checkpoint to resume from (a prefix or a directory), or an original SR4RS one.
        savedmodel: SavedModel exported at the end (a new directory).
        vggfile: vgg19.npy weights of the perceptual loss (None: no VGG loss).
        vggfeatures: VGG features of the perceptual loss (a key of vgg.FEATURES).
        previews_step: steps between previews.
        epochs: epochs (of each phase with pretrain, unless pretrain_epochs says otherwise); 0 with
            pretrain_epochs: pre-training only.
        pretrain_epochs: with pretrain, the pre-training epochs (None: `epochs`, as the original).
        batchsize: batch size (>= MIN_BATCH_SIZE).
        streaming: read the patches from disk on the fly instead of loading them.
        pretrain: first train `epochs` epochs with the L1/L2 losses only, then the GAN.
        seed: random seed of the weights and the shuffling.
        augment: turn each training pair by one of the 8 flips/quarter-turns, drawn at random.
        valid_lr_patches: LR patches images of validation pairs (from another area than the training).
        valid_hr_patches: their HR patches images.
        valid_split: instead, hold out this share of the training pairs for validation, by position
            (validation.split_by_position); 0: none.
        valid_step: also validate every this many steps (0: at each epoch's end only).
        export: the SavedModel's weights: "best" (the checkpoint with the best validation PSNR; the last
            ones without validation data) or "last".
        early_stop: stop a phase after this many epochs without a better validation PSNR (0: never).
        time_limit: stop the run after this many minutes of training, as at its end (validation,
            checkpoint, export); 0: no limit.
        trainer: the network, scaling, optimiser and loss settings.
    """

    lr_patches: list[str]
    hr_patches: list[str]
    save_ckpt: str
    preview: str | None = None
    logdir: str | None = None
    load_ckpt: str | None = None
    savedmodel: str | None = None
    vggfile: str | None = None
    vggfeatures: str = "1234"
    previews_step: int = 200
    epochs: int = 120
    pretrain_epochs: int | None = None
    batchsize: int = 4
    streaming: bool = False
    pretrain: bool = False
    seed: int | None = None
    augment: bool = False
    valid_lr_patches: list[str] | None = None
    valid_hr_patches: list[str] | None = None
    valid_split: float = 0.0
    valid_step: int = 0
    export: str = "best"
    early_stop: int = 0
    time_limit: float = 0.0
    trainer: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        """Accept one patches image for a list of one, and path-like objects (kept as str)."""
        for name in PATCHES_FIELDS:
            paths = getattr(self, name)
            if paths is None:
                continue
            paths = [paths] if isinstance(paths, str | os.PathLike) else paths
            setattr(self, name, [os.fspath(p) for p in paths])
        for name in PATH_FIELDS:
            if getattr(self, name) is not None:
                setattr(self, name, os.fspath(getattr(self, name)))


@dataclasses.dataclass
class TrainResult:
    """What a training run did.

    Args:
        run: the run name (a resumed run keeps its checkpoint's).
        checkpoints: the run's checkpoint folder.
        logdir: the run's TensorBoard folder (None without logdir).
        savedmodel: the SavedModel written (None without savedmodel).
        epochs_done: epochs done in all, pre-training epochs included.
        steps: steps done in all, those before resuming included.
        losses: the losses of the last step of this call (empty when no epoch was left).
        validation: the validation scores of the exported (or, without savedmodel, the last) weights
            (validation.Validator.evaluate's keys, plus epoch and step); empty without validation.
        trainer: the trained networks (`trainer.generate(lr)` super-resolves a raw LR image).
    """

    run: str
    checkpoints: str
    logdir: str | None
    savedmodel: str | None
    epochs_done: int
    steps: int
    losses: dict[str, float]
    validation: dict[str, object]
    trainer: Trainer = dataclasses.field(repr=False)


# The defaults of the command line: those of the dataclasses.
DEFAULTS = {f.name: f.default for cls in (TrainOptions, TrainConfig) for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING}


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
    g.add_argument("--vggfeatures", nargs="?", const=DEFAULTS["vggfeatures"], choices=list(FEATURES),
                   help="VGG features of the perceptual loss")
    g.add_argument("--ganweight", type=float, help="GAN loss weight")
    g.add_argument("--losstype", nargs="?", const=DEFAULTS["losstype"], choices=LOSS_TYPES,
                   help="GAN loss type")
    g.add_argument("--streaming", action="store_true",
                   help="read patches from disk on the fly (low RAM, more file system reads)")
    g.add_argument("--pretrain", action="store_true",
                   help="first train --epochs epochs with the L1/L2 losses only, then the GAN")
    g.add_argument("--pretrain_epochs", type=int, metavar="N",
                   help="not in the original: with --pretrain, N pre-training epochs instead of --epochs "
                        "(then --epochs GAN epochs; --epochs 0: pre-training only)")
    g.add_argument("--residual", choices=[r for r in RESIDUALS if r],
                   help="not in the original network (default: off): each output = an upsampling of the "
                        "input + the network's output (whose output convs start at zero). bicubic: fixed "
                        "bicubic upsampling; linear: a learned linear upsampling (7x7 LR window), first "
                        "fitted by least squares on the training patches, so training starts from the best "
                        "linear super-resolution of your data (see README)")
    g.add_argument("--upsampling", choices=UPSAMPLINGS,
                   help="not in the original (default: transposed, the original network): how the x2 and "
                        "x4 outputs are made. pixelshuffle: sub-pixel convolutions of the LR-resolution "
                        "features (ESPCN), at a small fraction of the cost of the original's x2/x4 stages, "
                        "and they learn where those do not (see README, Recommended recipes)")
    g.add_argument("--mixed_precision", dest="compute_dtype",
                   choices=[d for d in COMPUTE_DTYPES if d != DEFAULTS["compute_dtype"]],
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


def validate(options: TrainOptions) -> None:
    """Refuse bad options before anything long starts (the command line's choices too, for Python
    callers)."""
    cfg = options.trainer
    if options.batchsize < MIN_BATCH_SIZE:
        raise SR4RSError(f"--batchsize {options.batchsize} is too small: it must be >= {MIN_BATCH_SIZE}, "
                         "because the discriminator uses minibatch statistics (Karras et al.)")
    if options.pretrain_epochs is not None and not (options.pretrain and options.pretrain_epochs > 0):
        raise SR4RSError(f"--pretrain_epochs {options.pretrain_epochs}: it needs --pretrain and must be > 0")
    if not (options.epochs > 0 or (options.epochs == 0 and options.pretrain_epochs)):
        raise SR4RSError(f"--epochs must be > 0, or 0 with --pretrain_epochs (got {options.epochs})")
    positive = {"depth": cfg.depth, "previews_step": options.previews_step,
                "adam_lr": cfg.adam_lr, "lr_scale": cfg.lr_scale, "hr_scale": cfg.hr_scale}
    for name, value in positive.items():
        if not value > 0:
            raise SR4RSError(f"--{name} must be > 0 (got {value})")
    weights = {"nresblocks": cfg.nresblocks, "l1weight": cfg.l1weight, "l2weight": cfg.l2weight,
               "vggweight": cfg.vggweight, "ganweight": cfg.ganweight}
    for name, value in weights.items():
        if value < 0:
            raise SR4RSError(f"--{name} must be >= 0 (got {value})")
    choices = {"losstype": (cfg.losstype, LOSS_TYPES), "residual": (cfg.residual, RESIDUALS),
               "upsampling": (cfg.upsampling, UPSAMPLINGS),
               "compute_dtype": (cfg.compute_dtype, COMPUTE_DTYPES),
               "vggfeatures": (options.vggfeatures, tuple(FEATURES))}
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise SR4RSError(f"{name} {value!r} is not one of {', '.join(map(str, allowed))}")
    if not 0 <= cfg.adam_b1 < 1:
        raise SR4RSError(f"--adam_b1 must be in [0, 1) (got {cfg.adam_b1})")
    validating = check_validation_options(options)
    if options.export not in EXPORTS:
        raise SR4RSError(f"export {options.export!r} is not one of {', '.join(EXPORTS)}")
    if not validating and (options.valid_step or options.early_stop):
        raise SR4RSError("--valid_step and --early_stop need validation data (--valid_split, or "
                         "--valid_lr_patches and --valid_hr_patches)")
    if options.pretrain and cfg.l1weight == 0 and cfg.l2weight == 0:
        raise SR4RSError("--pretrain needs --l1weight or --l2weight > 0 (pre-training uses only them)")
    try:
        json.dumps(dataclasses.asdict(options))
    except TypeError as err:
        raise SR4RSError(f"the options go to the SavedModel's sr4rs.json: use plain Python values ({err})") \
            from None
    if options.savedmodel:
        check_new_savedmodel_path(options.savedmodel)
    if options.preview and not os.path.isfile(options.preview):
        raise SR4RSError(f"{options.preview}: no such preview image")
    if options.load_ckpt:
        check_checkpoint(options.load_ckpt)


def check_validation_options(options: TrainOptions) -> bool:
    """Refuse inconsistent validation options; whether the run validates."""
    if not 0 <= options.valid_split < 1:
        raise SR4RSError(f"--valid_split must be in [0, 1) (got {options.valid_split})")
    for name in ("valid_step", "early_stop", "time_limit"):
        if getattr(options, name) < 0:
            raise SR4RSError(f"--{name} must be >= 0 (got {getattr(options, name)})")
    given = options.valid_lr_patches is not None, options.valid_hr_patches is not None
    if given[0] != given[1]:
        raise SR4RSError("--valid_lr_patches and --valid_hr_patches go together")
    if given[0] and options.valid_split:
        raise SR4RSError("--valid_split holds out training pairs: give it or --valid_lr/hr_patches, not both")
    return given[0] or options.valid_split > 0


def run_name(options: TrainOptions, now: datetime.datetime) -> str:
    """Name of the run (TensorBoard sub-directory, checkpoints) encoding the settings, as the original."""
    cfg = options.trainer
    vgg = options.vggfile is not None
    parts = [("E", options.epochs), ("B", options.batchsize), ("LR", cfg.adam_lr), ("Gan", cfg.ganweight),
             ("L1-", cfg.l1weight), ("L2-", cfg.l2weight), ("VGG", cfg.vggweight if vgg else 0),
             ("VGGFeat", options.vggfeatures if vgg else 0), ("Loss", cfg.losstype),
             ("D", cfg.depth), ("RB", cfg.nresblocks), ("LRSC", cfg.lr_scale), ("HRSC", cfg.hr_scale)]
    name = "SR4RS" + "".join(f"_{key}{value}" for key, value in parts if value)
    if cfg.residual:
        name += f"_Residual-{cfg.residual}"
    if cfg.upsampling != DEFAULTS["upsampling"]:
        name += f"_Upsampling-{cfg.upsampling}"
    if cfg.normalize:
        name += "_Normalized"
    if cfg.compute_dtype != DEFAULTS["compute_dtype"]:
        name += f"_MixedPrecision-{cfg.compute_dtype}"
    if options.pretrain:
        name += "pretrained"
    return name + f"_{now.day}{now.strftime('%b')}_{now.hour}h{now.minute}min"


def log_summary(options: TrainOptions) -> None:
    """One screen with the parameters, as the original prints them."""
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
    logger.info("************ Parameters summary ************")
    for label, value in rows:
        logger.info("%-21s: %s", label, value)
    logger.info("********************************************")


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


def read_patches(options: TrainOptions, replicas: int, vgg: bool) -> PatchesDataset:
    """The training patches, checked against the options.

    Args:
        options: the run.
        replicas: devices a batch is split across.
        vgg: whether there is a VGG loss (it needs RGB).
    """
    cfg = options.trainer
    patches = PatchesDataset(options.lr_patches, options.hr_patches, streaming=options.streaming)
    if options.batchsize > patches.n_patches:
        raise SR4RSError(f"--batchsize {options.batchsize} is larger than the {patches.n_patches} patches: "
                         "one batch cannot be filled")
    if options.batchsize % replicas:
        raise SR4RSError(f"--batchsize {options.batchsize} must be a multiple of the {replicas} devices")
    if vgg and patches.nbands < 3:
        raise SR4RSError(f"--vggfile needs RGB: the patches have {patches.nbands} band(s), 3 at least")
    if cfg.residual == "linear" and patches.lr_patch_size < 2 * SKIP_RADIUS + 1:
        raise SR4RSError(f"--residual linear needs LR patches of at least {2 * SKIP_RADIUS + 1} pixels "
                         f"(they have {patches.lr_patch_size})")
    if cfg.normalize:
        logger.info("Normalization (LR training patches): mean %s, std %s",
                    " ".join(f"{m:.6g}" for m in patches.lr_stats["mean"]),
                    " ".join(f"{m:.6g}" for m in patches.lr_stats["std"]))
    else:
        check_scales(patches.lr_stats, cfg.lr_scale, "lr")
    if not cfg.normalize or vgg:
        check_scales(patches.hr_stats, cfg.hr_scale, "hr")
    return patches


def read_validation(options: TrainOptions, patches: PatchesDataset
                    ) -> tuple[np.ndarray | None, Validator | None]:
    """The validation pairs, held out of the training patches or read from their own patches images.

    Args:
        options: the run.
        patches: the training patches.

    Returns:
        (the indices of the patches to train on (None: all), the validator (None: no validation)).
    """
    train_indices = None
    if options.valid_split:
        split = split_by_position(options.lr_patches, patches.file_counts, patches.lr_patch_size,
                                  options.valid_split)
        if len(split.train) < options.batchsize:
            raise SR4RSError(f"--valid_split {options.valid_split} leaves {len(split.train)} training pairs, "
                             f"fewer than --batchsize {options.batchsize}")
        logger.info("Validation: %s pairs held out by position, %s for training, %s left out of both (they "
                    "overlap validation pairs)", len(split.valid), len(split.train), split.dropped)
        lr, hr = patches.read(split.valid)
        train_indices = split.train
    elif options.valid_lr_patches:
        valid = PatchesDataset(options.valid_lr_patches, options.valid_hr_patches, streaming=True)
        if valid.nbands != patches.nbands:
            raise SR4RSError(f"{options.valid_lr_patches[0]}: validation patches with {valid.nbands} "
                             f"band(s), the training patches have {patches.nbands}")
        lr, hr = valid.read(np.arange(valid.n_patches))
    else:
        return None, None
    return train_indices, Validator(lr, hr, lambda x: upsample_bicubic(tf.constant(x), SCALE).numpy(),
                                    options.batchsize)


def train(options: TrainOptions, strategy: tf.distribute.Strategy | None = None) -> TrainResult:
    """Train as train.py does: check the options, read the patches, build the trainer (resumed, or its
    linear skips fitted), train epoch by epoch with checkpoints, export the SavedModel.

    Args:
        options: the run.
        strategy: a tf.distribute strategy (default: MirroredStrategy over several GPUs, else none).

    Returns:
        What the run did: run name, folders, SavedModel, epochs and steps done, last losses, trainer.

    Raises:
        SR4RSError: bad options or patches, a diverging or failing training.
    """
    validate(options)
    log_summary(options)
    cfg = options.trainer
    if options.seed is not None:
        tf.random.set_seed(options.seed)
    strategy = strategy or make_strategy()
    if cfg.compute_dtype == "float16" and not tf.config.list_logical_devices("GPU"):
        logger.warning("--mixed_precision float16 without a GPU: CPUs have no fast float16 kernels (several "
                       "times slower than float32); bfloat16 is fast on CPUs with AVX512-BF16 or AMX")
    vgg_features = None
    if options.vggfile:
        vgg_features = VGG19Features(load_vgg19_weights(options.vggfile, options.vggfeatures),
                                     options.vggfeatures)
    patches = read_patches(options, strategy.num_replicas_in_sync, vgg_features is not None)
    preview = read_preview(options.preview, patches.nbands, cfg.depth) if options.preview else None
    train_indices, validator = read_validation(options, patches)

    scaling = None
    if cfg.normalize:
        scaling = Scaling.standardize(patches.lr_stats["mean"], patches.lr_stats["std"])
    trainer = Trainer(cfg, patches.nbands, strategy, vgg_features, scaling)
    checkpoints = Checkpoints(trainer, options.save_ckpt, run_name(options, datetime.datetime.now()))
    if options.load_ckpt:
        checkpoints.restore(options.load_ckpt)
    elif cfg.residual == "linear":  # fitted on the training pairs only
        pairs = patches.n_patches if train_indices is None else len(train_indices)
        batches = patches.tf_dataset(min(LSFIT_BATCH, pairs), shuffle=False, indices=train_indices)
        fit_linear_skips(trainer.generator, batches.take(LSFIT_BATCHES), trainer.scaling)
    board = TensorBoard(options.logdir, checkpoints.name)
    try:
        losses = Fit(trainer, patches, checkpoints, board, options, preview, validator, train_indices).run()
    finally:
        board.close()
    epochs_done, steps = int(checkpoints.epoch), int(checkpoints.step)
    validation = exported_weights(checkpoints, options.export) if validator is not None else {}

    if options.savedmodel:
        export_savedmodel(trainer.generator, options.savedmodel, patches.nbands, trainer.scaling,
                          description={"lr_scale": cfg.lr_scale, "hr_scale": cfg.hr_scale,
                                       "normalize": cfg.normalize, "lr_stats": patches.lr_stats,
                                       "hr_stats": patches.hr_stats,
                                       "dtype": np.dtype(patches.dtype).name, "depth": cfg.depth,
                                       "nresblocks": cfg.nresblocks, "residual": cfg.residual,
                                       "upsampling": cfg.upsampling,
                                       "run": checkpoints.name, "epochs_done": epochs_done, "steps": steps,
                                       "validation": validation, "train_args": dataclasses.asdict(options)})
    return TrainResult(run=checkpoints.name, checkpoints=checkpoints.directory, logdir=board.directory,
                       savedmodel=options.savedmodel, epochs_done=epochs_done, steps=steps, losses=losses,
                       validation=validation, trainer=trainer)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line into TrainOptions and train."""
    options = options_from_args(build_parser().parse_args(argv))
    setup_logging()
    train(options)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
