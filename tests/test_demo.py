"""make demo's pipeline (demo/run.py) on a small scene: every step runs, outputs land in one folder, SR
beats bicubic; `python -m demo` and `python -m demo.scene` run from the repository root."""
import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT

from cli import run_cli
from demo import run as demo
from errors import SR4RSError


@pytest.mark.slow
def test_the_demo_runs_end_to_end_and_beats_bicubic(tmp_path, capsys):
    out = tmp_path / "demo_out"
    assert run_cli(demo.main, ["--out", str(out), "--size", "512", "--max_patches", "200"]) == 0
    printed = capsys.readouterr().out
    for name in ("scene/demo_lr_10m.tif", "lr_patches.tif", "savedmodel/saved_model.pb",
                 "sr_heldout_2.5m.tif", "metrics.json", "quicklook.png", "scene_quicklook.png"):
        assert (out / name).exists(), name
    assert os.listdir(out / "tensorboard")
    with open(out / "metrics.json") as f:
        metrics = json.load(f)["metrics"]
    assert metrics["sr_minus_bicubic"]["psnr"] > 0
    assert "above bicubic" in printed and "tensorboard --logdir" in printed
    # the next demo into the same folder starts afresh
    demo.prepare_folder(str(out))
    assert os.listdir(out) == [demo.MARKER]


def test_the_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(SR4RSError, match="not a demo folder"):
        demo.prepare_folder(str(tmp_path))
    assert (tmp_path / "precious.txt").exists()


@pytest.mark.parametrize("module", ["demo", "demo.scene"])
def test_the_demo_modules_run_from_the_repository_root(module):
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith(f"usage: python -m {module} ")
