"""The options of a training run: the dataclasses that train.py's command line maps onto, and their
checks; the machines training together (`read_tf_config`: TF_CONFIG, the environment's option). No
TensorFlow here: train.py answers `--help` and option mistakes before TensorFlow loads."""
from __future__ import annotations

import dataclasses
import json
import os

import constants
from errors import SR4RSError
from folders import check_checkpoint, check_new_savedmodel_path, check_writable_folder, checkpoint_location
from logs import get_logger
from raster import open_raster

logger = get_logger("train")

MIN_BATCH_SIZE = 3
PATH_FIELDS = ("save_ckpt", "preview", "logdir", "load_ckpt", "savedmodel", "vggfile")
PATCHES_FIELDS = ("lr_patches", "hr_patches", "valid_lr_patches", "valid_hr_patches")
EXPORTS = ("best", "last")
# Several machines: the cluster in the environment, as MultiWorkerMirroredStrategy reads it.
TF_CONFIG = "TF_CONFIG"
WORKER_JOBS = ("chief", "worker")  # the cluster's jobs that train (no parameter servers, no evaluator)
TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')


@dataclasses.dataclass
class TrainConfig:
    """Network, scaling, optimiser and loss settings (defaults: the original SR4RS ones); train.py's
    options of the same names (README, Step 2). The band count comes with the patches: see Trainer.

    Args:
        depth: base depth of the generator and the discriminator.
        nresblocks: residual blocks of the generator.
        lr_scale: LR values are multiplied by this at the network's input.
        hr_scale: HR values are multiplied by this (the outputs divided by it); with normalize, the scale
            of the VGG loss's input only.
        normalize: standardize every band with the LR training patches' mean and standard deviation
            instead of the scales (scaling.Scaling.standardize; the statistics come with the patches).
        adam_lr: learning rate of the Adam optimisers.
        adam_b1: beta1 of the generator's and the discriminator's Adam.
        l1weight: L1 loss weight.
        l2weight: L2 loss weight.
        vggweight: VGG (perceptual) loss weight.
        ganweight: GAN loss weight.
        losstype: one of constants.LOSS_TYPES.
        residual: one of constants.RESIDUALS (None: the original network).
        upsampling: one of constants.UPSAMPLINGS ("transposed": the original network).
        compute_dtype: the networks' dtype, one of constants.COMPUTE_DTYPES (train.py's --mixed_precision).
        loss_scale_interval: with float16, the loss scale doubles after this many finite steps in a row.
    """

    depth: int = 64
    nresblocks: int = 16
    lr_scale: float = 1e-4
    hr_scale: float = 1e-4
    normalize: bool = False
    adam_lr: float = 1e-3
    adam_b1: float = 0.0
    l1weight: float = 0.0
    l2weight: float = 1000.0
    vggweight: float = 1e-5
    ganweight: float = 1.0
    losstype: str = "WGAN-GP"
    residual: str | None = None
    upsampling: str = "transposed"
    compute_dtype: str = "float32"
    loss_scale_interval: int = 2000


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
        vggfeatures: VGG features of the perceptual loss (a key of constants.VGG_FEATURES).
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


# The defaults of the command line: those of the dataclasses.
DEFAULTS = {f.name: f.default for cls in (TrainOptions, TrainConfig) for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING}


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
    choices = {"losstype": (cfg.losstype, constants.LOSS_TYPES),
               "residual": (cfg.residual, constants.RESIDUALS),
               "upsampling": (cfg.upsampling, constants.UPSAMPLINGS),
               "compute_dtype": (cfg.compute_dtype, constants.COMPUTE_DTYPES),
               "vggfeatures": (options.vggfeatures, tuple(constants.VGG_FEATURES))}
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
    check_writable_folder(os.path.dirname(checkpoint_location(options.save_ckpt, "run")), "--save_ckpt")
    if options.logdir:
        check_writable_folder(options.logdir, "--logdir")
    if options.vggfile is None and cfg.vggweight != TrainConfig.vggweight:
        logger.warning("--vggweight %s is ignored: there is no VGG loss without --vggfile", cfg.vggweight)
    if options.preview and not os.path.isfile(options.preview):
        raise SR4RSError(f"{options.preview}: no such preview image")
    if options.load_ckpt:
        check_checkpoint(options.load_ckpt)
    for name in PATCHES_FIELDS:  # their headers: a missing or unreadable file is named at once
        for path in getattr(options, name) or ():
            open_raster(path)


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


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The machines training together, as TF_CONFIG describes them (MultiWorkerMirroredStrategy).

    Args:
        workers: the training tasks in all (the "chief" and "worker" jobs).
        rank: this machine's index among them (the chief's, or worker 0's without a chief job, is 0).
        task: this machine's task as TF_CONFIG names it, e.g. "worker 1".
    """

    workers: int
    rank: int
    task: str

    @property
    def is_chief(self) -> bool:
        """Whether this machine writes the run's outputs (checkpoints, TensorBoard, SavedModel)."""
        return self.rank == 0


def read_tf_config(text: str | None = None) -> Cluster | None:
    """The cluster that TF_CONFIG describes when it names more than one worker; None for one machine
    (no TF_CONFIG, or a cluster of one). Read before TensorFlow loads, so that a mistake is answered at once.

    Args:
        text: TF_CONFIG's value (default: the environment's).

    Raises:
        SR4RSError: TF_CONFIG is not JSON, or not a cluster of "chief"/"worker" tasks this machine is one of.
    """
    text = os.environ.get(TF_CONFIG, "") if text is None else text
    if not text.strip():
        return None

    def refused(problem: str) -> SR4RSError:
        return SR4RSError(f"{TF_CONFIG} {problem} (expected e.g. {TF_CONFIG_EXAMPLE})")

    try:
        config = json.loads(text)
    except ValueError as err:
        raise refused(f"is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise refused("is not a JSON object")
    cluster = config.get("cluster", {})
    if not isinstance(cluster, dict) or not all(
            isinstance(tasks, list) and all(isinstance(address, str) for address in tasks)
            for tasks in cluster.values()):
        raise refused('has a "cluster" that does not map job names to lists of "host:port" addresses')
    others = sorted(set(cluster) - set(WORKER_JOBS))
    if others:
        raise refused(f"has the job(s) {', '.join(others)}: SR4RS trains with MultiWorkerMirroredStrategy, "
                      'whose cluster has "chief" and "worker" jobs only')
    sizes = {job: len(cluster.get(job, [])) for job in WORKER_JOBS}
    if sizes["chief"] > 1:
        raise refused(f'names {sizes["chief"]} chiefs: there is at most one')
    if sum(sizes.values()) <= 1:
        return None
    task = config.get("task")
    if not isinstance(task, dict):
        raise refused('has no "task": this machine\'s place in the cluster, {"type": ..., "index": ...}')
    job, index = task.get("type"), task.get("index", 0)
    if job not in WORKER_JOBS or type(index) is not int or not 0 <= index < sizes[job]:
        raise refused(f"has the task {json.dumps(task)}, which is not one of its cluster's "
                      f'({sizes["chief"]} chief, {sizes["worker"]} worker(s), indices from 0)')
    rank = index + sizes["chief"] if job == "worker" else 0
    return Cluster(workers=sum(sizes.values()), rank=rank, task=f"{job} {index}")
