"""Benchmark training: steps/s, samples/s and HR Mpx/s of the pre-training step (L1/L2 only) and of the
GAN step (WGAN-GP, the default), for a small and for the default network, with in-memory and
streaming patches; the first (tracing) step is timed apart from the steady state.

Usage: .venv/bin/python bench/bench_train.py [--quick] [--steps 8] [--rounds 3] [--default_steps 1]
       [--default 64 16] [--output BENCHMARKS.md] [--keep DIR]
Patches: `extract_patches.py` on the synthetic demo scene (`demo/scene.py`, int16, 4 bands), LR 32 px /
HR 128 px, batch 4 (train.py's defaults), no VGG loss (train.py without --vggfile). Everything runs in this
process so that ratios are comparable; the steady state of the small network is measured in
`--rounds` rounds, each running `--steps` steps in memory then streaming (fresh iterators), the best
round kept (the machine may be shared); the default network runs `--default_steps` steady steps per
mode. CPU time and the other processes' CPU use are recorded with each measure.
Writes the "train" section of BENCHMARKS.md (not with --quick, a smoke run: small network only,
fewer steps).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

LR_SIZE, BATCH, EPOCH_PATCHES = 32, 4, 10_000
SMALL, DEFAULT = (8, 2), (64, 16)  # (depth, residual blocks)
CORES = os.cpu_count() or 1
MODES = ("in memory", "streaming")
STEPS = {"pre-training": "pretrain_step", "GAN": "train_step"}


class Clock:
    """Wall time, this process's CPU time (all threads) and the CPU time of the rest of the machine
    (/proc/stat busy time, host steal included, minus this process's), between start and stop."""

    def __init__(self) -> None:
        self.wall = self.cpu = self.others = 0.0
        self._start = self._snapshot()

    @staticmethod
    def _snapshot() -> tuple[float, float, float]:
        busy = 0.0
        try:
            with open("/proc/stat") as f:
                user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
            busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError):
            pass
        times = os.times()
        return time.perf_counter(), times.user + times.system, busy

    def stop(self) -> Clock:
        wall, cpu, busy = self._snapshot()
        self.wall, self.cpu = wall - self._start[0], cpu - self._start[1]
        self.others = max(0.0, busy - self._start[2] - self.cpu)
        return self


@dataclasses.dataclass
class Steady:
    """Steady-state measure of one (network, step, data mode): best round."""

    seconds: float = float("inf")  # wall seconds per step (batch fetch + step + reading the losses)
    cpu: float = 0.0  # process CPU seconds per step (all threads)
    others: float = 0.0  # cores used by other processes meanwhile (average)
    wait: float = 0.0  # part of `seconds` spent waiting for the next batch


@dataclasses.dataclass
class Result:
    """Measures of one (network, step)."""

    network: tuple[int, int]
    step: str
    trace: Clock | None = None  # Python tracing (get_concrete_function)
    first_call: Clock | None = None  # first execution: graph optimisation + the step itself
    steady: dict[str, Steady] = dataclasses.field(default_factory=dict)


def loadavg() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def make_patches(folder: str, size_hr: int, step: int) -> tuple[str, str]:
    """Demo scene -> LR/HR patches images with extract_patches.py (a regular grid of `step` LR pixels)."""
    import extract_patches
    from demo import scene as demo_scene

    lr, hr = demo_scene.make_demo_scene(os.path.join(folder, "scene"), size_hr=size_hr, seed=0)
    out_lr, out_hr = os.path.join(folder, "lr_patches.tif"), os.path.join(folder, "hr_patches.tif")
    extract_patches.main(["--lr", lr, "--hr", hr, "--lr_patchsize", str(LR_SIZE), "--step", str(step),
                          "--out_lr", out_lr, "--out_hr", out_hr, "--quiet"])
    return out_lr, out_hr


def generator_mflop_per_px(network: tuple[int, int], nbands: int) -> float:
    """Forward FLOPs of the generator per HR output pixel (TensorFlow's profiler on its graph), in M."""
    import tensorflow as tf

    from network import Generator

    generator = Generator(nbands, network[1], network[0])
    graph = tf.function(generator).get_concrete_function(
        tf.TensorSpec([1, LR_SIZE, LR_SIZE, nbands], tf.float32)).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    level = tf.get_logger().level
    tf.get_logger().setLevel("ERROR")  # the TF1 profiler's deprecation warnings
    try:
        flops = tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops
    finally:
        tf.get_logger().setLevel(level)
    return flops / (4 * LR_SIZE) ** 2 / 1e6


