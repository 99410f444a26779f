"""A training run, once its options are checked: read the patches and the validation pairs, build the
trainer (resumed, or its linear skips fitted), train epoch by epoch with checkpoints (fit.Fit), export
the SavedModel. train.train() calls it; TensorFlow loads with this module.

On several machines (TF_CONFIG), every worker runs the same command on the same files; only the chief
writes the run's outputs (docs/DESIGN.md §5)."""
from __future__ import annotations

import dataclasses
import datetime
import os
import tempfile

import numpy as np
import tensorflow as tf

from board import TensorBoard, read_preview
from checkpoints import Checkpoints
from constants import SCALE
from datasets import PatchesDataset
from errors import SR4RSError
from export import export_savedmodel
from fit import Fit, exported_weights
from logs import get_logger
from network import SKIP_RADIUS, upsample_bicubic
from raster import band_descriptions, open_raster
from scaling import Scaling
from skip_fit import fit_linear_skips
from train_options import DEFAULTS, TF_CONFIG, TrainOptions, read_tf_config
from trainer import Trainer
from validation import Validator, split_by_position
from vgg import VGG19Features, load_vgg19_weights

logger = get_logger("train")

# The least-squares fit of --residual linear reads at most LSFIT_BATCHES batches of LSFIT_BATCH patches.
LSFIT_BATCH = 64
LSFIT_BATCHES = 500


@dataclasses.dataclass
class TrainResult:
    """What a training run did.

    Args:
        run: the run name (a resumed run keeps its checkpoint's).
        checkpoints: the run's checkpoint folder.
        logdir: the run's TensorBoard folder (None without logdir, and on a worker other than the chief).
        savedmodel: the SavedModel written (None without savedmodel); with several machines, by the chief.
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


def patch_bands(path: str) -> list[str] | None:
    """The band names of a patches image (its band descriptions, e.g. B4, B3, B2, B8, which
    extract_patches.py copies from its input), or None when a band has none: sr.py reads a Sentinel-2
    product's bands in this order."""
    names = band_descriptions(open_raster(path))
    return list(names) if all(names) else None


def make_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when TF_CONFIG names several workers (each machine's devices, every
    worker's included; create it before TensorFlow runs anything), else MirroredStrategy over all GPUs
    when there are several, else the default strategy.

    Raises:
        SR4RSError: a malformed TF_CONFIG, or TensorFlow already started in this process with TF_CONFIG.
    """
    cluster = read_tf_config()
    if cluster is not None:
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as err:  # "Collective ops must be configured at program startup"
            raise SR4RSError(f"{TF_CONFIG} names {cluster.workers} workers, but TensorFlow already ran in "
                             f"this process ({err}): train first, in a process of its own") from None
        logger.info("Worker %s of %s (%s in %s; MultiWorkerMirroredStrategy, %s replicas in all)%s",
                    cluster.rank, cluster.workers, cluster.task, TF_CONFIG, strategy.num_replicas_in_sync,
                    ": the chief, which writes the outputs" if cluster.is_chief else "")
        return strategy
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
        raise SR4RSError(f"--batchsize {options.batchsize} must be a multiple of the {replicas} devices "
                         "training together (the global batch is split evenly)")
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
        # the statistics pass reads both files whole: it refuses non-finite values, naming the patches
        logger.info("Validation: %s pairs, HR mean %s", valid.n_patches,
                    " ".join(f"{m:.6g}" for m in valid.hr_stats["mean"]))
        lr, hr = valid.read(np.arange(valid.n_patches))
    else:
        return None, None
    return train_indices, Validator(lr, hr, lambda x: upsample_bicubic(tf.constant(x), SCALE).numpy(),
                                    options.batchsize)


def run(options: TrainOptions, strategy: tf.distribute.Strategy | None = None) -> TrainResult:
    """Train with checked options (train.train checks them): read the patches, build the trainer (resumed,
    or its linear skips fitted), train epoch by epoch with checkpoints, export the SavedModel.

    Args:
        options: the run.
        strategy: a tf.distribute strategy (default: make_strategy's, from TF_CONFIG and the GPUs).

    Returns:
        What the run did: run name, folders, SavedModel, epochs and steps done, last losses, trainer.

    Raises:
        SR4RSError: bad options or patches, a diverging or failing training.
    """
    strategy = strategy or make_strategy()  # first: MultiWorkerMirroredStrategy must precede any TF op
    if options.seed is not None:
        tf.random.set_seed(options.seed)
    if strategy.extended.should_checkpoint:
        return _run(options, strategy, None)
    # A worker other than the chief writes none of the run's outputs, but still saves its checkpoints and
    # its SavedModel (they may involve collective operations: TensorFlow's multi-worker pattern), into a
    # folder of its own removed at the end.
    with tempfile.TemporaryDirectory(prefix="sr4rs-worker-") as scratch:
        result = _run(options, strategy, scratch)
    logger.info("Done: the chief wrote the run's outputs (this worker's own copies, in %s, are removed)",
                scratch)
    return result


def _run(options: TrainOptions, strategy: tf.distribute.Strategy, scratch: str | None) -> TrainResult:
    """run() on a strategy; scratch: the folder of a worker other than the chief (None: the chief)."""
    cfg = options.trainer
    chief = scratch is None
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
    checkpoints = Checkpoints(trainer, options.save_ckpt, run_name(options, datetime.datetime.now()), scratch)
    if options.load_ckpt:
        checkpoints.restore(options.load_ckpt)
    elif cfg.residual == "linear":  # fitted on the training pairs only
        pairs = patches.n_patches if train_indices is None else len(train_indices)
        batches = patches.tf_dataset(min(LSFIT_BATCH, pairs), shuffle=False, indices=train_indices)
        fit_linear_skips(trainer.generator, batches.take(LSFIT_BATCHES), trainer.scaling)
        if trainer.workers > 1:  # the same start everywhere: another machine's sums may round otherwise
            for var in [v for skip in trainer.generator.skips for v in skip.variables]:
                var.assign(trainer.from_chief(var.numpy()).astype(var.dtype.as_numpy_dtype))
    board = TensorBoard(options.logdir if chief else None, checkpoints.name)
    try:
        losses = Fit(trainer, patches, checkpoints, board, options, preview if chief else None, validator,
                     train_indices).run()
    finally:
        board.close()
    epochs_done, steps = int(checkpoints.epoch), int(checkpoints.step)
    validation = exported_weights(checkpoints, options.export) if validator is not None else {}

    if options.savedmodel:
        export_savedmodel(trainer.generator, options.savedmodel if chief else os.path.join(scratch, "model"),
                          patches.nbands, trainer.scaling,
                          description={"lr_scale": cfg.lr_scale, "hr_scale": cfg.hr_scale,
                                       "normalize": cfg.normalize, "lr_stats": patches.lr_stats,
                                       "hr_stats": patches.hr_stats,
                                       "dtype": np.dtype(patches.dtype).name, "depth": cfg.depth,
                                       "nresblocks": cfg.nresblocks, "residual": cfg.residual,
                                       "upsampling": cfg.upsampling,
                                       "bands": patch_bands(options.lr_patches[0]),
                                       "run": checkpoints.name, "epochs_done": epochs_done, "steps": steps,
                                       "validation": validation, "train_args": dataclasses.asdict(options)})
    return TrainResult(run=checkpoints.name, checkpoints=checkpoints.directory, logdir=board.directory,
                       savedmodel=options.savedmodel, epochs_done=epochs_done, steps=steps, losses=losses,
                       validation=validation, trainer=trainer)
