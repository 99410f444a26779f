"""A SavedModel exported by train.py, served by OTBTF's real TensorflowModelServe (built by `make otb`),
gives the values of plain TensorFlow on one tile."""
import numpy as np
import pytest
import tensorflow as tf
from helpers import write_raster

import constants
import extract_patches
import sr
import train
from cli import run_cli
from demo import scene
from raster import open_raster, read_array

pytestmark = [pytest.mark.otb, pytest.mark.slow]


def test_otb_serves_a_trained_savedmodel_like_tensorflow(tmp_path):
    lr, hr = scene.make_demo_scene(str(tmp_path / "scene"), size_hr=128, seed=2)
    patches = [str(tmp_path / "lr.tif"), str(tmp_path / "hr.tif")]
    assert extract_patches.main(["--lr", lr, "--hr", hr, "--lr_patchsize", "8", "--step", "8", "--out_lr",
                                 patches[0], "--out_hr", patches[1], "--max_patches", "8", "--quiet"]) == 0
    model = str(tmp_path / "model")
    assert run_cli(train.main, ["--lr_patches", patches[0], "--hr_patches", patches[1], "--save_ckpt",
                                str(tmp_path / "ck") + "/", "--savedmodel", model, "--depth", "4",
                                "--nresblocks", "1", "--epochs", "1", "--batchsize", "4"]) == 0
    ts, pad = 64, 32
    image = read_array(open_raster(lr))[: (ts + 2 * pad) // 4, : (ts + 2 * pad) // 4]  # exactly one tile
    tile = write_raster(str(tmp_path / "tile.tif"), image)
    out = str(tmp_path / "otb.tif")
    assert run_cli(sr.main, ["--input", tile, "--savedmodel", model, "--output", out, "--engine", "otb",
                             "--ts", str(ts), "--pad", str(pad), "--encoding", "float32", "--quiet"]) == 0
    served = read_array(open_raster(out))
    signature = tf.saved_model.load(model).signatures[constants.SIGNATURE_KEY]
    outputs = signature(lr_input=tf.constant(image[np.newaxis], tf.float32))
    expected = outputs[constants.output_name(pad)].numpy()[0]
    assert served.shape == (ts, ts, 4)
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
