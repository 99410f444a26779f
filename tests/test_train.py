"""train.py end to end: real tiny trainings on patches made by extract_patches.py from a synthetic pair,
from the command line and from Python (`train(TrainOptions(...))`)."""
import dataclasses
import glob
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from helpers import ROOT, write_random_vgg19
from osgeo import gdal

import board
import constants
import extract_patches
import fit
import train
import training
from checkpoints import Checkpoints
from cli import run_cli
from demo import scene as demo_scene
from errors import SR4RSError
from folders import read_metadata
from raster import open_raster, read_array
from train import TrainOptions
from trainer import TrainConfig, Trainer

TINY = ["--depth", "4", "--nresblocks", "1", "--epochs", "1", "--batchsize", "4", "--previews_step", "3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """LR/HR patches (8 px LR, 4 bands, int16) from a small demo scene, a preview and a vgg19.npy."""
    folder = tmp_path_factory.mktemp("train")
    lr, hr = demo_scene.make_demo_scene(str(folder / "scene"), size_hr=128, seed=1)
    paths = {"lr": str(folder / "lr_patches.tif"), "hr": str(folder / "hr_patches.tif"),
             "vgg": write_random_vgg19(str(folder / "vgg19.npy")), "dir": folder,
             "preview": str(folder / "preview.tif"), "scene": (lr, hr)}
    code = extract_patches.main(["--lr", lr, "--hr", hr, "--lr_patchsize", "8", "--step", "8",
                                 "--out_lr", paths["lr"], "--out_hr", paths["hr"], "--max_patches", "12",
                                 "--quiet"])
    assert code == 0
    tf.io.gfile.copy(lr, paths["preview"])
    return paths


def events(logdir):
    """{tag: [(step, value or image count)]} of every event file under logdir."""
    found = {}
    for path in sorted(glob.glob(os.path.join(logdir, "*", "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tensor = tf.make_ndarray(value.tensor)
                item = float(tensor) if tensor.ndim == 0 else tensor.shape[0]
                found.setdefault(value.tag, []).append((event.step, item))
    return found


@pytest.fixture(scope="module")
def first_run(data):
    out = data["dir"] / "run1"
    out.mkdir()
    args = ["--lr_patches", data["lr"], "--hr_patches", data["hr"], "--preview", data["preview"],
            "--vggfile", data["vgg"], "--vggweight", "1e-4", "--l1weight", "10", "--pretrain",
            "--save_ckpt", str(out / "ckpts") + "/", "--logdir", str(out / "logs"),
            "--savedmodel", str(out / "savedmodel"), "--seed", "1", *TINY]
    assert run_cli(train.main, args) == 0
    return out


@pytest.mark.slow
def test_losses_are_finite_and_logged_under_their_names(first_run):
    found = events(first_run / "logs")
    pretrain_steps, train_steps = [0, 1, 2], [3, 4, 5]  # 12 patches / batch 4, one epoch per phase
    for tag in (constants.GEN_LOSS_L1, constants.GEN_LOSS_L2, fit.LEARNING_RATE):
        assert [s for s, _ in found[tag]] == pretrain_steps + train_steps
    for tag in (constants.GEN_LOSS_GAN, constants.GEN_LOSS_VGG, constants.DIS_LOSS):
        assert [s for s, _ in found[tag]] == train_steps
    assert all(np.isfinite(v) for tag in found if "loss" in tag for _, v in found[tag])
    assert all(v > 0 for _, v in found[constants.GEN_LOSS_VGG])


@pytest.mark.slow
def test_previews_are_logged_for_the_three_scales_and_bicubic(first_run):
    found = events(first_run / "logs")
    for factor in constants.FACTORS:
        assert [s for s, _ in found[f"{constants.PREVIEW_PREFIX}{factor}"]] == [0, 3]
    assert [s for s, _ in found[board.BICUBIC_PREVIEW]] == [0]
    run_dirs = os.listdir(first_run / "logs")
    assert len(run_dirs) == 1 and run_dirs[0].startswith("SR4RS_E1_B4_LR0.001_Gan1.0_L1-10.0")
    assert "LossWGAN-GP_D4_RB1" in run_dirs[0] and "pretrained" in run_dirs[0]


@pytest.mark.slow
def test_a_checkpoint_per_epoch_and_a_working_savedmodel(first_run):
    assert len(glob.glob(str(first_run / "ckpts" / "*" / "*.index"))) == 2
    model = tf.saved_model.load(str(first_run / "savedmodel"))
    signature = model.signatures[constants.SIGNATURE_KEY]
    for pad in constants.PADS:
        ts = 8
        lr = tf.random.uniform([1, (ts + 2 * pad) // 4, (ts + 2 * pad) // 4, 4], 0, 3000)
        assert signature(lr_input=lr)[constants.output_name(pad)].shape == (1, ts, ts, 4)
    meta = read_metadata(str(first_run / "savedmodel"))
    assert meta["nbands"] == 4 and meta["steps"] == 6 and meta["dtype"] == "int16"
    assert len(meta["lr_stats"]["mean"]) == 4 and meta["lr_stats"]["max"][0] > 0


@pytest.mark.slow
def test_resuming_continues_the_steps_in_the_same_run(first_run, data):
    args = ["--lr_patches", data["lr"], "--hr_patches", data["hr"], "--losstype", "LSGAN", "--streaming",
            "--save_ckpt", str(first_run / "ckpts") + "/", "--logdir", str(first_run / "logs"),
            "--load_ckpt", str(first_run / "ckpts"), *TINY, "--epochs", "3"]
    assert run_cli(train.main, args) == 0
    assert len(os.listdir(first_run / "logs")) == 1  # the curves continue in the first run's directory
    steps = [s for s, _ in events(first_run / "logs")[constants.DIS_LOSS]]
    assert steps == [3, 4, 5, 6, 7, 8]  # 2 epochs done (pre-training, training), third epoch resumed
    assert len(glob.glob(str(first_run / "ckpts" / "*" / "*.index"))) == 3


@pytest.mark.slow
def test_the_readme_example_is_accepted(data, tmp_path):
    readme_args = ["--lr_patches", data["lr"], "--hr_patches", data["hr"], "--preview", data["preview"],
                   "--vggfile", data["vgg"], "--save_ckpt", str(tmp_path / "ckpts") + "/",
                   "--logdir", str(tmp_path / "logs") + "/", "--vggweight", "0.00003", "--l1weight", "200",
                   "--l2weight", "0.0", "--depth", "64", "--vggfeatures", "1234", "--batchsize", "4",
                   "--adam_lr", "0.0002", "--lr_scale", "0.0001", "--hr_scale", "0.0001",
                   "--savedmodel", str(tmp_path / "savedmodel")]
    options = train.options_from_args(train.build_parser().parse_args(readme_args))
    train.validate(options)
    assert (options.trainer.depth, options.epochs, options.trainer.l1weight, options.trainer.losstype) == \
        (64, 120, 200.0, "WGAN-GP")
    # the same command on a tiny network for one epoch trains and exports
    assert run_cli(train.main, readme_args + ["--depth", "4", "--nresblocks", "1", "--epochs", "1"]) == 0
    assert os.path.isdir(tmp_path / "savedmodel")


def test_the_command_line_maps_onto_the_dataclasses_with_their_defaults(data):
    parser = train.build_parser()
    required = ["--lr_patches", data["lr"], "--hr_patches", data["hr"], "--save_ckpt", "ck/"]
    options = train.options_from_args(parser.parse_args(required))
    assert options == TrainOptions(lr_patches=[data["lr"]], hr_patches=[data["hr"]], save_ckpt="ck/")
    # every option lands in a field of its name (--mixed_precision in compute_dtype), and only one
    option_fields = {f.name for f in dataclasses.fields(TrainOptions)}
    trainer_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    dests = set(vars(parser.parse_args(required)))
    assert not option_fields & trainer_fields and dests <= option_fields | trainer_fields
    args = ["--epochs", "7", "--depth", "8", "--mixed_precision", "bfloat16", "--streaming", "--losstype"]
    options = train.options_from_args(parser.parse_args(required + args))
    assert (options.epochs, options.streaming, options.trainer.depth, options.trainer.compute_dtype,
            options.trainer.losstype) == (7, True, 8, "bfloat16", "WGAN-GP")
    # the documented defaults show in the help
    text = " ".join(parser.format_help().split())
    for default in ("(default: 120)", "(default: 1000.0)", "(default: 1e-05)", "(default: WGAN-GP)",
                    "(default: 1234)", "(default: float32)"):
        assert default in text


@pytest.fixture(scope="module")
def python_run(data):
    """A training run from Python: pathlib paths, one patches image given as a path, no TensorBoard."""
    out = data["dir"] / "python"
    out.mkdir()
    options = TrainOptions(lr_patches=pathlib.Path(data["lr"]), hr_patches=[data["hr"]],
                           save_ckpt=out / "ckpts", savedmodel=out / "model", epochs=1, batchsize=4, seed=3,
                           trainer=TrainConfig(depth=4, nresblocks=1, losstype="LSGAN", l1weight=1.0))
    return options, train.train(options)


@pytest.mark.slow
def test_train_from_python_returns_what_the_run_did(python_run, data):
    options, result = python_run
    out = data["dir"] / "python"
    assert options.lr_patches == [data["lr"]] and options.save_ckpt == str(out / "ckpts")
    assert result.run.startswith("SR4RS_E1_B4_LR0.001_Gan1.0_L1-1.0_L2-1000.0_LossLSGAN_D4_RB1")
    assert result.checkpoints == str(out / f"ckpts{result.run}")  # save_ckpt without "/": a prefix
    assert sorted(os.listdir(result.checkpoints)) == ["checkpoint", "ckpt-0.data-00000-of-00001",
                                                      "ckpt-0.index"]
    assert (result.savedmodel, result.logdir) == (str(out / "model"), None)
    assert (result.epochs_done, result.steps) == (1, 3)  # 12 patches, batch 4
    assert set(result.losses) == {constants.GEN_LOSS_GAN, constants.GEN_LOSS_VGG, constants.GEN_LOSS_L1,
                                  constants.GEN_LOSS_L2, constants.DIS_LOSS}
    assert all(np.isfinite(v) for v in result.losses.values()) and result.losses[constants.GEN_LOSS_L1] > 0


@pytest.mark.slow
def test_train_from_python_exports_the_trained_generator_and_its_options(python_run):
    options, result = python_run
    meta = read_metadata(result.savedmodel)
    assert meta["train_args"] == json.loads(json.dumps(dataclasses.asdict(options)))
    assert meta["train_args"]["trainer"]["losstype"] == "LSGAN" and meta["steps"] == result.steps
    assert meta["bands"] == list(demo_scene.BANDS)  # the scene's band descriptions, through the patches
    signature = tf.saved_model.load(result.savedmodel).signatures[constants.SIGNATURE_KEY]
    lr = np.random.default_rng(1).uniform(0, 3000, (1, 20, 20, 4)).astype(np.float32)
    exported = signature(lr_input=tf.constant(lr))[constants.output_name(32)].numpy()
    expected = result.trainer.generate(tf.constant(lr))[1].numpy()[:, 32:-32, 32:-32]
    np.testing.assert_allclose(exported, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("change, message", [
    ({"trainer": TrainConfig(losstype="GAN")}, "losstype 'GAN' is not one of WGAN-GP, LSGAN"),
    ({"trainer": TrainConfig(compute_dtype="float64")}, "compute_dtype 'float64' is not one of float32"),
    ({"vggfeatures": "vgg99"}, "vggfeatures 'vgg99' is not one of 1234"),
    ({"trainer": TrainConfig(adam_lr=np.float32(1e-3))}, "go to the SavedModel's sr4rs.json"),
    ({"epochs": 0}, "--epochs must be > 0, or 0 with --pretrain_epochs (got 0)"),
    ({"pretrain_epochs": 3}, "--pretrain_epochs 3: it needs --pretrain and must be > 0"),
])
def test_python_callers_get_the_checks_of_the_command_line(data, tmp_path, change, message):
    options = TrainOptions(lr_patches=data["lr"], hr_patches=data["hr"], save_ckpt=str(tmp_path / "ck"),
                           **change)
    with pytest.raises(SR4RSError) as err:
        train.train(options)
    assert message in str(err.value)
    assert os.listdir(tmp_path) == []


def test_ctrl_c_saves_a_checkpoint_and_exports_nothing(data, tmp_path, monkeypatch):
    def interrupt(self, values, step):
        if step == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(board.TensorBoard, "scalars", interrupt)
    args = ["--lr_patches", data["lr"], "--hr_patches", data["hr"], "--save_ckpt", str(tmp_path / "ck") + "/",
            "--savedmodel", str(tmp_path / "model"), "--pretrain", *TINY]
    assert run_cli(train.main, args) == 130
    assert len(glob.glob(str(tmp_path / "ck" / "*" / "*.index"))) == 1
    assert not os.path.exists(tmp_path / "model")


@pytest.mark.parametrize("extra, message", [
    (["--batchsize", "2"], "--batchsize 2 is too small: it must be >= 3"),
    (["--batchsize", "13"], "larger than the 12 patches"),
    (["--savedmodel", "EXISTING"], "already exists; give a new directory"),
    (["--vggfile", "missing.npy"], "missing.npy: no such VGG weights file"),
    (["--load_ckpt", "nowhere/ck-3"], "nowhere/ck-3: no such checkpoint"),
    (["--pretrain", "--l2weight", "0"], "--pretrain needs --l1weight or --l2weight"),
    (["--valid_split", "1"], "--valid_split must be in [0, 1) (got 1.0)"),
    (["--valid_split", "0.2", "--valid_lr_patches", "a.tif", "--valid_hr_patches", "b.tif"], "not both"),
    (["--valid_lr_patches", "a.tif"], "--valid_lr_patches and --valid_hr_patches go together"),
    (["--early_stop", "2"], "--valid_step and --early_stop need validation data"),
    (["--valid_split", "0.95"], "0 training and 12 validation patches: too few patches to split"),
    (["--valid_split", "0.7"], "leaves 3 training pairs, fewer than --batchsize 4"),
    (["--savedmodel", "AFILE/results/model"], "--savedmodel needs a directory, and "),
    (["--logdir", "AFILE"], "AFILE: --logdir needs a directory, and "),
    (["--save_ckpt", "AFILE/ck/"], "--save_ckpt needs a directory, and "),
])
def test_refusals_are_one_line_and_leave_no_checkpoint(data, tmp_path, capsys, extra, message):
    (tmp_path / "AFILE").write_text("a file where a folder should be")
    extra = [str(tmp_path) if e == "EXISTING" else e.replace("AFILE", str(tmp_path / "AFILE")) for e in extra]
    message = message.replace("AFILE", str(tmp_path / "AFILE"))
    args = ["--lr_patches", data["lr"], "--hr_patches", data["hr"], "--save_ckpt", str(tmp_path / "ck") + "/",
            *TINY, *extra]
    assert run_cli(train.main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("error: ")
    assert not os.path.exists(tmp_path / "ck")


def test_help_and_option_mistakes_are_answered_before_tensorflow_loads(data, tmp_path):
    probe = ("import sys, cli, train\ntry:\n    code = cli.run_cli(train.main, sys.argv[1:])\n"
             "except SystemExit as end:  # --help\n    code = end.code\n"
             "print(code, 'tensorflow' in sys.modules)")
    common = ["--lr_patches", data["lr"], "--hr_patches", data["hr"], "--save_ckpt", f"{tmp_path}/ck/"]
    missing = ["--valid_lr_patches", data["lr"], "--valid_hr_patches", "no.tif"]
    for args, expected in ((["--help"], "0 False"), ([*common, "--batchsize", "1"], "2 False"),
                           ([*common, "--savedmodel", str(tmp_path)], "2 False"),
                           ([*common, *missing], "2 False")):
        done = subprocess.run([sys.executable, "-c", probe, *args], cwd=ROOT, capture_output=True, text=True)
        assert done.stdout.strip().splitlines()[-1] == expected, done.stderr
        assert "tensorflow" not in done.stderr.lower()


def test_missing_output_folders_are_made_and_a_lone_vggweight_is_flagged(data, tmp_path, caplog):
    args = ["--lr_patches", data["lr"], "--hr_patches", data["hr"], "--save_ckpt", f"{tmp_path}/r/ck/",
            "--logdir", str(tmp_path / "r" / "logs"), "--savedmodel", str(tmp_path / "r" / "sm"),
            *TINY, "--vggweight", "0.01"]
    assert run_cli(train.main, args) == 0
    assert os.path.isfile(tmp_path / "r" / "sm" / "saved_model.pb")
    assert "--vggweight 0.01 is ignored: there is no VGG loss without --vggfile" in caplog.text


@pytest.mark.parametrize("where", ["lr", "hr", "valid_hr"])
def test_non_finite_patches_are_refused_naming_the_file_and_the_patches(data, tmp_path, capsys, where):
    floats = {}
    for name in ("lr", "hr"):
        floats[name] = str(tmp_path / f"{name}_float.tif")
        gdal.Translate(floats[name], data[name], outputType=gdal.GDT_Float32)
    broken = floats["hr" if where == "valid_hr" else where]
    ds = gdal.Open(broken, gdal.GA_Update)
    size = ds.RasterXSize
    ds.GetRasterBand(2).WriteArray(np.array([[np.nan]]), 3, 5 * size + 1)  # patch 5
    ds.GetRasterBand(1).WriteArray(np.array([[-np.inf]]), 0, 9 * size + size - 1)  # patch 9
    ds = None
    args = ["--lr_patches", floats["lr"], "--hr_patches", floats["hr"], "--save_ckpt", f"{tmp_path}/ck/",
            "--savedmodel", str(tmp_path / "model"), *TINY]
    if where == "valid_hr":
        args[1:4:2] = data["lr"], data["hr"]  # the training patches are fine, the validation ones not
        args += ["--valid_lr_patches", floats["lr"], "--valid_hr_patches", floats["hr"]]
    assert run_cli(train.main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"error: {broken}: 2 of its 12 patches hold NaN or infinite values (patch index 5, "
                       "9, from 0 at the top): a model cannot learn from them; remove them or fill the gaps "
                       "before extracting patches")
    assert not os.path.exists(tmp_path / "model") and not os.path.exists(tmp_path / "ck")


@pytest.mark.slow
def test_residual_linear_starts_from_the_least_squares_fit(data, tmp_path):
    patches = {k: str(tmp_path / f"{k}16.tif") for k in ("lr", "hr")}
    assert extract_patches.main(["--lr", data["scene"][0], "--hr", data["scene"][1], "--lr_patchsize", "16",
                                 "--step", "4",
                                 "--out_lr", patches["lr"], "--out_hr", patches["hr"], "--quiet"]) == 0
    args = ["--lr_patches", patches["lr"], "--hr_patches", patches["hr"], "--residual", "linear",
            "--save_ckpt", str(tmp_path / "ck") + "/", "--logdir", str(tmp_path / "logs"),
            "--savedmodel", str(tmp_path / "model"), "--l1weight", "1", "--l2weight", "0",
            "--adam_lr", "1e-9", *TINY]
    assert run_cli(train.main, args) == 0
    assert "_Residual-linear" in os.listdir(tmp_path / "logs")[0]
    assert read_metadata(str(tmp_path / "model"))["residual"] == "linear"
    # with a negligible learning rate the model is the fit: closer to the HR patches than bicubic
    lr_patches = read_array(open_raster(patches["lr"])).reshape(-1, 16, 16, 4).astype(np.float32)
    hr_patches = read_array(open_raster(patches["hr"])).reshape(-1, 64, 64, 4).astype(np.float32)
    signature = tf.saved_model.load(str(tmp_path / "model")).signatures[constants.SIGNATURE_KEY]
    padded = np.pad(lr_patches, ((0, 0), (8, 8), (8, 8), (0, 0)), mode="symmetric")
    sr = signature(lr_input=tf.constant(padded))["output_32"].numpy()[:, 12:-12, 12:-12]
    bicubic = tf.image.resize(lr_patches, [64, 64], method="bicubic").numpy()[:, 12:-12, 12:-12]
    target = hr_patches[:, 12:-12, 12:-12]
    assert np.mean((sr - target) ** 2) < 0.9 * np.mean((bicubic - target) ** 2)


@pytest.mark.slow
def test_bfloat16_training_exports_a_float32_savedmodel(data, tmp_path, caplog):
    args = ["--lr_patches", data["lr"], "--hr_patches", data["hr"], "--losstype", "LSGAN",
            "--save_ckpt", str(tmp_path / "ck") + "/", "--logdir", str(tmp_path / "logs"),
            "--savedmodel", str(tmp_path / "model"), "--mixed_precision", "bfloat16", "--seed", "2", *TINY]
    with caplog.at_level("INFO", logger="sr4rs.train"):
        assert run_cli(train.main, args) == 0
    assert "Compute dtype        : bfloat16 (mixed precision)" in caplog.text
    assert "_MixedPrecision-bfloat16" in os.listdir(tmp_path / "logs")[0]
    assert read_metadata(str(tmp_path / "model"))["train_args"]["trainer"]["compute_dtype"] == "bfloat16"
    signature = tf.saved_model.load(str(tmp_path / "model")).signatures[constants.SIGNATURE_KEY]
    assert signature.structured_input_signature[1][constants.LR_INPUT_NAME].dtype == tf.float32
    lr = np.random.default_rng(0).uniform(0, 3000, (1, 20, 20, 4)).astype(np.float32)
    exported = signature(lr_input=tf.constant(lr))[constants.output_name(32)]
    assert exported.dtype == tf.float32
    # the same weights in a float32 trainer give the same output: the export runs in float32
    trainer = Trainer(TrainConfig(depth=4, nresblocks=1), 4)
    Checkpoints(trainer, str(tmp_path / "unused"), "run").restore(str(tmp_path / "ck"))
    expected = trainer.generate(tf.constant(lr))[1].numpy()[:, 32:-32, 32:-32]
    np.testing.assert_allclose(exported.numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    bf16 = trainer.generator(tf.constant(1e-4 * lr, tf.bfloat16))[1].numpy().astype(np.float32) / 1e-4
    assert np.abs(bf16[:, 32:-32, 32:-32] - expected).max() > 1e-3 * np.abs(expected).max()  # not bfloat16


@pytest.mark.slow
def test_a_diverging_training_stops_with_a_message(data, tmp_path, capsys):
    args = ["--lr_patches", data["lr"], "--hr_patches", data["hr"], "--save_ckpt", str(tmp_path / "ck") + "/",
            *TINY, "--epochs", "4", "--lr_scale", "1e38", "--hr_scale", "1e38"]  # inf inputs: NaN losses
    assert run_cli(train.main, args) == 2
    assert "diverged: non-finite losses for 10 steps" in capsys.readouterr().err


def test_a_patches_file_broken_while_streaming_stops_with_one_line(data, tmp_path, capsys, monkeypatch):
    lr, hr = str(tmp_path / "lr.tif"), str(tmp_path / "hr.tif")
    tf.io.gfile.copy(data["lr"], lr)
    tf.io.gfile.copy(data["hr"], hr)
    board_init = board.TensorBoard.__init__

    def truncate_then_init(self, *args):  # the file breaks after the checks, once training starts
        with open(hr, "r+b") as f:
            f.truncate(2000)
        board_init(self, *args)

    monkeypatch.setattr(board.TensorBoard, "__init__", truncate_then_init)
    args = ["--lr_patches", lr, "--hr_patches", hr, "--streaming", "--save_ckpt", str(tmp_path / "ck") + "/",
            *TINY]
    assert run_cli(train.main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: training stopped at step 0:") and "hr.tif: read failed" in err[-1]


@pytest.fixture(scope="module")
def validated_run(data):
    """Two epochs with 25% of the pairs held out by position (extract_patches.py's centres file)."""
    out = data["dir"] / "validated"
    out.mkdir()
    args = ["--lr_patches", data["lr"], "--hr_patches", data["hr"], "--valid_split", "0.25", "--augment",
            "--l1weight", "1", "--save_ckpt", str(out / "ckpts") + "/", "--logdir", str(out / "logs"),
            "--savedmodel", str(out / "model"), *TINY, "--epochs", "2", "--batchsize", "3"]
    assert run_cli(train.main, args) == 0
    return out


@pytest.mark.slow
def test_validation_scores_go_to_tensorboard_the_checkpoint_and_the_savedmodel(validated_run):
    found = events(validated_run / "logs")
    # 12 pairs of a 4 x 3 grid: a strip of 3 held out, 9 trained on (batch 3: 3 steps per epoch)
    for tag in ("psnr", "psnr_bicubic", "gain_db", "ssim", "ssim_bicubic", "sam", "sam_bicubic",
                "psnr_band4", "gain_db_band1", "ssim_band2"):
        assert [s for s, _ in found[f"valid/{tag}"]] == [3, 6], tag
    assert [s for s, _ in found["valid/preview"]] == [3, 6]
    gains = [v for _, v in found["valid/gain_db"]]
    psnr = [v for _, v in found["valid/psnr"]]
    bicubic = [v for _, v in found["valid/psnr_bicubic"]]
    assert bicubic[0] == bicubic[1] and gains == pytest.approx([p - bicubic[0] for p in psnr])
    meta = read_metadata(str(validated_run / "model"))["validation"]
    best = int(np.argmax(psnr))
    assert meta["export"] == "best" and meta["step"] == [3, 6][best] and meta["pairs"] == 3
    assert meta["gain_db"] == pytest.approx(gains[best]) and meta["psnr_bicubic"] == pytest.approx(bicubic[0])
    assert len(glob.glob(str(validated_run / "ckpts" / "*" / "best" / "ckpt-*.index"))) == 1


class ScriptedValidator:
    """Stands for validation.Validator: PSNRs from a script, one per evaluation, each taking `seconds`."""

    def __init__(self, psnrs, seconds=0.0):
        self.psnrs = list(psnrs)
        self.seconds = seconds
        self.calls = 0

    def evaluate(self, generate):
        time.sleep(self.seconds)
        self.calls += 1
        psnr = self.psnrs.pop(0)
        scores = {"psnr": psnr, "psnr_bicubic": 30.0, "gain_db": psnr - 30.0, "ssim": 0.9,
                  "ssim_bicubic": 0.9, "sam": None, "sam_bicubic": None, "psnr_bands": [psnr],
                  "gain_db_bands": [psnr - 30.0], "ssim_bands": [0.9], "pairs": 3}
        return scores, np.zeros((1, 8, 8, 3), np.float32)

    def preview(self, sr):
        return np.zeros((1, 8, 8, 3), np.uint8)


@pytest.mark.slow
@pytest.mark.parametrize("export", ["best", "last"])
def test_early_stop_and_the_export_of_the_best_or_last_weights(data, tmp_path, monkeypatch, export):
    # validation PSNRs after each epoch: the best after epoch 2, then 2 epochs without better: stop after 4
    monkeypatch.setattr(training, "Validator", lambda *args: ScriptedValidator([31, 33, 32, 32.5, 40, 40]))
    monkeypatch.setattr(fit, "VALID_TIME_RATIO", 0)  # validate after every epoch
    options = TrainOptions(lr_patches=data["lr"], hr_patches=data["hr"], save_ckpt=tmp_path / "ck",
                           savedmodel=tmp_path / "model", valid_split=0.25, early_stop=2, export=export,
                           epochs=6, batchsize=3, seed=2,
                           trainer=TrainConfig(depth=4, nresblocks=1, l1weight=1))
    result = train.train(options)
    assert (result.epochs_done, result.steps) == (6, 12)  # 4 epochs of 3 steps; the phase ended at epoch 4
    assert result.validation["export"] == export
    assert result.validation["step"] == (6 if export == "best" else 12)
    assert result.validation["psnr"] == (33 if export == "best" else 32.5)
    reader = tf.train.load_checkpoint(os.path.join(result.checkpoints, "ckpt-1"))  # the end of epoch 2
    name = "trainer/generator/conv1/weight/.ATTRIBUTES/VARIABLE_VALUE"
    after_epoch_2 = reader.get_tensor(name)
    exported = result.trainer.generator.conv1.weight.numpy()
    assert np.array_equal(exported, after_epoch_2) == (export == "best")
    assert read_metadata(result.savedmodel)["validation"]["step"] == result.validation["step"]


@pytest.mark.slow
def test_the_time_limit_stops_the_run_as_at_its_end(data, tmp_path, monkeypatch):
    clock = iter(range(0, 100000, 25))  # 25 s per reading: at the start, after each step and epoch
    monkeypatch.setattr(fit, "monotonic", lambda: next(clock))
    options = TrainOptions(lr_patches=data["lr"], hr_patches=data["hr"], save_ckpt=tmp_path / "ck",
                           savedmodel=tmp_path / "model", valid_split=0.25, time_limit=2, epochs=50,
                           batchsize=3, seed=2, trainer=TrainConfig(depth=4, nresblocks=1, l1weight=1))
    result = train.train(options)
    # readings 25, 50, 75 (steps 1-3, epoch 1), 100 (its end), 125 >= 2 min: step 4 is the last
    assert (result.steps, result.epochs_done) == (4, 1)
    assert result.validation["step"] in (3, 4) and os.path.isdir(result.savedmodel)
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(result.checkpoints, "ckpt-*.index"))) \
        == ["ckpt-0.index", "ckpt-1.index"]  # the end of epoch 1, and the cut epoch 2 (restarted on resume)


