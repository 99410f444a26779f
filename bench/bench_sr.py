"""Benchmark sr.py: HR megapixels/s of the built-in engine end to end, of the bare SavedModel signature on
in-memory tiles of the same size, and of the OTB engine on the same input (when OTBTF is built).

Usage: .venv/bin/python bench/bench_sr.py [--depth 16] [--nresblocks 16] [--size 384] [--ts 512]
Everything runs in this process, after `import tensorflow`; `--repeats` rounds each run every
measurement in turn and the best time of each is kept (the machine may be shared).
Writes the "sr" section of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))


def seconds(function: Callable[[], None]) -> tuple[float, float]:
    """Wall time and process CPU time (all threads) of one call."""
    start, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--nresblocks", type=int, default=16)
    parser.add_argument("--size", type=int, default=384, help="LR image side (pixels)")
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--ts", type=int, default=512)
    parser.add_argument("--pad", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 2, 4],
                        help="batch sizes compared on the bare signature")
    args = parser.parse_args()
    if 4 * args.size % args.ts:
        parser.error("4 * --size must be a multiple of --ts (the bare figure counts whole tiles)")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import_start = time.perf_counter()
    import tensorflow as tf

    import_seconds = time.perf_counter() - import_start
    from osgeo import gdal
    from report import machine, write_section

    import otb_engine
    import sr
    from export import export_savedmodel
    from network import Generator
    from otb_env import load_otb
    from scaling import Scaling
    from sr_model import Signature, inspect_savedmodel

    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "model")
        tf.random.set_seed(0)
        export_savedmodel(Generator(args.bands, args.nresblocks, args.depth), model, args.bands,
                          Scaling.scales(args.bands, 1e-4, 1e-4))
        src = os.path.join(tmp, "lr.tif")
        ds = gdal.GetDriverByName("GTiff").Create(src, args.size, args.size, args.bands, gdal.GDT_Int16)
        ds.SetGeoTransform((500000.0, 10.0, 0.0, 4800000.0, 0.0, -10.0))
        rng = np.random.default_rng(0)
        for b in range(args.bands):
            ds.GetRasterBand(b + 1).WriteArray(rng.integers(0, 3000, (args.size, args.size), dtype=np.int16))
        ds = None
        hr_side = 4 * args.size
        ntiles = (-(-hr_side // args.ts)) ** 2
        window = (args.ts + 2 * args.pad) // 4

        signature = Signature(inspect_savedmodel(model), args.pad)
        tiles = rng.integers(0, 3000, (ntiles, window, window, args.bands)).astype(np.float32)
        for batch in args.batches:  # warm-up: first-call initialisation of each shape is not throughput
            signature(tiles[:batch])

        def bare(batch: int = 1, count: int = ntiles) -> None:
            for i in range(0, count, batch):
                signature(tiles[i:min(i + batch, count)])

        def run(engine: str, out: str) -> None:
            assert sr.main(["--input", src, "--savedmodel", model, "--output", os.path.join(tmp, out),
                            "--engine", engine, "--ts", str(args.ts), "--pad", str(args.pad), "--quiet"]) == 0

        # name -> (call, HR megapixels it produces); all are interleaved in each round, the best time kept.
        count = max(args.batches)
        jobs = {"bare": (bare, ntiles * args.ts ** 2 / 1e6),
                "tf": (lambda: run("tf", "tf.tif"), hr_side ** 2 / 1e6)}
        jobs.update({f"batch {b}": (lambda b=b: bare(b, count), count * args.ts ** 2 / 1e6)
                     for b in args.batches})
        otb_size = otb_engine.otb_output_size(args.size, args.size, args.ts, args.pad)
        if load_otb() is not None:  # same input and parameters; its output is smaller (margins dropped)
            jobs["otb"] = (lambda: run("otb", "otb.tif"), otb_size[0] * otb_size[1] / 1e6)
        load = [os.getloadavg()[0]]
        wall, cpu = dict.fromkeys(jobs, math.inf), dict.fromkeys(jobs, math.inf)
        for _ in range(args.repeats):
            for name, (call, _) in jobs.items():
                w, c = seconds(call)
                wall[name], cpu[name] = min(wall[name], w), min(cpu[name], c)
        load.append(os.getloadavg()[0])
    mpx = {name: jobs[name][1] / wall[name] for name in jobs}
    mpx_cpu = {name: jobs[name][1] / cpu[name] for name in jobs}
    otb_line = "| sr.py `--engine otb` | not measured | | OTBTF not available: `make otb` |"
    if "otb" in mpx:
        otb_line = (f"| sr.py `--engine otb` (OTBTF r4.3.1), same input | {mpx['otb']:.3f} | "
                    f"{mpx_cpu['otb']:.3f} | output {otb_size[0]} x {otb_size[1]} (margins dropped, "
                    "rounded to ts) |")

    ratio, ratio_cpu = mpx["tf"] / mpx["bare"], mpx_cpu["tf"] / mpx_cpu["bare"]
    bare_note, tf_note = f"{ntiles} tiles, batch 1", "model loading, reads, writes included"
    batch_cells = ", ".join(f"batch {b}: {mpx[f'batch {b}']:.3f}" for b in args.batches)
    markdown = f"""## sr.py: whole-scene inference (`bench/bench_sr.py`)

{machine()}. Generator depth {args.depth}, {args.nresblocks} residual blocks, {args.bands} bands;
int16 LR image {args.size} x {args.size} -> {hr_side} x {hr_side} HR ({hr_side ** 2 / 1e6:.2f} Mpx),
`--ts {args.ts} --pad {args.pad}` ({ntiles} tiles, LR windows of {window} x {window}), default output
options (tiled DEFLATE GeoTIFF). CPU only. One process, after `import tensorflow`
({import_seconds:.1f} s, paid once per command); {args.repeats} rounds, each running every measurement in
turn, best time kept (the machine is shared: load average {load[0]:.1f} at the start, {load[1]:.1f} at
the end).

| what | HR Mpx/s (wall) | HR Mpx per CPU-second | notes |
|---|---|---|---|
| bare signature, in-memory tiles | {mpx["bare"]:.3f} | {mpx_cpu["bare"]:.3f} | {bare_note} |
| sr.py `--engine tf`, end to end | {mpx["tf"]:.3f} | {mpx_cpu["tf"]:.3f} | {tf_note} |
{otb_line}

Built-in engine / bare signature: **{ratio:.0%}** in wall time (target >= 90%), {ratio_cpu:.0%} in CPU
time (less sensitive to the other processes of a shared machine). Bare signature by batch size (HR Mpx/s,
wall, {max(args.batches)} tiles): {batch_cells}.
Re-run: `.venv/bin/python bench/bench_sr.py`.
"""
    print(markdown)
    write_section("sr", markdown)


if __name__ == "__main__":
    main()
