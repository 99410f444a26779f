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
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from board import TensorBoard, read_preview
from checkpoints import Checkpoints, check_checkpoint
from cli import run_cli
from datasets import PatchesDataset
from errors import SR4RSError
from export import check_new_savedmodel_path, export_savedmodel
from logs import get_logger, setup_logging
from losses import LOSS_TYPES
from network import RESIDUALS, SKIP_RADIUS
from skip_fit import fit_linear_skips
from trainer import COMPUTE_DTYPES, TrainConfig, Trainer
from vgg import FEATURES, VGG19Features, load_vgg19_weights

logger = get_logger("train")

MIN_BATCH_SIZE = 3
# The least-squares fit of --residual linear reads at most LSFIT_BATCHES batches of LSFIT_BATCH patches.
LSFIT_BATCH = 64
LSFIT_BATCHES = 500
LEARNING_RATE = "learning_rate"
# Training stops when the losses stay non-finite this many steps in a row (float16 may skip a few).
DIVERGED_STEPS = 10
PATH_FIELDS = ("save_ckpt", "preview", "logdir", "load_ckpt", "savedmodel", "vggfile")


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
        epochs: epochs (of each phase with pretrain).
        batchsize: batch size (>= MIN_BATCH_SIZE).
        streaming: read the patches from disk on the fly instead of loading them.
        pretrain: first train `epochs` epochs with the L1/L2 losses only, then the GAN.
        seed: random seed of the weights and the shuffling.
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
    batchsize: int = 4
    streaming: bool = False
    pretrain: bool = False
    seed: int | None = None
    trainer: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        """Accept one patches image for a list of one, and path-like objects (kept as str)."""
        for name in ("lr_patches", "hr_patches"):
            paths = getattr(self, name)
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
        trainer: the trained networks (`trainer.generate(lr)` super-resolves a raw LR image).
    """

    run: str
    checkpoints: str
    logdir: str | None
    savedmodel: str | None
    epochs_done: int
    steps: int
    losses: dict[str, float]
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
    g = p.add_argument_group("images scaling")
    g.add_argument("--lr_scale", type=float,
                   help="LR values are multiplied by this (aim for [0, 1]; 1e-4 for 12-bit sensors)")
    g.add_argument("--hr_scale", type=float, help="HR values are multiplied by this")
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
    g.add_argument("--residual", choices=[r for r in RESIDUALS if r],
                   help="not in the original network (default: off): each output = an upsampling of the "
                        "input + the network's output (whose output convs start at zero). bicubic: fixed "
                        "bicubic upsampling; linear: a learned linear upsampling (7x7 LR window), first "
                        "fitted by least squares on the training patches, so training starts from the best "
                        "linear super-resolution of your data (see README)")
    g.add_argument("--mixed_precision", dest="compute_dtype",
                   choices=[d for d in COMPUTE_DTYPES if d != DEFAULTS["compute_dtype"]],
                   help="compute the networks in this dtype instead of float32 (the original's); "
                        "variables, losses and gradients stay float32 and the SavedModel is float32. "
                        "bfloat16: NVIDIA Ampere or newer; float16: Volta or newer, with dynamic loss "
                        "scaling (see README)")
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
    positive = {"epochs": options.epochs, "depth": cfg.depth, "previews_step": options.previews_step,
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
               "compute_dtype": (cfg.compute_dtype, COMPUTE_DTYPES),
               "vggfeatures": (options.vggfeatures, tuple(FEATURES))}
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise SR4RSError(f"{name} {value!r} is not one of {', '.join(map(str, allowed))}")
    if not 0 <= cfg.adam_b1 < 1:
        raise SR4RSError(f"--adam_b1 must be in [0, 1) (got {cfg.adam_b1})")
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
             ("Low-res image scale", cfg.lr_scale), ("Hi-res image scale", cfg.hr_scale),
             ("Pre-training", "yes" if options.pretrain else "no"),
             ("Residual skip", cfg.residual or "none (original network)"),
             ("Compute dtype", f"{cfg.compute_dtype} (mixed precision)" if mixed else cfg.compute_dtype),
             ("Patches reading", "streaming" if options.streaming else "in memory")]
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
    if cfg.residual == "linear" and patches.lr_patch_size < SKIP_RADIUS:
        raise SR4RSError(f"--residual linear needs LR patches of at least {SKIP_RADIUS} pixels "
                         f"(they have {patches.lr_patch_size})")
    check_scales(patches.lr_stats, cfg.lr_scale, "lr")
    check_scales(patches.hr_stats, cfg.hr_scale, "hr")
    return patches


class Fit:
    """The epoch loop: the epochs left (pre-training first with pretrain), losses and previews in
    TensorBoard, a checkpoint at each epoch's end, one on Ctrl-C.

    Args:
        trainer: the trainer.
        patches: the training patches.
        checkpoints: the run's checkpoints (their epoch and step say where to start).
        board: the run's TensorBoard.
        options: the run.
        preview: the preview LR image [1, H, W, C], or None.
    """

    def __init__(self, trainer: Trainer, patches: PatchesDataset, checkpoints: Checkpoints,
                 board: TensorBoard, options: TrainOptions, preview: np.ndarray | None):
        self.trainer, self.patches, self.checkpoints, self.board = trainer, patches, checkpoints, board
        self.options, self.preview = options, preview
        pretraining = [("pre-training", trainer.pretrain_step)] * options.epochs if options.pretrain else []
        self.schedule = pretraining + [("training", trainer.train_step)] * options.epochs
        self.steps_per_epoch = patches.n_patches // options.batchsize
        self.losses: dict[str, float] = {}
        self.non_finite = 0

    def run(self) -> dict[str, float]:
        """Train the epochs left; the losses of the last step."""
        options, checkpoints = self.options, self.checkpoints
        dataset = self.trainer.strategy.experimental_distribute_dataset(
            self.patches.tf_dataset(options.batchsize, seed=options.seed))
        if self.preview is not None:
            self.board.bicubic_preview(self.preview, int(checkpoints.step))
        logger.info("%s patches, %s steps per epoch, run %s", self.patches.n_patches, self.steps_per_epoch,
                    checkpoints.name)
        index = int(checkpoints.epoch)
        try:
            for index in range(int(checkpoints.epoch), len(self.schedule)):
                self.epoch(index, dataset)
                self.end_of_epoch(index)
        except tf.errors.OpError as err:  # e.g. a patches file that became unreadable, out of memory
            raise SR4RSError(f"training stopped at step {int(checkpoints.step)}: "
                             f"{err.message.strip().splitlines()[0]}") from None
        except KeyboardInterrupt:
            saved = checkpoints.save(index)
            logger.warning("Interrupted: checkpoint saved to %s (resume with --load_ckpt %s)", saved, saved)
            raise
        return self.losses

    def label(self, index: int) -> str:
        """How the logs name epoch `index` of the schedule, e.g. "pre-training epoch 2/10"."""
        return f"{self.schedule[index][0]} epoch {index % self.options.epochs + 1}/{self.options.epochs}"

    def epoch(self, index: int, dataset: tf.distribute.DistributedDataset) -> None:
        """Epoch `index` of the schedule: one pass over the patches, with a progress bar."""
        phase, step_fn = self.schedule[index]
        with tqdm(total=self.steps_per_epoch, desc=self.label(index), unit="step", mininterval=1.0,
                  dynamic_ncols=True) as bar:
            for batch in dataset:
                self.step(phase, step_fn, batch)
                bar.set_postfix({k.replace("gen_loss_", ""): f"{v:.4g}" for k, v in self.losses.items()},
                                refresh=False)
                bar.update()

    def step(self, phase: str, step_fn: Callable, batch: dict[str, tf.Tensor]) -> None:
        """One train step, its losses (stop after DIVERGED_STEPS non-finite ones) and preview logged."""
        step = int(self.checkpoints.step)
        self.losses = {k: float(v) for k, v in step_fn(batch).items()}
        self.non_finite = 0 if all(np.isfinite(v) for v in self.losses.values()) else self.non_finite + 1
        if self.non_finite >= DIVERGED_STEPS:
            raise SR4RSError(f"{phase} diverged (non-finite losses for {self.non_finite} steps, up to step "
                             f"{step}): lower --adam_lr or check --lr_scale/--hr_scale")
        self.board.scalars({**self.losses, LEARNING_RATE: self.options.trainer.adam_lr}, step)
        if self.preview is not None and step % self.options.previews_step == 0:
            self.board.generated_preview(self.trainer.generate(self.preview), step)
        self.checkpoints.step.assign_add(1)

    def end_of_epoch(self, index: int) -> None:
        """After epoch `index` of the schedule: checkpoint and log (where per-epoch work goes)."""
        self.checkpoints.epoch.assign(index + 1)
        saved = self.checkpoints.save(index)
        logger.info("%s done (step %s), file system wait %.2fs, checkpoint %s", self.label(index),
                    int(self.checkpoints.step), self.patches.pop_wait_seconds(), saved)


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

    trainer = Trainer(cfg, patches.nbands, strategy, vgg_features)
    checkpoints = Checkpoints(trainer, options.save_ckpt, run_name(options, datetime.datetime.now()))
    if options.load_ckpt:
        checkpoints.restore(options.load_ckpt)
    elif cfg.residual == "linear":
        batches = patches.tf_dataset(min(LSFIT_BATCH, patches.n_patches), shuffle=False)
        fit_linear_skips(trainer.generator, batches.take(LSFIT_BATCHES), cfg.lr_scale, cfg.hr_scale)
    board = TensorBoard(options.logdir, checkpoints.name)
    try:
        losses = Fit(trainer, patches, checkpoints, board, options, preview).run()
    finally:
        board.close()

    if options.savedmodel:
        export_savedmodel(trainer.generator, options.savedmodel, patches.nbands, cfg.lr_scale, cfg.hr_scale,
                          description={"lr_stats": patches.lr_stats, "hr_stats": patches.hr_stats,
                                       "dtype": np.dtype(patches.dtype).name, "depth": cfg.depth,
                                       "nresblocks": cfg.nresblocks, "residual": cfg.residual,
                                       "run": checkpoints.name, "epochs_done": int(checkpoints.epoch),
                                       "steps": int(checkpoints.step),
                                       "train_args": dataclasses.asdict(options)})
    return TrainResult(run=checkpoints.name, checkpoints=checkpoints.directory, logdir=board.directory,
                       savedmodel=options.savedmodel, epochs_done=int(checkpoints.epoch),
                       steps=int(checkpoints.step), losses=losses, trainer=trainer)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line into TrainOptions and train."""
    options = options_from_args(build_parser().parse_args(argv))
    setup_logging()
    train(options)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