@pytest.mark.slow
def test_normalize_trains_on_standardized_bands_and_exports_raw_values(data, tmp_path):
    options = TrainOptions(lr_patches=data["lr"], hr_patches=data["hr"], save_ckpt=tmp_path / "ck",
                           savedmodel=tmp_path / "model", epochs=1, batchsize=4, seed=4,
                           trainer=TrainConfig(depth=4, nresblocks=1, l1weight=1.0, l2weight=0.0,
                                               normalize=True, upsampling="pixelshuffle", residual="bicubic"))
    result = train.train(options)
    meta = read_metadata(result.savedmodel)
    stats = meta["lr_stats"]
    assert meta["normalize"] and meta["scaling"]["lr_offset"] == pytest.approx(stats["mean"])
    assert meta["scaling"]["hr_gain"] == pytest.approx([1 / s for s in stats["std"]])
    assert "_Upsampling-pixelshuffle_Normalized_" in result.run
    signature = tf.saved_model.load(result.savedmodel).signatures[constants.SIGNATURE_KEY]
    lr = np.random.default_rng(1).uniform(0, 3000, (1, 20, 20, 4)).astype(np.float32)
    exported = signature(lr_input=tf.constant(lr))[constants.output_name(32)].numpy()
    expected = result.trainer.generate(tf.constant(lr))[1].numpy()[:, 32:-32, 32:-32]
    np.testing.assert_allclose(exported, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # values near the patches' own: the standardized residual network stays near bicubic after 3 steps
    bicubic = tf.image.resize(lr, [80, 80], method="bicubic").numpy()[:, 32:-32, 32:-32]
    assert np.abs(exported - bicubic).mean() < 0.1 * np.abs(bicubic).mean()


@pytest.mark.slow
def test_pretrain_epochs_and_no_gan_phase(data, tmp_path):
    options = TrainOptions(lr_patches=data["lr"], hr_patches=data["hr"], save_ckpt=str(tmp_path / "ck") + "/",
                           logdir=tmp_path / "logs", pretrain=True, pretrain_epochs=2, epochs=0, batchsize=4,
                           trainer=TrainConfig(depth=4, nresblocks=1, l1weight=1.0))
    result = train.train(options)
    assert (result.epochs_done, result.steps) == (2, 6)  # 2 pre-training epochs of 3 steps, no GAN epoch
    found = events(tmp_path / "logs")
    assert [s for s, _ in found[constants.GEN_LOSS_L1]] == list(range(6))
    assert constants.DIS_LOSS not in found


@pytest.mark.slow
def test_validation_waits_so_that_it_costs_a_few_percent_of_the_time(data, tmp_path, monkeypatch):
    validator = ScriptedValidator([30.0] * 10, seconds=0.5)  # 0.5 s each: 9.5 s of training between two
    monkeypatch.setattr(training, "Validator", lambda *args: validator)
    options = TrainOptions(lr_patches=data["lr"], hr_patches=data["hr"], save_ckpt=tmp_path / "ck",
                           valid_split=0.25, epochs=5, batchsize=3, seed=2,
                           trainer=TrainConfig(depth=4, nresblocks=1, l1weight=1))
    train.train(options)
    assert validator.calls == 2  # after the first epoch and after the last one (tiny epochs in between)
