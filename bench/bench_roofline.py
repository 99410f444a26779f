"""sr.py against this machine's limits, default network (depth 64, 16 residual blocks), in one run:

    .venv/bin/python bench/bench_roofline.py [--original /path/to/sr4rs/code] [--write]

1. The network's cost, counted on its graph: FLOP per HR pixel, by kernel size, and the margins' overhead
   of `--ts 512 --pad 64` ((ts + 2 pad)^2 / ts^2).
2. The roofline: this machine's rate on the network's own convolutions (9x9 and 3x3, 256 -> 256 channels
   on 160 x 160 and 640 x 640 pixels, the best), float32 and bfloat16 (oneDNN), and the HR Mpx/s they allow:
   every FLOP of the network at the rate of its kernel size.
3. sr.py end to end (its own process, timed from outside: TensorFlow start-up, model loading, reads,
   writes), float32 and bfloat16, on LR images of 128 and 256 pixels a side (HR 512 and 1024): speed as a
   share of the roofline, and peak memory (the process's maximum RSS) when the image has 4 times the
   pixels. Also `--workers 2` (Dask) on the larger image.
4. XLA: the SavedModel's signature called through `tf.function(jit_compile=True)` against plain, on the
   same tile.
5. The original SR4RS generator's forward pass (TF1, `--original`: its code folder) on tiles of the same
   size, float32, without reads or writes.
The machine's cores should run nothing else.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tile_memory  # noqa: E402
from bench.bench_precision import default_network  # noqa: E402
from bench.report import machine, write_section  # noqa: E402
from precision import cpu_bfloat16_flags  # noqa: E402

NBANDS, DEPTH, NRESBLOCKS, TS, PAD = 4, 64, 16, 512, 64
SIZES = (128, 256)  # LR sides of the sr.py runs
ROUNDS = 3
DASK_SIDE = 512  # LR side of the --workers comparison
KERNELS = (9, 3)
FRANCE_LR_PIXELS = 5.5e9  # about 550,000 km2 of Sentinel-2 10 m pixels
GPU_TS, GPU_PAD = 2048, 64  # the tiles a GPU with 16 GB or more takes
GPU_SPEEDS = ((5, "T4 or V100 in float32"), (40, "A100 in TF32/bfloat16"), (150, "H100 in bfloat16"))
AUTO_BUDGET = 3 * 2 ** 30  # --max_memory of the --ts auto run
CONV_SIDES = (160, 640)  # pixels a side of the convolutions timed: the LR and HR windows' (--ts 512 --pad 64)


def graph_flops(window: int) -> dict[int, float]:
    """FLOP of one generator call on a [1, window, window, NBANDS] input, by kernel size (convolutions and
    transposed convolutions: 2 x MACs), counted on the traced graph."""
    import tensorflow as tf

    from network import Generator

    generator = Generator(NBANDS, NRESBLOCKS, DEPTH)
    graph = tf.function(generator).get_concrete_function(
        tf.TensorSpec([1, window, window, NBANDS], tf.float32)).graph
    flops: dict[int, float] = {}
    for op in graph.get_operations():
        if op.type not in ("Conv2D", "Conv2DBackpropInput"):
            continue
        kernel = op.inputs[1].shape  # [kh, kw, in, out] (transposed: [kh, kw, out, in])
        image = op.outputs[0].shape if op.type == "Conv2D" else op.inputs[2].shape
        macs = math.prod(image[1:3]) * math.prod(kernel)
        flops[kernel[0]] = flops.get(kernel[0], 0.0) + 2.0 * macs
    return flops


def conv_rate(kernel: int, side: int, dtype: str) -> float:
    """GFLOP/s of a kernel x kernel, 256 -> 256 channel convolution on a side x side image."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.cast(rng.uniform(-1, 1, (1, side, side, 256)).astype(np.float32), dtype)
    w = tf.cast(rng.uniform(-0.01, 0.01, (kernel, kernel, 256, 256)).astype(np.float32), dtype)
    conv = tf.function(lambda a, b: tf.nn.conv2d(a, b, 1, "SAME"))
    conv(x, w).numpy()
    best = math.inf
    for _ in range(ROUNDS):
        start = time.perf_counter()
        conv(x, w).numpy()
        best = min(best, time.perf_counter() - start)
    return 2.0 * side * side * kernel * kernel * 256 * 256 / best / 1e9


