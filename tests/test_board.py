"""board.py: preview reading and cropping, and the TensorBoard tags of a run."""
import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from helpers import write_raster

import board
import constants
from errors import SR4RSError


def test_a_large_preview_is_cropped_around_its_centre_with_a_warning(tmp_path, caplog):
    image = np.arange(400 * 300 * 2, dtype=np.int16).reshape(400, 300, 2)
    path = write_raster(str(tmp_path / "preview.tif"), image)
    preview = board.read_preview(path, nbands=2, depth=64)  # 128 x 128 LR pixels at most at depth 64
    assert preview.shape == (1, 128, 128, 2) and preview.dtype == np.float32
    np.testing.assert_array_equal(preview[0], image[136:264, 86:214])
    assert "too large for depth 64" in caplog.text
    assert board.read_preview(path, nbands=2, depth=4).shape == (1, 400, 300, 2)  # small depth: whole image
    with pytest.raises(SR4RSError, match="the preview has 2 bands, the patches have 4"):
        board.read_preview(path, nbands=4, depth=4)


def test_previews_and_scalars_go_to_the_run_folder_or_nowhere(tmp_path):
    preview = np.ones((1, 5, 6, 3), np.float32)
    run = board.TensorBoard(str(tmp_path), "run1")
    assert run.directory == str(tmp_path / "run1")
    run.scalars({"a": 1.0}, 0)
    run.bicubic_preview(preview, 0)
    run.generated_preview({f: tf.ones([1, 20 // f, 24 // f, 3]) for f in constants.FACTORS}, 3)
    run.close()
    tags = {}
    for event in tf.compat.v1.train.summary_iterator(glob.glob(str(tmp_path / "run1" / "events.*"))[0]):
        for value in event.summary.value:
            tags[value.tag] = (event.step, tf.make_ndarray(value.tensor))
    assert tags["a"][0] == 0 and float(tags["a"][1]) == 1.0
    # an image summary holds width, height and the encoded image: the bicubic preview is 4x larger
    assert tags[board.BICUBIC_PREVIEW][0] == 0 and list(tags[board.BICUBIC_PREVIEW][1][:2]) == [b"24", b"20"]
    assert {tags[f"{constants.PREVIEW_PREFIX}{f}"][0] for f in constants.FACTORS} == {3}
    nowhere = board.TensorBoard(None, "run2")
    nowhere.scalars({"a": 1.0}, 0)
    nowhere.bicubic_preview(preview, 0)
    nowhere.close()
    assert nowhere.directory is None and os.listdir(tmp_path) == ["run1"]
