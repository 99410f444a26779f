"""make demo's pipeline (demo/run.py) on the shipped real image: every step runs, outputs land in one
folder, the verdict printed is the evaluation's; `python -m demo` and `python -m demo.scene` run from the
repository root; the README's recipes are demo/recipes.py's."""
import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT

from cli import run_cli
from demo import run as demo
from demo.recipes import CPU_RECIPE, RECIPES
from errors import SR4RSError


@pytest.mark.slow
def test_the_demo_runs_end_to_end_on_real_imagery(tmp_path, capsys):
    out = tmp_path / "demo_out"
    assert run_cli(demo.main, ["--out", str(out), "--minutes", "0.2"]) == 0
    printed = capsys.readouterr().out
    for name in ("train_hr.tif", "train_lr.tif", "test_hr.tif", "test_lr.tif", "lr_patches.tif",
                 "savedmodel/saved_model.pb", "sr_test.tif", "metrics.json", "quicklook.png"):
        assert (out / name).exists(), name
    assert os.listdir(out / "tensorboard")
    with open(out / "metrics.json") as f:
        gain = json.load(f)["metrics"]["sr_minus_bicubic"]["psnr"]
    verdict = "above" if gain > 0 else "NOT above"
    assert f"{gain:+.2f} dB, {verdict} bicubic on the test part (real imagery" in printed
    assert "tensorboard --logdir" in printed and "landsat8_rgb_30m_crop.tif (512 x 512 px" in printed
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


def test_the_readme_shows_the_recipes_the_demo_and_the_benchmarks_use():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = " ".join(f.read().replace("\\\n", " ").split())
    section = readme[readme.index("## Recommended recipes"):readme.index("## Step 3")]
    for name, recipe in RECIPES.items():
        assert " ".join(recipe[recipe.index("--upsampling"):]) in section, name
    assert " ".join(CPU_RECIPE[:4]) in section