def peak_rss(pid: int) -> float:
    """VmHWM of a process (MB): the peak of its resident memory since it started its program (0 when it
    has ended). Read from /proc, since getrusage's ru_maxrss keeps the forking parent's peak."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:")), 0.0)
    except OSError:
        return 0.0


def run_sr(image: str, model: str, output: str, *args: str) -> tuple[float, float]:
    """sr.py in its own process: wall seconds, and the peak RSS (MB) of the largest process of its tree
    (the Dask workers' included), polled every 0.1 s."""
    import psutil

    if os.path.exists(output):
        os.remove(output)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, os.path.join(HERE, "sr.py"), "--input", image,
                                "--savedmodel", model, "--output", output, "--engine", "tf", "--ts", str(TS),
                                "--pad", str(PAD), "--quiet", *args])
    peaks: dict[int, float] = {}
    while process.poll() is None:
        try:
            children = psutil.Process(process.pid).children(recursive=True)
            tree = [process.pid, *(child.pid for child in children)]
        except psutil.NoSuchProcess:
            tree = []
        for pid in tree:
            peaks[pid] = max(peaks.get(pid, 0.0), peak_rss(pid))
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    if process.returncode:
        raise SystemExit(f"sr.py {' '.join(args)} failed ({process.returncode})")
    return seconds, max(peaks.values(), default=0.0)


def signature_seconds(model: str, window: int, xla: bool) -> float:
    """Seconds per tile of the SavedModel's signature, plain or through jit_compile (best of the rounds)."""
    import tensorflow as tf

    from sr_model import Signature, inspect_savedmodel

    signature = Signature(inspect_savedmodel(model), PAD)
    call = signature.function
    if xla:
        call = tf.function(lambda **kw: signature.function(**kw), jit_compile=True)
    lr = np.random.default_rng(1).uniform(0, 3000, (1, window, window, NBANDS))
    lr = tf.constant(lr.astype(np.float32))
    key = signature.input_key
    call(**{key: lr})  # warm-up (XLA: compiles)
    best = math.inf
    for _ in range(ROUNDS):
        start = time.perf_counter()
        next(iter(call(**{key: lr}).values())).numpy()
        best = min(best, time.perf_counter() - start)
    return best