def run_steps(step_fn: Callable, iterator, n: int) -> Steady:
    """n steps as train.py runs them (next batch, step, losses read back as floats)."""
    wait = 0.0
    clock = Clock()
    for _ in range(n):
        t0 = time.perf_counter()
        batch = next(iterator)
        wait += time.perf_counter() - t0
        values = {k: float(v) for k, v in step_fn(batch).items()}
    clock.stop()
    assert all(v == v for v in values.values()), values  # no NaN
    return Steady(clock.wall / n, clock.cpu / n, clock.others / clock.wall, wait / n)


def bench_network(network: tuple[int, int], datasets: dict, nbands: int, steps: int,
                  rounds: int) -> list[Result]:
    """First step and steady state of both steps of one network, in both data modes."""
    import tensorflow as tf

    from trainer import TrainConfig, Trainer

    tf.random.set_seed(0)
    trainer = Trainer(TrainConfig(depth=network[0], nresblocks=network[1]), nbands)
    results = []
    for step_name, attr in STEPS.items():
        step_fn = getattr(trainer, attr)
        result = Result(network, step_name)
        first = next(iter(datasets["in memory"]))
        clock = Clock()
        step_fn.get_concrete_function(first)
        result.trace = clock.stop()
        clock = Clock()
        {k: float(v) for k, v in step_fn(first).items()}
        result.first_call = clock.stop()
        print(f"depth {network[0]:2d}, {network[1]:2d} res blocks, {step_name:12s}: "
              f"trace {result.trace.wall:.1f} s, first call {result.first_call.wall:.1f} s "
              f"(CPU {result.first_call.cpu:.1f} s, others {result.first_call.others:.1f} CPU-s)", flush=True)
        for r in range(rounds):
            for mode in MODES:
                iterator = iter(datasets[mode])
                next(iterator)  # the pipeline is started (epoch start, not steady state)
                measure = run_steps(step_fn, iterator, steps)
                print(f"    round {r + 1} {mode:9s}: {measure.seconds:.3f} s/step (CPU {measure.cpu:.2f} s, "
                      f"others {measure.others:.2f} cores, batch wait {1000 * measure.wait:.1f} ms)",
                      flush=True)
                if measure.seconds < result.steady.get(mode, Steady()).seconds:
                    result.steady[mode] = measure
        results.append(result)
    return results


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def reflow(markdown: str, width: int = 104) -> str:
    """Re-wrap the paragraphs and bullets of `markdown` (tables and headings are kept as they are)."""
    out = []
    for block in markdown.strip().split("\n\n"):
        lines = block.splitlines()
        if lines[0].startswith(("|", "#")):
            out.append(block)
            continue
        items: list[list[str]] = []
        for line in lines:
            if line.startswith("- ") or not items:
                items.append([line.strip()])
            else:
                items[-1].append(line.strip())
        out.append("\n".join(
            textwrap.fill(" ".join(words), width, subsequent_indent="  " if words[0].startswith("- ") else "",
                          break_long_words=False, break_on_hyphens=False) for words in items))
    return "\n\n".join(out)


