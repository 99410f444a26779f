"""checkpoints.py: the run's folders, saving and resuming the whole state, refusals, original checkpoints."""
import os

import numpy as np
import pytest
import tensorflow as tf
from helpers import needs_original
from savedmodel_fixtures import cached, original_model

import constants
from checkpoints import Checkpoints, find_checkpoint
from errors import SR4RSError
from folders import check_checkpoint, checkpoint_location
from scaling import Scaling
from trainer import TrainConfig, Trainer

TINY = {"depth": 4, "nresblocks": 1}


def tiny_trainer(nbands=3, scaling=None, **settings):
    return Trainer(TrainConfig(**TINY, **settings), nbands, scaling=scaling)


def randomise(trainer, seed):
    """Give every network variable and the optimisers' step counts other values."""
    rng = np.random.default_rng(seed)
    for var in trainer.generator.variables + trainer.discriminator.variables:
        var.assign(rng.standard_normal(var.shape).astype(np.float32))
    trainer.gen_optimizer.iterations.assign(seed)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A float32 run "runA" at epoch 2, step 7, saved as ckpt-1 in save_ckpt/runA/; its trainer."""
    save_ckpt = str(tmp_path_factory.mktemp("ckpts")) + os.sep
    trainer = tiny_trainer()
    randomise(trainer, 5)
    checkpoints = Checkpoints(trainer, save_ckpt, "runA")
    checkpoints.epoch.assign(2)
    checkpoints.step.assign(7)
    prefix = checkpoints.save(1)
    assert prefix == os.path.join(save_ckpt, "runA", "ckpt-1")
    return save_ckpt, trainer


def test_resuming_restores_the_whole_state_and_continues_the_run(saved):
    save_ckpt, original = saved
    trainer = tiny_trainer()
    checkpoints = Checkpoints(trainer, save_ckpt, "runB")
    checkpoints.restore(save_ckpt)  # a directory: its newest checkpoint, run folders included
    assert (checkpoints.name, int(checkpoints.epoch), int(checkpoints.step)) == ("runA", 2, 7)
    assert checkpoints.directory == os.path.join(save_ckpt, "runA")
    for a, b in zip(original.generator.variables + original.discriminator.variables,
                    trainer.generator.variables + trainer.discriminator.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(trainer.gen_optimizer.iterations) == 5
    checkpoints.save(2)  # the resumed run writes into the checkpoint's folder
    assert sorted(f for f in os.listdir(checkpoints.directory) if f.endswith(".index")) == \
        ["ckpt-1.index", "ckpt-2.index"]


def test_the_checkpoint_keys_stay_those_of_earlier_checkpoints(saved):
    save_ckpt, trainer = saved
    assert set(trainer.checkpointed()) == {"generator", "discriminator", "gen_optimizer", "dis_optimizer",
                                           "pretrain_optimizer"}
    names = tf.train.load_checkpoint(find_checkpoint(save_ckpt)).get_variable_to_shape_map()
    assert {n.split("/")[0] for n in names} >= {"trainer", "epoch", "step", "run", "settings"}
    assert any(n.startswith("trainer/gen_optimizer/") for n in names)


@pytest.mark.parametrize("settings, message", [
    ({"residual": "bicubic"}, "(--residual None in the checkpoint, bicubic here)"),
    ({"upsampling": "pixelshuffle"}, "(--upsampling transposed in the checkpoint, pixelshuffle here)"),
    ({"lr_scale": 1e-3, "hr_scale": 2e-4},
     "(--lr_scale 0.0001 in the checkpoint, 0.001 here; --hr_scale 0.0001 in the checkpoint, 0.0002 here)"),
])
def test_resuming_with_other_settings_is_refused(saved, settings, message):
    checkpoints = Checkpoints(tiny_trainer(**settings), saved[0], "run")
    with pytest.raises(SR4RSError, match="resume with the settings of the checkpoint") as err:
        checkpoints.restore(saved[0])
    assert message in str(err.value)


def test_another_network_is_refused(saved):
    with pytest.raises(SR4RSError, match="does not match this network"):
        Checkpoints(tiny_trainer(nbands=4), saved[0], "run").restore(saved[0])


def test_float16_refuses_a_float32_checkpoint_and_float32_resumes_a_float16_one(saved, tmp_path):
    with pytest.raises(SR4RSError, match=r"a float32 or bfloat16 run \(no float16 loss scale in it\)"):
        Checkpoints(tiny_trainer(compute_dtype="float16"), saved[0], "run").restore(saved[0])
    half = tiny_trainer(compute_dtype="float16")
    half.loss_scale.scale.assign(4.0)
    prefix = Checkpoints(half, str(tmp_path) + os.sep, "half").save(0)
    checkpoints = Checkpoints(tiny_trainer(), str(tmp_path) + os.sep, "run")
    checkpoints.restore(prefix)
    assert checkpoints.name == "half"
    restored = Checkpoints(tiny_trainer(compute_dtype="float16"), str(tmp_path) + os.sep, "run")
    restored.restore(prefix)
    assert float(restored.trainer.loss_scale.scale) == 4.0


def test_unreadable_or_missing_checkpoints_are_refused(tmp_path):
    (tmp_path / "ck.index").write_bytes(b"not a checkpoint")
    with pytest.raises(SR4RSError, match="not a readable checkpoint"):
        Checkpoints(tiny_trainer(), str(tmp_path) + os.sep, "run").restore(str(tmp_path / "ck"))
    with pytest.raises(SR4RSError, match="no checkpoint in this directory or its sub-directories"):
        find_checkpoint(str(tmp_path))
    with pytest.raises(SR4RSError, match="nowhere/ck-3: no such checkpoint"):
        check_checkpoint("nowhere/ck-3")
    check_checkpoint(str(tmp_path / "ck"))  # a prefix with its .index


def test_runs_sharing_save_ckpt_keep_their_own_folders_and_the_newest_resumes(tmp_path):
    older, newer = tmp_path / "SR4RS_a", tmp_path / "SR4RS_b"
    for folder in (older, newer):
        folder.mkdir()
        tf.train.Checkpoint(v=tf.Variable(1.0)).write(str(folder / "ckpt-1"))
        (folder / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    os.utime(str(older / "ckpt-1.index"), (1, 1))
    assert checkpoint_location(str(tmp_path) + "/", "SR4RS_c") == str(tmp_path / "SR4RS_c")
    assert checkpoint_location(str(tmp_path / "exp1_"), "SR4RS_c") == str(tmp_path / "exp1_SR4RS_c")
    assert find_checkpoint(str(tmp_path)) == str(newer / "ckpt-1")
    assert find_checkpoint(str(older)) == str(older / "ckpt-1")


@pytest.mark.slow
@needs_original
def test_an_original_tf1_checkpoint_loads_into_the_networks(tmp_path_factory):
    savedmodel = cached(tmp_path_factory, "original_4b", lambda p: original_model(p, nbands=4))
    trainer = tiny_trainer(nbands=4)
    Checkpoints(trainer, str(tmp_path_factory.mktemp("unused")), "run").restore(savedmodel + "_work/ck")
    lr = np.random.default_rng(0).integers(0, 3000, (1, 40, 40, 4)).astype(np.int16)
    original = tf.saved_model.load(savedmodel).signatures[constants.SIGNATURE_KEY]
    expected = original(**{"lr_input:0": tf.constant(lr)})["output_32:0"].numpy()
    ours = trainer.generate(tf.constant(lr))[1].numpy()[:, 32:-32, 32:-32]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.slow
@needs_original
@pytest.mark.parametrize("change", [{"residual": "linear"}, {"upsampling": "pixelshuffle"}])
def test_an_original_checkpoint_into_another_network_is_refused(tmp_path_factory, change):
    savedmodel = cached(tmp_path_factory, "original_4b", lambda p: original_model(p, nbands=4))
    trainer = tiny_trainer(nbands=4, **change)
    checkpoints = Checkpoints(trainer, str(tmp_path_factory.mktemp("unused")), "run")
    with pytest.raises(SR4RSError, match="is the original network: load it without --residual"):
        checkpoints.restore(savedmodel + "_work/ck")


def test_normalize_resumes_only_with_the_statistics_of_its_patches(tmp_path):
    def trainer(mean):
        return tiny_trainer(scaling=Scaling.standardize([mean] * 3, [10.0] * 3), normalize=True)

    prefix = Checkpoints(trainer(100.0), str(tmp_path) + os.sep, "run").save(0)
    Checkpoints(trainer(100.0), str(tmp_path) + os.sep, "run").restore(prefix)
    with pytest.raises(SR4RSError, match="--normalize took other statistics from other patches"):
        Checkpoints(trainer(101.0), str(tmp_path) + os.sep, "run").restore(prefix)
    with pytest.raises(SR4RSError, match="--normalize False in the checkpoint, True here"):
        Checkpoints(trainer(100.0), str(tmp_path) + os.sep, "run").restore(
            Checkpoints(tiny_trainer(), str(tmp_path / "plain") + os.sep, "plain").save(0))
