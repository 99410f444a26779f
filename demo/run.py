"""The whole SR4RS workflow on a real image, in a few minutes on a CPU (`make demo`, `python -m demo --out
DIR` from the repository root).

1. cut the image (default: a Landsat 8 crop shipped in demo/data, 30 m) into a training part and a
   held-out test part (its right quarter), and make each part's LR input (120 m) by averaging 4 x 4
   pixel blocks (demo/pairs.py);
2. extract co-located LR/HR patches from the training part (extract_patches.py);
3. train with the recommended CPU recipe for a few minutes, 10% of the training pairs held out for
   validation (train.py), TensorBoard logs, SavedModel;
4. super-resolve the test part's LR (sr.py);
5. compare with the test part's HR and with GDAL's bicubic upsampling of the same LR (evaluate.py).

Each step runs the project's command line exactly as a user would; the commands are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence

from osgeo import gdal

from demo.pairs import make_pairs
from demo.recipes import CPU_RECIPE
from errors import SR4RSError
from quicklook import require_pillow
from raster import open_raster, read_array

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: commands run there
IMAGE = os.path.join(ROOT, "demo", "data", "landsat8_rgb_30m_crop.tif")
MARKER = ".sr4rs-demo"  # marks a folder made by the demo (emptied by the next demo)
TEST_SHARE = 0.25  # the right quarter is held out
PREVIEW = 48  # LR pixels a side of the TensorBoard preview (a crop of the test part)


def build_parser() -> argparse.ArgumentParser:
    """Command line of `python -m demo`."""
    p = argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_out",
                   help="folder for everything the demo writes (default demo_out; emptied first)")
    p.add_argument("--image", default=IMAGE,
                   help="the real HR image (default: the Landsat 8 crop of demo/data); its LR is made by "
                        "4 x 4 averaging")
    p.add_argument("--minutes", type=float, default=3.0, help="training time (default 3)")
    p.add_argument("--patchsize", type=int, default=16, help="LR patch size (default 16)")
    return p


def run(step: str, args: list[str], log: str) -> None:
    """Run one project command, print it, keep its output in `log`, stop the demo if it fails."""
    print(f"\n== {step}\n$ {shlex.join(args)}", flush=True)
    start = time.time()
    with open(log, "w") as f:
        code = subprocess.call(args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if code != 0:
        with open(log) as f:
            tail = f.read().splitlines()[-15:]
        raise SR4RSError(f"{step} failed (exit {code}), see {log}:\n" + "\n".join(tail))
    print(f"   done in {time.time() - start:.0f} s (log: {log})", flush=True)


def prepare_folder(out: str) -> None:
    """Start from an empty demo folder: a previous demo's folder is emptied, any other folder refused."""
    marker = os.path.join(out, MARKER)
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.exists(marker):
            raise SR4RSError(f"{out}: not empty and not a demo folder; give another --out")
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    open(marker, "w").close()


def scale_of(lr: str) -> str:
    """--lr_scale/--hr_scale bringing the image's values into [0, 1] (1 / its maximum)."""
    return f"{1.0 / float(max(1e-12, float(read_array(open_raster(lr)).max()))):.3g}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the five steps, print where everything is and how SR compares with bicubic.

    Args:
        argv: command-line arguments (default: sys.argv[1:]).
    """
    args = build_parser().parse_args(argv)
    if args.minutes <= 0 or args.patchsize < 8:
        raise SR4RSError("--minutes must be > 0 and --patchsize >= 8")
    require_pillow("the demo")
    start = time.time()
    out = os.path.abspath(args.out)
    prepare_folder(out)
    py = sys.executable
    logs = os.path.join(out, "logs")
    os.makedirs(logs)
    model = os.path.join(out, "savedmodel")

    print(f"\n== 1/5 training and test parts of {args.image}, LR by 4 x 4 averaging", flush=True)
    parts = make_pairs(args.image, out, TEST_SHARE)
    print(f"   {parts.description}")
    preview = os.path.join(out, "preview_lr.tif")  # for TensorBoard: a crop of the test part
    gdal.Translate(preview, parts.test_lr, srcWin=[0, 0, PREVIEW, PREVIEW])
    patches = {k: os.path.join(out, f"{k}_patches.tif") for k in ("lr", "hr")}
    run("2/5 patches from the training part",
        [py, "extract_patches.py", "--lr", parts.train_lr, "--hr", parts.train_hr,
         "--lr_patchsize", str(args.patchsize), "--step", str(args.patchsize // 2),
         "--out_lr", patches["lr"], "--out_hr", patches["hr"]],
        os.path.join(logs, "2_patches.log"))
    scale = scale_of(parts.train_lr)
    run(f"3/5 training: the recommended CPU recipe for {args.minutes:g} minutes",
        [py, "train.py", "--lr_patches", patches["lr"], "--hr_patches", patches["hr"],
         "--preview", preview, "--logdir", os.path.join(out, "tensorboard"),
         "--save_ckpt", os.path.join(out, "ckpts") + os.sep, "--savedmodel", model,
         "--lr_scale", scale, "--hr_scale", scale, *CPU_RECIPE, "--time_limit", f"{args.minutes:g}",
         "--seed", "0"],
        os.path.join(logs, "3_train.log"))
    sr = os.path.join(out, "sr_test.tif")
    run("4/5 super-resolution of the test part",
        [py, "sr.py", "--input", parts.test_lr, "--savedmodel", model, "--output", sr, "--engine", "tf"],
        os.path.join(logs, "4_sr.log"))
    metrics, quicklook = os.path.join(out, "metrics.json"), os.path.join(out, "quicklook.png")
    run("5/5 evaluation against the test part's HR and GDAL bicubic",
        [py, "evaluate.py", "--sr", sr, "--ref", parts.test_hr, "--lr", parts.test_lr,
         "--out", metrics, "--png", quicklook], os.path.join(logs, "5_evaluate.log"))

    with open(os.path.join(logs, "5_evaluate.log")) as f:
        print("\n" + f.read().strip())
    with open(metrics) as f:
        result = json.load(f)["metrics"]
    gain = result["sr_minus_bicubic"]["psnr"]
    verdict = "above" if gain > 0 else "NOT above"
    print(f"\nSR PSNR {result['sr']['psnr']:.2f} dB vs bicubic {result['bicubic']['psnr']:.2f} dB: "
          f"{gain:+.2f} dB, {verdict} bicubic on the test part (real imagery, never trained on).")
    print(f"\nEverything is in {out}:\n"
          f"  train_hr.tif, train_lr.tif, test_hr.tif, test_lr.tif   the two parts (LR by 4 x 4 mean)\n"
          f"  lr_patches.tif, hr_patches.tif (+ lr_patches_centers.gpkg)\n"
          f"  savedmodel/         the exported model (python sr.py --savedmodel {model} ...)\n"
          f"  sr_test.tif         the super-resolved test part\n"
          f"  metrics.json, quicklook.png   the evaluation\n  logs/               every command's output")
    tensorboard = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    print(f"\nTensorBoard: {tensorboard if os.path.exists(tensorboard) else 'tensorboard'} --logdir "
          f"{os.path.join(out, 'tensorboard')}  (then open http://localhost:6006)")
    print(f"\nDemo finished in {(time.time() - start) / 60:.1f} minutes.")
    return 0
