"""SavedModel export: signature, outputs for every pad, description, refusals, atomicity, permissions."""
import os
import stat
import subprocess

import numpy as np
import pytest
import tensorflow as tf

import constants
import export
import folders
from errors import SR4RSError
from network import Generator
from scaling import Scaling


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tf.random.set_seed(3)
    generator = Generator(3, nresblocks=1, dim=4)
    path = str(tmp_path_factory.mktemp("export") / "results" / "model")  # "results" is created
    export.export_savedmodel(generator, path, 3, Scaling.scales(3, 1e-3, 2e-3),
                             description={"lr_stats": {"mean": [1.0, 2.0, 3.0]}})
    return generator, path


@pytest.fixture(scope="module")
def signature(exported):
    return tf.saved_model.load(exported[1]).signatures[constants.SIGNATURE_KEY]


def test_signature_names_and_dtypes(signature):
    inputs = signature.structured_input_signature[1]
    assert list(inputs) == [constants.LR_INPUT_NAME]
    assert inputs[constants.LR_INPUT_NAME].dtype == tf.float32
    assert inputs[constants.LR_INPUT_NAME].shape.as_list() == [None, None, None, 3]
    assert sorted(signature.structured_outputs) == sorted(constants.output_name(p) for p in constants.PADS)


@pytest.mark.slow
@pytest.mark.parametrize("pad", constants.PADS)
def test_every_pad_gives_a_ts_by_ts_tile(exported, signature, pad):
    generator = exported[0]
    ts = 16
    lr = np.random.default_rng(pad).uniform(0, 1000, (1, (ts + 2 * pad) // 4, (ts + 2 * pad) // 4, 3))
    out = signature(lr_input=tf.constant(lr, tf.float32))[constants.output_name(pad)].numpy()
    assert out.shape == (1, ts, ts, 3)
    full = generator(tf.constant(1e-3 * lr, tf.float32))[1].numpy() / 2e-3
    np.testing.assert_allclose(out, full[:, pad:-pad, pad:-pad], rtol=1e-4, atol=1e-2)


def test_description_travels_with_the_model(exported):
    meta = folders.read_metadata(exported[1])
    assert meta["nbands"] == 3 and meta["scale_factor"] == 4
    assert meta["scaling"] == {"lr_offset": [0.0] * 3, "lr_gain": [1e-3] * 3, "hr_offset": [0.0] * 3,
                               "hr_gain": [2e-3] * 3}
    assert meta["lr_stats"] == {"mean": [1.0, 2.0, 3.0]}
    assert folders.read_metadata(os.path.dirname(exported[1])) is None


def test_existing_directory_or_a_parent_that_cannot_be_made_is_refused(exported, tmp_path):
    assert os.path.isfile(os.path.join(exported[1], "saved_model.pb"))
    with pytest.raises(SR4RSError, match="already exists"):
        export.check_new_savedmodel_path(exported[1])
    export.check_new_savedmodel_path(str(tmp_path / "missing" / "model"))  # made at export, as the original
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SR4RSError, match=r"file/sub/model: --savedmodel needs a directory, and .*file is a"):
        export.check_new_savedmodel_path(str(tmp_path / "file" / "sub" / "model"))
    assert not os.path.exists(tmp_path / "missing")


def test_a_failed_export_leaves_nothing(tmp_path):
    class Broken(tf.Module):
        def __call__(self, x):
            raise RuntimeError("boom")

    target = tmp_path / "model"
    with pytest.raises(RuntimeError):
        export.export_savedmodel(Broken(), str(target), 3, Scaling.scales(3, 1.0, 1.0))
    assert os.listdir(tmp_path) == []


def test_the_savedmodel_gets_the_umasks_permissions(tmp_path):
    """Another user (e.g. `docker run -u`) can read the model: not tempfile.mkdtemp's 700."""
    old = os.umask(0o022)
    try:
        export.export_savedmodel(lambda lr: {1: lr}, str(tmp_path / "model"), 1, Scaling.scales(1, 1.0, 1.0))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "model").st_mode) == 0o755
    for folder, _, files in os.walk(tmp_path / "model"):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o755
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode) == 0o644


def test_a_read_only_parent_is_permission_denied(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder read-only for root here (chattr +i failed)")
    try:
        with pytest.raises(SR4RSError, match="model: permission denied"):
            export.check_new_savedmodel_path(str(folder / "model"))
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_normalized_model_takes_and_gives_raw_values(tmp_path):
    """--normalize: the serving function standardizes the input band by band and undoes it on the output."""
    generator = Generator(2, nresblocks=1, dim=4)
    scaling = Scaling.standardize([1000.0, 50.0], [200.0, 10.0])
    export.export_savedmodel(generator, str(tmp_path / "model"), 2, scaling)
    serve = tf.saved_model.load(str(tmp_path / "model")).signatures[constants.SIGNATURE_KEY]
    lr = np.random.default_rng(0).normal([1000.0, 50.0], [200.0, 10.0], (1, 72, 72, 2)).astype(np.float32)
    out = serve(lr_input=tf.constant(lr))[constants.output_name(32)].numpy()
    network_out = generator(tf.constant((lr - [1000.0, 50.0]) / [200.0, 10.0], tf.float32))[1].numpy()
    expected = (network_out * [200.0, 10.0] + [1000.0, 50.0])[:, 32:-32, 32:-32]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)