def tables(results: list[Result], hr_px: int) -> tuple[str, str]:
    """Markdown: the throughput table and the first-step table."""
    rows = []
    for r in results:
        for mode in MODES:
            s = r.steady[mode]
            rows.append(
                f"| {r.network[0]} / {r.network[1]} | {r.step} | {mode} | {s.seconds:.3f} "
                f"| {1 / s.seconds:.3f} | {BATCH / s.seconds:.2f} | {BATCH * hr_px / s.seconds / 1e6:.3f} "
                f"| {duration(EPOCH_PATCHES // BATCH * s.seconds)} | {s.cpu:.2f} | {s.others:.2f} "
                f"| {1000 * s.wait:.1f} |")
    throughput = ("| depth / res blocks | step | patches | s/step | steps/s | samples/s | HR Mpx/s "
                  "| epoch of 10,000 patches | CPU s/step | others (cores) | batch wait (ms/step) |\n"
                  "|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    rows = []
    for r in results:
        steady = r.steady["in memory"]
        wall = r.trace.wall + r.first_call.wall
        cpu = r.trace.cpu + r.first_call.cpu
        others = (r.trace.others + r.first_call.others) / wall
        rows.append(f"| {r.network[0]} / {r.network[1]} | {r.step} | {r.trace.wall:.1f} "
                    f"| {r.first_call.wall:.1f} | {wall:.1f} | {steady.seconds:.2f} "
                    f"| {wall - steady.seconds:.1f} | {cpu - steady.cpu:.1f} | {others:.2f} |")
    first = ("| depth / res blocks | step | trace (s) | first call (s) | first step (s) | steady step (s) "
             "| overhead, wall (s) | overhead, CPU (s) | others (cores) |\n"
             "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    return throughput, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="steps per round, small network")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (in memory, streaming), small network")
    parser.add_argument("--default_steps", type=int, default=1, help="steady steps per mode, default network")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: small network only, 1 round of 3 steps; BENCHMARKS.md not written")
    parser.add_argument("--default", type=int, nargs=2, default=list(DEFAULT), metavar=("DEPTH", "NRES"),
                        help="the large network (default: train.py's, %(default)s)")
    parser.add_argument("--output", help="the markdown file written (default: BENCHMARKS.md)")
    parser.add_argument("--keep", help="folder for the scene and patches (default: a temporary one)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds = 3, 1
    big = tuple(args.default)
    run_clock = Clock()
    load_start = loadavg()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from report import BENCHMARKS, machine, write_section

    args.output = args.output or BENCHMARKS

    from datasets import PatchesDataset
    from logs import setup_logging

    setup_logging(False)
    # as train.py: Grappler's remapper fails on the LeakyRelu gradients (and is not faster)
    tf.config.optimizer.set_experimental_options({"remapping": False})
    threads = (tf.config.threading.get_intra_op_parallelism_threads(),
               tf.config.threading.get_inter_op_parallelism_threads())
    with tempfile.TemporaryDirectory(dir=args.keep) as folder:
        t0 = time.perf_counter()
        lr, hr = make_patches(folder, size_hr=1024, step=16)
        patches_seconds = time.perf_counter() - t0
        data = {mode: PatchesDataset([lr], [hr], streaming=mode == "streaming") for mode in MODES}
        npatches, nbands = data["in memory"].n_patches, data["in memory"].nbands
        datasets = {mode: d.tf_dataset(BATCH, seed=0).repeat() for mode, d in data.items()}
        hr_px = data["in memory"].hr_patch_size ** 2
        print(f"{npatches} patch pairs ({LR_SIZE} -> {4 * LR_SIZE} px, {nbands} bands, "
              f"{data['in memory'].dtype}) in {patches_seconds:.1f} s; load average {load_start}", flush=True)
        results = bench_network(SMALL, datasets, nbands, args.steps, args.rounds)
        if not args.quick:
            results += bench_network(big, datasets, nbands, args.default_steps, 1)
    run_clock.stop()
    load_end = loadavg()
    throughput, first = tables(results, hr_px)
    print(f"\n{throughput}\n\n{first}\n\nload average at start {load_start}, at end {load_end}; "
          f"{run_clock.wall:.0f} s in all, other processes used {run_clock.others / run_clock.wall:.2f} "
          "cores on average", flush=True)
    if args.quick:
        return

    small = {r.step: r for r in results if r.network == SMALL}
    default = {r.step: r for r in results if r.network == big}
    mflop = {n: generator_mflop_per_px(n, nbands) for n in (SMALL, big)}
    pre = {n: rs["pre-training"].steady["in memory"] for n, rs in ((SMALL, small), (big, default))}
    pre_gflop = {n: 3 * mflop[n] * BATCH * hr_px / 1e3 for n in (SMALL, big)}  # GFLOP per step

    def ratio(r: Result) -> str:
        return f"{100 * (r.steady['streaming'].seconds / r.steady['in memory'].seconds - 1):+.0f}%"

    def gan_cost(rs: dict[str, Result], what: str) -> str:
        gan, pretrain = rs["GAN"].steady["in memory"], rs["pre-training"].steady["in memory"]
        return f"{getattr(gan, what) / getattr(pretrain, what):.1f}"

    def epoch(rs: dict[str, Result], step: str, clock: str = "wall") -> str:
        steady = rs[step].steady["in memory"]
        seconds = steady.seconds if clock == "wall" else steady.cpu / CORES
        return duration(EPOCH_PATCHES // BATCH * seconds)

    write_section("train", reflow(f"""
## Training steps (`bench/bench_train.py`)

{machine()}, CPU only, TensorFlow {tf.__version__} (intra/inter-op threads {threads[0]}/{threads[1]},
0 = all cores). {npatches} patch pairs made by `extract_patches.py` (`--lr_patchsize {LR_SIZE} --step 16`)
from a 1024 x 1024 HR synthetic demo scene (`demo/scene.py`, int16, 4 bands): LR {LR_SIZE} x
{LR_SIZE}, HR {4 * LR_SIZE} x {4 * LR_SIZE}, batch {BATCH}; `TrainConfig` defaults (L2 weight 1000,
WGAN-GP, Adam), no VGG loss (train.py without `--vggfile`), Grappler remapper off as in train.py. A step
is timed as train.py runs it: next batch, `pretrain_step` / `train_step` (tf.functions), losses read back.
Small network (depth {SMALL[0]}, {SMALL[1]} residual blocks): best of {args.rounds} rounds of {args.steps}
steps, each round running in memory then streaming with fresh iterators. Default network (depth
{big[0]}, {big[1]} residual blocks): {args.default_steps} steady step(s) per mode, hence noisier. All in one
process, {run_clock.wall:.0f} s in all.

The machine's {CORES} cores may be shared: load average (1, 5, 15 min) {load_start} at the start,
{load_end} at the end (it counts this benchmark too); other processes used
{run_clock.others / run_clock.wall:.2f} cores on average during the run. "others (cores)" is that
figure during each measure (/proc/stat busy time minus this process's CPU time): where it nears 1,
the wall times are up to twice the unshared ones, while "CPU s/step" (this process, all threads)
barely moves. "HR Mpx/s": HR pixels of training patches per second; "batch wait": time spent in
`next()` on the dataset iterator; epochs are estimated from the steady step times.

{throughput}

First step of each tf.function, apart from the steady state (in memory): "trace" is the Python
tracing (`get_concrete_function`), "first call" the first execution (graph optimisation, then the
step itself); the overhead (first step - steady step, in wall and in CPU time) is paid once per run
and phase.

{first}

- The GAN step (WGAN-GP: discriminator on real and fake, gradient penalty with its double
  backpropagation, two Adam updates) costs {gan_cost(small, 'seconds')} x a pre-training step in wall
  time ({gan_cost(small, 'cpu')} x in CPU time) for the small network, {gan_cost(default, 'seconds')} x
  ({gan_cost(default, 'cpu')} x) for the default one.
- Generator forward: {mflop[SMALL]:.2f} MFLOP per HR pixel for the small network, {mflop[big]:.1f} for the
  default one (TensorFlow's profiler; a multiply-add counts 2). Taking a pre-training step as 3 x the
  forward (a conv's backward pass costs twice its forward), pre-training runs at
  {pre_gflop[SMALL] / pre[SMALL].seconds:.0f} GFLOP/s, {pre_gflop[SMALL] / pre[SMALL].cpu:.0f} GFLOP per
  CPU-second (small network) and {pre_gflop[big] / pre[big].seconds:.0f} GFLOP/s,
  {pre_gflop[big] / pre[big].cpu:.0f} GFLOP per CPU-second (default network).
- Streaming vs in memory, steady step time: small network {ratio(small['pre-training'])} (pre-training),
  {ratio(small['GAN'])} (GAN); default network {ratio(default['pre-training'])} /
  {ratio(default['GAN'])} (one step each). Streaming's batch wait is at most
  {max(1000 * r.steady['streaming'].wait for r in results):.1f} ms per step, under
  {max(100 * r.steady['streaming'].wait / r.steady['streaming'].seconds for r in results):.1f}% of the
  step: reading (prefetched during the step, see also the datasets section) is not what differs; the
  rest is run-to-run noise (the other processes' load).
- Default network on this CPU: one epoch of 10,000 patches took {epoch(default, 'pre-training')} of
  pre-training or {epoch(default, 'GAN')} of GAN training at the measured speed (others using
  {default['pre-training'].steady['in memory'].others:.2f} / {default['GAN'].steady['in memory'].others:.2f}
  cores); even with the {CORES} cores to itself (CPU s/step / {CORES}, a lower bound) it would take
  {epoch(default, 'pre-training', 'cpu')} / {epoch(default, 'GAN', 'cpu')}, and train.py's default is 120
  epochs: train it on a GPU. The CPU suits small networks and tests (small network:
  {epoch(small, 'pre-training')} / {epoch(small, 'GAN')} per epoch).

Re-run: `.venv/bin/python bench/bench_train.py` (`--quick`: a smoke run of the small network, nothing
written).
"""), args.output)
    print(f"wrote the train section of {args.output}")

if __name__ == "__main__":
    main()
