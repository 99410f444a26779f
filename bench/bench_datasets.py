"""Benchmark datasets.PatchesDataset: patches/s in memory and streaming, peak RSS of streaming at two sizes.

Usage: .venv/bin/python bench/bench_datasets.py [--sizes 2000 8000] [--batch 16] [--keep DIR]
Each (mode, size) runs in its own subprocess so that peak RSS values do not mix. Writes the "datasets"
section of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

LR_SIZE, BANDS, DTYPE = 32, 4, np.int16  # SR4RS's usual patches: 32x32 LR, 128x128 HR, 4 bands, int16


def make_files(folder: str, n: int) -> tuple[str, str]:
    """Write a LR and a HR patches image of n random patches (written in slices: flat RAM)."""
    from osgeo import gdal

    rng = np.random.default_rng(n)
    paths = []
    for name, size in (("lr", LR_SIZE), ("hr", 4 * LR_SIZE)):
        path = os.path.join(folder, f"{name}_{n}.tif")
        ds = gdal.GetDriverByName("GTiff").Create(path, size, n * size, BANDS, gdal.GDT_Int16,
                                                  ["BIGTIFF=IF_SAFER"])
        step = max(1, 2 ** 22 // (size * size * BANDS))
        for start in range(0, n, step):
            count = min(step, n - start)
            block = rng.integers(0, 10000, (BANDS, count * size, size), dtype=DTYPE)
            for b in range(BANDS):
                ds.GetRasterBand(b + 1).WriteArray(block[b], 0, start * size)
        ds = None
        paths.append(path)
    return paths[0], paths[1]


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(mode: str, lr: str, hr: str, batch: int, epochs: int) -> dict:
    """Run in a subprocess: build the dataset, iterate `epochs` epochs, report speed and memory."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # noqa: F401  (imported before measuring the baseline)

    from datasets import PatchesDataset

    base = peak_rss_mb()
    t0 = time.perf_counter()
    ds = PatchesDataset([lr], [hr], streaming=mode == "streaming")
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = ds.lr_stats, ds.hr_stats
    stats_time = time.perf_counter() - t0
    ds.pop_wait_seconds()
    data = ds.tf_dataset(batch, seed=0)
    rates, seen = [], 0
    for _ in range(epochs):
        t0 = time.perf_counter()
        n = 0
        for b in data:
            n += int(b["lr"].shape[0])
        rates.append(n / (time.perf_counter() - t0))
        seen += n
    assert stats[0]["max"][0] > 0
    return {"mode": mode, "n": ds.n_patches, "build_s": build, "stats_s": stats_time,
            "patches_per_s": float(np.median(rates)), "wait_s": ds.pop_wait_seconds() / epochs,
            "baseline_rss_mb": base, "peak_rss_mb": peak_rss_mb()}


def run_worker(mode: str, lr: str, hr: str, batch: int, epochs: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, lr, hr, "--batch", str(batch),
           "--epochs", str(epochs)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs=2, default=[2000, 8000], help="patches in the two datasets")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3, help="epochs per measure (median speed)")
    p.add_argument("--keep", help="folder for the synthetic patches images (default: a temporary one)")
    p.add_argument("--worker", nargs=3, metavar=("MODE", "LR", "HR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.batch, args.epochs)))
        return
    from bench.report import machine, write_section

    with tempfile.TemporaryDirectory(dir=args.keep) as folder:
        results = []
        for n in args.sizes:
            lr, hr = make_files(folder, n)
            mb = (os.path.getsize(lr) + os.path.getsize(hr)) / 2 ** 20
            for mode in ("in memory", "streaming"):
                r = run_worker(mode, lr, hr, args.batch, args.epochs)
                r["file_mb"] = mb
                results.append(r)
                print(f"{mode:9s} {n:6d} patches ({mb:6.0f} MB): {r['patches_per_s']:8.0f} patches/s, "
                      f"peak RSS {r['peak_rss_mb']:6.0f} MB (TF import: {r['baseline_rss_mb']:.0f} MB), "
                      f"load {r['build_s']:.1f} s, stats {r['stats_s']:.1f} s, "
                      f"fs time/epoch {r['wait_s']:.2f} s", flush=True)
    rows = "\n".join(
        f"| {r['mode']} | {r['n']} ({r['file_mb']:.0f} MB) | {r['patches_per_s']:.0f} "
        f"| {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - r['baseline_rss_mb']:.0f} | {r['build_s']:.1f} "
        f"| {r['stats_s']:.1f} | {r['wait_s']:.2f} |" for r in results)
    stream = [r for r in results if r["mode"] == "streaming"]
    growth = stream[1]["peak_rss_mb"] - stream[0]["peak_rss_mb"]
    data_growth = stream[1]["file_mb"] - stream[0]["file_mb"]
    verdict = ("it does not grow with the dataset size" if growth < 0.1 * data_growth else
               "it GROWS with the dataset size")
    write_section("datasets", f"""
## datasets.py: reading patches images (`bench/bench_datasets.py`)

{machine()}. Synthetic int16 patches images, LR 32x32x4 and HR 128x128x4 (136 KB per pair), batch
{args.batch}, median of {args.epochs} epochs, each mode and size in its own process. "Peak RSS" is the
process's VmHWM, and "above TF import" the part above the RSS after `import tensorflow`; "load" is the
constructor (in memory: reading everything); "stats" the first access to lr_stats/hr_stats (streaming:
one chunked pass over the files); "fs time" is `pop_wait_seconds()` per epoch (summed over readers).

| mode | patches | patches/s | peak RSS (MB) | above TF import (MB) | load (s) | stats (s) | fs s/epoch |
|---|---|---|---|---|---|---|---|
{rows}

Streaming peak RSS changes by {growth:+.0f} MB from {stream[0]['n']} to {stream[1]['n']} patches
({data_growth:+.0f} MB of files): {verdict}.
Re-run: `.venv/bin/python bench/bench_datasets.py`.
""")


if __name__ == "__main__":
    main()