def original_seconds(code: str, window: int) -> float | None:
    """Seconds per tile of the original generator's forward pass (bench/original_forward.py)."""
    if not code or not os.path.isfile(os.path.join(code, "network.py")):
        return None
    command = [sys.executable, os.path.join(HERE, "bench", "original_forward.py"), str(window), str(NBANDS),
               str(DEPTH), str(NRESBLOCKS)]
    done = subprocess.run(command, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": code})
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds_per_tile"]


def france(flop_per_px: float, cpu_f32: float, cpu_bf16: float, gpu_price: float) -> str:
    """On paper: all of France's Sentinel-2 10 m bands (4 bands, one pass) on GPUs of a given sustained
    speed and on CPUs like this one, from the counted cost and the measured rates."""
    hr_px = 16 * FRANCE_LR_PIXELS
    gpu_flop = hr_px * flop_per_px * ((GPU_TS + 2 * GPU_PAD) / GPU_TS) ** 2
    rows = []
    for tflops, example in GPU_SPEEDS:
        hours = gpu_flop / (tflops * 1e12) / 3600
        rows.append(f"| {tflops:g} ({example}) | {hours:.1f} | {hours / 8:.1f} h | {hours * gpu_price:.0f} |")
    cpu_days = {name: hr_px / (rate * 1e6) / 86400
                for name, rate in (("float32", cpu_f32), ("bfloat16", cpu_bf16))}
    table = "\n".join(rows)
    return f"""### On paper: all of France

France's Sentinel-2 10 m bands (B4, B3, B2, B8 in one pass), about 550,000 km2 = {FRANCE_LR_PIXELS:.2g} LR
pixels = {hr_px:.2g} HR pixels, default network, `--ts {GPU_TS} --pad {GPU_PAD}` on GPUs ({gpu_flop:.2g}
FLOP with the margins), one mosaic per UTM zone (30, 31, 32: no tile overlap computed twice). The GPU
speeds are assumptions, not measurements (no GPU here): the sustained rate of the network's convolutions,
about a third to a half of the card's peak; Dask's overhead, reads and writes are assumed hidden behind
the model at these tile sizes (single-process measurement above). Cost at {gpu_price:g} per GPU-hour.

| sustained TFLOP/s per GPU | GPU-hours | on 8 GPUs | cost |
|---|---|---|---|
{table}

On CPUs like this one (2 cores, `--ts 512`, measured above): {cpu_days["float32"]:.0f} machine-days in
float32, {cpu_days["bfloat16"]:.0f} in bfloat16 (AMX), i.e. a day on {math.ceil(cpu_days["bfloat16"])}
such machines with `--scheduler` (larger tiles, `--ts auto`, save up to a quarter of it)."""


def write_lr(path: str, side: int) -> str:
    """An int16 LR image of side x side pixels, 4 bands (values of a Sentinel-2 reflectance x 10000)."""
    from osgeo import gdal

    ds = gdal.GetDriverByName("GTiff").Create(path, side, side, NBANDS, gdal.GDT_Int16)
    ds.SetGeoTransform((500000.0, 10.0, 0.0, 4800000.0, 0.0, -10.0))
    rng = np.random.default_rng(side)
    for b in range(NBANDS):
        ds.GetRasterBand(b + 1).WriteArray(rng.integers(0, 3000, (side, side), dtype=np.int16))
    ds = None
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--original", help="the original SR4RS code folder (its network.py: a clone of "
                                      "remicres/sr4rs's code/); without it that row is not measured")
    p.add_argument("--gpu_price", type=float, default=2.0,
                   help="price of one GPU-hour for the France estimate (default 2.0)")
    p.add_argument("--write", action="store_true", help="write BENCHMARKS.md's roofline section")
    args = p.parse_args()
    window = (TS + 2 * PAD) // 4
    overhead = ((TS + 2 * PAD) / TS) ** 2
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "model")
        default_network(model, NBANDS)
        flops = graph_flops(window)
        hr_window_px = (4 * window) ** 2
        per_px = {k: f / hr_window_px for k, f in flops.items()}  # FLOP per computed HR pixel
        rates = {(dtype, k): max(conv_rate(k, side, dtype) for side in CONV_SIDES)
                 for dtype in ("float32", "bfloat16") for k in KERNELS}

        def roofline(dtype: str) -> float:
            """HR Mpx/s of the output with every FLOP at the rate of its kernel size (others at 3x3's)."""
            seconds = sum(f / (rates[(dtype, k if k in KERNELS else 3)] * 1e9) for k, f in per_px.items())
            return 1 / (seconds * overhead) / 1e6

        xla = {name: signature_seconds(model, window, name == "xla") for name in ("plain", "xla")}
        original = original_seconds(args.original, window)
        runs = {}
        for side in SIZES:
            image = write_lr(os.path.join(tmp, f"lr{side}.tif"), side)
            for precision in ("float32", "bfloat16"):
                runs[(precision, side)] = run_sr(image, model, os.path.join(tmp, "out.tif"),
                                                 "--precision", precision)
        big = os.path.join(tmp, f"lr{SIZES[-1]}.tif")
        large = write_lr(os.path.join(tmp, f"lr{DASK_SIDE}.tif"), DASK_SIDE)
        dask = {workers: run_sr(large, model, os.path.join(tmp, "out_dask.tif"), "--precision", "bfloat16",
                                *(["--workers", str(workers), "--part_size", "1024"] if workers else []))
                for workers in (0, 1, 2)}
        auto_ts = tile_memory.auto_tile_size(AUTO_BUDGET, PAD, 1, {}, (4 * SIZES[-1], 4 * SIZES[-1]))
        auto = run_sr(big, model, os.path.join(tmp, "out_auto.tif"), "--ts", "auto", "--max_memory",
                      str(AUTO_BUDGET // 2 ** 20))
    load.append(os.getloadavg()[0])

    total = sum(per_px.values())
    hr_mpx = {side: (4 * side) ** 2 / 1e6 for side in SIZES}
    speed = {key: hr_mpx[key[1]] / seconds for key, (seconds, _) in runs.items()}
    big_side = SIZES[-1]
    f32, bf16 = speed[("float32", big_side)], speed[("bfloat16", big_side)]
    tile_mpx = TS * TS / 1e6
    original_line = ("| original SR4RS generator, forward pass only (TF1 session), float32 | not measured "
                     "(`--original`) | | |")
    ratio_line = ""
    if original is not None:
        original_line = (f"| original SR4RS generator, forward pass only (TF1 session), float32 | "
                         f"{tile_mpx / original:.4f} | | same tiles, no reads or writes |")
        ratio_line = (f"\n- bfloat16 sr.py end to end / the original's float32 forward pass: "
                      f"**{bf16 / (tile_mpx / original):.1f}x** (goal >= 3x); float32 sr.py / the original: "
                      f"{f32 / (tile_mpx / original):.2f}x.")
    flops_text = ", ".join(f"{k}x{k}: {v / 1e6:.2f}" for k, v in sorted(per_px.items(), reverse=True))
    memory = {p: runs[(p, SIZES[-1])][1] / runs[(p, SIZES[0])][1] - 1 for p in ("float32", "bfloat16")}
    sides_text = " and ".join(f"{s} x {s}" for s in CONV_SIDES)
    dask_mpx = (4 * DASK_SIDE) ** 2 / 1e6
    dask_rows = "\n".join(
        f"| sr.py `--precision bfloat16`{f' `--workers {w} --part_size 1024` (Dask)' if w else ''}, LR "
        f"{DASK_SIDE} -> HR {4 * DASK_SIDE} | {dask_mpx / seconds:.4f} | "
        f"{dask_mpx / seconds / roofline('bfloat16'):.0%} | {rss:.0f}{' (largest process)' if w else ''} |"
        for w, (seconds, rss) in dask.items())
    rows = "\n".join(
        f"| sr.py `--precision {p}`, LR {side} -> HR {4 * side} | {speed[(p, side)]:.4f} | "
        f"{speed[(p, side)] / roofline(p):.0%} | {runs[(p, side)][1]:.0f} |"
        for side in SIZES for p in ("float32", "bfloat16"))
    text = f"""## sr.py against the machine's limits (`bench/bench_roofline.py`)

{machine()}, CPU bfloat16 flags: {", ".join(cpu_bfloat16_flags()) or "none"}. Default network (depth
{DEPTH}, {NRESBLOCKS} residual blocks, {NBANDS} bands, random weights), `--ts {TS} --pad {PAD}`
(LR windows of {window} x {window}: the margins make {overhead:.2f}x the output's pixels). All in one run,
the machine otherwise idle (load average {load[0]:.1f} at the start, {load[1]:.1f} at the end).

- Cost, counted on the graph: **{total / 1e6:.2f} MFLOP per computed HR pixel** ({flops_text}), so
  {total * overhead / 1e6:.1f} MFLOP per output pixel with the margins.
- Convolution rates, GFLOP/s (256 -> 256 channels, the best of {sides_text} pixels):
  float32 9x9 {rates[("float32", 9)]:.0f}, 3x3 {rates[("float32", 3)]:.0f}; bfloat16 9x9
  {rates[("bfloat16", 9)]:.0f}, 3x3 {rates[("bfloat16", 3)]:.0f}. Roofline (every FLOP at its kernel's
  rate): float32 {roofline("float32"):.4f}, bfloat16 {roofline("bfloat16"):.4f} HR Mpx/s.

| what | HR Mpx/s | share of the roofline | peak RSS (MB) |
|---|---|---|---|
{rows}
{dask_rows}
{original_line}

- sr.py end to end: float32 **{f32 / roofline("float32"):.0%}** of the float32 roofline (goal >= 85%),
  bfloat16 {bf16 / roofline("bfloat16"):.0%} of the bfloat16 roofline, {bf16 / f32:.1f}x float32.{ratio_line}
- Peak memory with 4 times the pixels (LR {SIZES[0]} -> {SIZES[-1]}): float32 {memory["float32"]:+.0%},
  bfloat16 {memory["bfloat16"]:+.0%} (goal: within 10% when the image size doubles).
- `--ts auto --max_memory {AUTO_BUDGET / 2 ** 30:.1f}G` (float32, LR {big_side}): tile size {auto_ts},
  estimated peak {tile_memory.tile_bytes(auto_ts, PAD, 1, 256) / 2 ** 30:.2f} GB, measured peak RSS
  {auto[1] / 1024:.2f} GB, {hr_mpx[big_side] / auto[0]:.4f} HR Mpx/s.
- XLA (`jit_compile=True` around the signature, float32, one tile): {xla["plain"]:.2f} s plain,
  {xla["xla"]:.2f} s with XLA: {xla["plain"] / xla["xla"]:.2f}x.

{france(total, f32, bf16, args.gpu_price)}

Re-run: `.venv/bin/python bench/bench_roofline.py --original /path/to/sr4rs/code --write`.
"""
    print(text)
    if args.write:
        write_section("roofline", text)


if __name__ == "__main__":
    main()
