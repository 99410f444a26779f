"""The whole SR4RS workflow on a built-in demo scene, in a few minutes on a CPU (`make demo`,
`python -m demo --out DIR` from the repository root).

1. make a 10 m / 2.5 m RGBN scene pair (demo/scene.py: fields, roads, river, villages, forest; LR =
   HR blurred by a sensor PSF and decimated 4x), and split it: the left 3/4 for training, the right
   1/4 held out;
2. extract co-located LR/HR patches from the training part (extract_patches.py);
3. train a small network (train.py: pre-training, then GAN), TensorBoard logs, SavedModel;
4. super-resolve the held-out LR part (sr.py);
5. compare with the held-out HR and with GDAL's bicubic upsampling (evaluate.py).

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

from errors import SR4RSError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: commands run there
MARKER = ".sr4rs-demo"  # marks a folder made by the demo (emptied by the next demo)
TRAIN_FRACTION = 0.75  # LR columns [0, 3/4) train, [3/4, 1) held out
# The demo's training settings (README, "make demo"): small network, opt-in linear residual skip.
TRAIN_SETTINGS = ["--depth", "8", "--nresblocks", "2", "--epochs", "1", "--batchsize", "8",
                  "--adam_lr", "0.0005", "--adam_b1", "0.9", "--l1weight", "0", "--l2weight", "1000",
                  "--vggweight", "0", "--ganweight", "0.01", "--losstype", "WGAN-GP", "--residual", "linear",
                  "--lr_scale", "0.0001", "--hr_scale", "0.0001", "--previews_step", "50", "--seed", "0",
                  "--pretrain"]


def build_parser() -> argparse.ArgumentParser:
    """Command line of `python -m demo`."""
    p = argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_out",
                   help="folder for everything the demo writes (default demo_out; emptied first)")
    p.add_argument("--size", type=int, default=2048,
                   help="HR scene size in pixels (multiple of 16; default 2048)")
    p.add_argument("--patchsize", type=int, default=16, help="LR patch size (default 16)")
    p.add_argument("--max_patches", type=int, default=1600, help="training patches (default 1600)")
    p.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
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


def split_scene(lr: str, hr: str, folder: str) -> dict[str, str]:
    """Crop the scene pair into a training part and a held-out part (never seen in training)."""
    ds = gdal.Open(lr)
    cols, rows = ds.RasterXSize, ds.RasterYSize
    train_cols = int(cols * TRAIN_FRACTION)
    paths = {name: os.path.join(folder, f"{name}.tif") for name in
             ("lr_train", "hr_train", "lr_heldout", "hr_heldout", "preview")}
    windows = {"lr_train": (lr, [0, 0, train_cols, rows], 1), "hr_train": (hr, [0, 0, train_cols, rows], 4),
               "lr_heldout": (lr, [train_cols, 0, cols - train_cols, rows], 1),
               "hr_heldout": (hr, [train_cols, 0, cols - train_cols, rows], 4),
               "preview": (lr, [train_cols, rows // 2, min(48, cols - train_cols), 48], 1)}
    for name, (src, window, scale) in windows.items():
        gdal.Translate(paths[name], src, srcWin=[v * scale for v in window], creationOptions=["TILED=YES"])
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Run the five steps, print where everything is and how SR compares with bicubic.

    Args:
        argv: command-line arguments (default: sys.argv[1:]).
    """
    args = build_parser().parse_args(argv)
    if args.size % 16 or args.size < 512:
        raise SR4RSError(f"--size {args.size}: use a multiple of 16, at least 512")
    start = time.time()
    out = os.path.abspath(args.out)
    prepare_folder(out)
    py = sys.executable
    scene, logs = os.path.join(out, "scene"), os.path.join(out, "logs")
    os.makedirs(logs)
    model = os.path.join(out, "savedmodel")

    run("1/5 demo scene (10 m LR / 2.5 m HR, 4 bands)",
        [py, "-m", "demo.scene", scene, "--size", str(args.size), "--seed", str(args.seed),
         "--png", os.path.join(out, "scene_quicklook.png")], os.path.join(logs, "1_scene.log"))
    parts = split_scene(os.path.join(scene, "demo_lr_10m.tif"), os.path.join(scene, "demo_hr_2.5m.tif"), out)
    patches = {k: os.path.join(out, f"{k}_patches.tif") for k in ("lr", "hr")}
    run("2/5 patches from the training part",
        [py, "extract_patches.py", "--lr", parts["lr_train"], "--hr", parts["hr_train"],
         "--lr_patchsize", str(args.patchsize), "--step", str(args.patchsize // 2),
         "--max_patches", str(args.max_patches), "--out_lr", patches["lr"], "--out_hr", patches["hr"]],
        os.path.join(logs, "2_patches.log"))
    run("3/5 training (pre-training, then GAN)",
        [py, "train.py", "--lr_patches", patches["lr"], "--hr_patches", patches["hr"],
         "--preview", parts["preview"], "--logdir", os.path.join(out, "tensorboard"),
         "--save_ckpt", os.path.join(out, "ckpts") + os.sep, "--savedmodel", model, *TRAIN_SETTINGS],
        os.path.join(logs, "3_train.log"))
    sr = os.path.join(out, "sr_heldout_2.5m.tif")
    run("4/5 super-resolution of the held-out part",
        [py, "sr.py", "--input", parts["lr_heldout"], "--savedmodel", model, "--output", sr,
         "--engine", "tf"],
        os.path.join(logs, "4_sr.log"))
    metrics, quicklook = os.path.join(out, "metrics.json"), os.path.join(out, "quicklook.png")
    run("5/5 evaluation against the held-out HR and GDAL bicubic",
        [py, "evaluate.py", "--sr", sr, "--ref", parts["hr_heldout"], "--lr", parts["lr_heldout"],
         "--data_range", "10000", "--out", metrics, "--png", quicklook], os.path.join(logs, "5_evaluate.log"))

    with open(os.path.join(logs, "5_evaluate.log")) as f:
        print("\n" + f.read().strip())
    with open(metrics) as f:
        result = json.load(f)["metrics"]
    gain = result["sr_minus_bicubic"]["psnr"]
    verdict = "above" if gain > 0 else "NOT above"
    print(f"\nSR PSNR {result['sr']['psnr']:.2f} dB vs bicubic {result['bicubic']['psnr']:.2f} dB: "
          f"{gain:+.2f} dB, {verdict} bicubic on the held-out part.")
    print(f"\nEverything is in {out}:\n  scene/              the LR/HR scene pair (+ scene_quicklook.png)\n"
          f"  lr_patches.tif, hr_patches.tif (+ lr_patches_centers.gpkg)\n"
          f"  savedmodel/         the exported model (python sr.py --savedmodel {model} ...)\n"
          f"  sr_heldout_2.5m.tif the super-resolved held-out part\n"
          f"  metrics.json, quicklook.png   the evaluation\n  logs/               every command's output")
    print(f"\nTensorBoard: {os.path.join(ROOT, '.venv', 'bin', 'tensorboard')} --logdir "
          f"{os.path.join(out, 'tensorboard')}  (then open http://localhost:6006)")
    print(f"\nDemo finished in {(time.time() - start) / 60:.1f} minutes.")
    return 0
