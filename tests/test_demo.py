"""make demo's pipeline on a small scene: every step runs, outputs land in one folder, SR beats bicubic."""
import json
import os

import pytest

import demo
from cli import run_cli
from errors import SR4RSError


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
