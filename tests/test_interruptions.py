"""What a stopped run leaves: SIGTERM (a scheduler's time limit, `timeout`, `docker stop`) is handled
like Ctrl-C (sr.py removes its partial output, train.py saves a checkpoint, exit code 143); after SIGKILL
(out of memory, a crash, `kill -9`) at any moment, the output is absent or complete, never partial, and
training resumes from its last checkpoint (at most the epoch in progress is lost)."""
from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import pytest
from helpers import ROOT, write_raster
from osgeo import gdal

import extract_patches
from demo import scene as demo_scene
from export import export_savedmodel
from network import Generator
from raster import read_array
from scaling import Scaling

pytestmark = pytest.mark.slow
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
TRAIN = ["--depth", "4", "--nresblocks", "1", "--batchsize", "4", "--epochs", "1000"]


def start(script: str, args: list[str]) -> subprocess.Popen:
    """A command of the project in its own process, as a user runs it."""
    return subprocess.Popen([sys.executable, os.path.join(ROOT, script), *args], env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, timeout: float = 300) -> None:
    """Poll until `condition()` holds; fail if the process ended first."""
    end = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"ended before the moment awaited: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def parts(folder: str) -> list[str]:
    """The hidden temporary outputs in a folder."""
    return glob.glob(os.path.join(folder, ".*part*"))


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An LR image and a generator slow enough to be stopped while it runs (several seconds), and patches
    for the training cases."""
    folder = tmp_path_factory.mktemp("interruptions")
    lr = np.random.default_rng(0).uniform(0, 1000, (192, 192, 3)).astype(np.float32)
    paths = {"lr": write_raster(str(folder / "lr.tif"), lr), "model": str(folder / "model")}
    export_savedmodel(Generator(3, nresblocks=2, dim=16), paths["model"], 3, Scaling.scales(3, 1e-3, 1e-3))
    scene_lr, scene_hr = demo_scene.make_demo_scene(str(folder / "scene"), size_hr=128, seed=1)
    paths["lr_patches"], paths["hr_patches"] = str(folder / "lr_patches.tif"), str(folder / "hr_patches.tif")
    assert extract_patches.main(["--lr", scene_lr, "--hr", scene_hr, "--lr_patchsize", "8", "--step", "8",
                                 "--out_lr", paths["lr_patches"], "--out_hr", paths["hr_patches"],
                                 "--max_patches", "12", "--quiet"]) == 0
    return paths


def sr_args(scene: dict[str, str], output: str) -> list[str]:
    return ["--input", scene["lr"], "--savedmodel", scene["model"], "--output", output, "--engine", "tf",
            "--ts", "128", "--pad", "32", "--quiet"]


def test_sigterm_stops_sr_and_removes_the_partial_output(scene, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    sr = start("sr.py", sr_args(scene, str(out / "hr.tif")))
    wait_for(lambda: bool(parts(str(out))), sr)
    sr.send_signal(signal.SIGTERM)
    _, err = sr.communicate(timeout=120)
    assert sr.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines()[-1] == "terminated (SIGTERM)" and "Traceback" not in err
    assert os.listdir(out) == []


def test_after_sigkill_at_any_moment_the_output_is_absent_or_complete(scene, tmp_path):
    reference = str(tmp_path / "reference.tif")
    t0 = time.monotonic()
    done = start("sr.py", sr_args(scene, reference))
    assert done.wait(timeout=300) == 0
    duration = time.monotonic() - t0
    expected = read_array(gdal.Open(reference))
    out = tmp_path / "out"
    out.mkdir()
    output = str(out / "hr.tif")
    left = 0
    for delay in np.random.default_rng(0).uniform(0.0, 0.5, 3) * duration:
        sr = start("sr.py", sr_args(scene, output))
        while not parts(str(out)) and sr.poll() is None:  # until it writes, then a random moment
            time.sleep(0.01)
        time.sleep(delay)
        sr.kill()
        sr.wait()
        left = max(left, len(parts(str(out))))
        if os.path.exists(output):  # it finished before the kill: complete
            np.testing.assert_array_equal(read_array(gdal.Open(output)), expected)
            os.remove(output)
    assert left  # killed while writing: its partial output stayed, hidden
    assert start("sr.py", sr_args(scene, output)).wait(timeout=300) == 0
    np.testing.assert_array_equal(read_array(gdal.Open(output)), expected)
    assert parts(str(out)) == []  # the killed runs' partial outputs are gone


def train_args(scene: dict[str, str], folder: str) -> list[str]:
    return ["--lr_patches", scene["lr_patches"], "--hr_patches", scene["hr_patches"], "--save_ckpt",
            os.path.join(folder, "ck") + os.sep, "--savedmodel", os.path.join(folder, "model"), *TRAIN]


def checkpoint_numbers(folder: str) -> list[int]:
    return sorted(int(re.search(r"ckpt-(\d+)\.index$", p).group(1))
                  for p in glob.glob(os.path.join(folder, "ck", "*", "ckpt-*.index")))


def resume(scene: dict[str, str], folder: str) -> tuple[int, int]:
    """Resume the run of `folder` (`--epochs 1`, already done: it exports the model); (the epochs done in
    the checkpoint it resumed from, the exit code)."""
    args = train_args(scene, folder)
    args[args.index("--epochs") + 1] = "1"
    args += ["--load_ckpt", os.path.join(folder, "ck")]
    resumed = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], env=ENV,
                             capture_output=True, text=True, timeout=600)
    found = re.search(r"Resumed from \S+: epoch (\d+), step \d+", resumed.stderr)
    assert found, resumed.stderr[-2000:]
    return int(found.group(1)), resumed.returncode


def test_sigterm_saves_a_checkpoint_and_the_run_resumes(scene, tmp_path):
    train = start("train.py", train_args(scene, str(tmp_path)))
    wait_for(lambda: len(checkpoint_numbers(str(tmp_path))) >= 2, train)
    train.send_signal(signal.SIGTERM)
    _, err = train.communicate(timeout=120)
    assert train.returncode == 128 + signal.SIGTERM and "Traceback" not in err
    assert "Interrupted: checkpoint saved to" in err
    assert err.strip().splitlines()[-1] == "terminated (SIGTERM)"
    assert not os.path.exists(tmp_path / "model")
    interrupted = checkpoint_numbers(str(tmp_path))[-1]  # ckpt-N: epoch N (0-based) was in progress
    epochs_done, code = resume(scene, str(tmp_path))  # it restarts the epoch in progress...
    # ... or the next one when the signal came while the end of epoch N was being saved
    assert interrupted <= epochs_done <= interrupted + 1 and code == 0
    assert os.path.isfile(tmp_path / "model" / "saved_model.pb")


def test_after_sigkill_training_resumes_losing_at_most_the_epoch_in_progress(scene, tmp_path):
    for delay in (0.0, 0.5):
        train = start("train.py", train_args(scene, str(tmp_path)))
        wait_for(lambda: len(checkpoint_numbers(str(tmp_path))) >= 3, train)
        time.sleep(delay)
        ended = checkpoint_numbers(str(tmp_path))[-1] + 1  # ckpt-N is written when epoch N (0-based) ends
        train.kill()
        train.wait()
        epochs_done, code = resume(scene, str(tmp_path))
        # a kill while ckpt-N is being written loses epoch N: the run resumes from ckpt-(N-1), intact
        assert epochs_done >= ended - 1 and code == 0
        shutil.rmtree(tmp_path / "ck")
        shutil.rmtree(tmp_path / "model")
