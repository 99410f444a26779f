"""sr.py --precision: float32 vs bfloat16 (TensorFlow's oneDNN rewrite), speed and closeness, in one run.

    .venv/bin/python bench/bench_precision.py [--image LR.tif] [--trained SAVEDMODEL] [--write]

Each sr.py run (built-in engine, --ts 512 --pad 64, end to end: model loading, reads, writes) is its own
process, as a user runs it, timed from outside; the machine's 2 cores run nothing else. Models: the
default network (depth 64, 16 residual blocks, random weights: the cost a user pays), and a trained model
(`make demo`'s, by default: demo_out/savedmodel), whose bfloat16 output is compared with its float32
output on real imagery (PSNR over the float32 output's range). The LR input: the 4 x 4 mean of the demo's
Landsat 8 crop (128 x 128 LR -> 512 x 512 HR).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench.report import machine, write_section  # noqa: E402
from demo.pairs import make_pairs  # noqa: E402
from precision import cpu_bfloat16_flags  # noqa: E402
from raster import open_raster, read_array  # noqa: E402

DEMO_IMAGE = os.path.join(HERE, "demo", "data", "landsat8_rgb_30m_crop.tif")
DEMO_MODEL = os.path.join(HERE, "demo_out", "savedmodel")
ROUNDS = 2


def default_network(path: str, nbands: int) -> None:
    """The default network (depth 64, 16 residual blocks), random weights, exported as train.py does."""
    import tensorflow as tf

    from export import export_savedmodel
    from network import Generator
    from scaling import Scaling

    tf.random.set_seed(0)
    export_savedmodel(Generator(nbands), path, nbands, Scaling.scales(nbands, 1e-4, 1e-4))


def run_sr(image: str, model: str, output: str, precision: str) -> float:
    """sr.py in its own process; its wall time in seconds."""
    if os.path.exists(output):
        os.remove(output)
    start = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(HERE, "sr.py"), "--input", image, "--savedmodel", model,
                    "--output", output, "--engine", "tf", "--precision", precision, "--quiet"], check=True)
    return time.perf_counter() - start


def psnr(reference: np.ndarray, other: np.ndarray) -> float:
    """PSNR of `other` against `reference`, over the reference's range."""
    mse = np.mean((reference.astype(np.float64) - other) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(float(np.ptp(reference)) ** 2 / mse)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", help="LR image (default: the 4 x 4 mean of the demo's crop, 128 x 128)")
    p.add_argument("--trained", default=DEMO_MODEL, help="a trained SavedModel (default: make demo's)")
    p.add_argument("--write", action="store_true", help="write BENCHMARKS.md's precision section")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        image = args.image
        if image is None:
            image = make_pairs(DEMO_IMAGE, tmp, test_share=0.75).train_lr  # the left quarter: 128 x 128
        nbands = open_raster(image).RasterCount
        models = {"default network (depth 64, 16 blocks)": os.path.join(tmp, "default")}
        default_network(models["default network (depth 64, 16 blocks)"], nbands)
        if os.path.isdir(args.trained):
            shown = os.path.relpath(args.trained, HERE) if args.trained.startswith(HERE) else args.trained
            models[f"trained ({shown})"] = args.trained
        rows = []
        for name, model in models.items():
            times, outputs = {}, {}
            for precision in ("float32", "bfloat16"):
                path = os.path.join(tmp, f"{precision}.tif")
                times[precision] = min(run_sr(image, model, path, precision) for _ in range(ROUNDS))
                outputs[precision] = read_array(open_raster(path))
            hr_mpx = outputs["float32"].shape[0] * outputs["float32"].shape[1] / 1e6
            rows.append((name, hr_mpx, times["float32"], times["bfloat16"],
                         psnr(outputs["float32"], outputs["bfloat16"])))
    flags = ", ".join(cpu_bfloat16_flags()) or "none"
    table = "\n".join(f"| {name} | {mpx / f32:.3f} | {mpx / bf16:.3f} | **{f32 / bf16:.1f}x** | {db:.1f} |"
                      for name, mpx, f32, bf16, db in rows)
    text = f"""## sr.py --precision: float32 vs bfloat16 (`bench/bench_precision.py`)

{machine()}, CPU bfloat16 flags: {flags}. `sr.py --engine tf --ts 512 --pad 64` on {os.path.basename(image)
if args.image else "the 4 x 4 mean of the demo's Landsat 8 crop (128 x 128 LR -> 512 x 512 HR)"}, each run
its own process timed end to end (TensorFlow start-up, model loading, reads, writes), best of {ROUNDS}.
PSNR: the bfloat16 output against the float32 output of the same model (range of the float32 output).

| model | float32 HR Mpx/s | bfloat16 HR Mpx/s | speed-up | bfloat16 vs float32 (dB) |
|---|---|---|---|---|
{table}

Re-run: `.venv/bin/python bench/bench_precision.py --write` (after `make demo` for the trained model).
"""
    print(text)
    if args.write:
        write_section("precision", text)


if __name__ == "__main__":
    main()
