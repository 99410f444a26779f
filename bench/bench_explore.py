"""Why the original generator learns so little on real imagery: a bare training loop (L1 pre-training,
no discriminator) over generator variants, some of which change network internals that train.py does not
expose (pixel norm, equalized learning rate, loss scales, the HR pyramid), on network.py's layers.

Data: a real image (--hr, e.g. a Landsat 8 scene), LR by 4 x 4 averaging; random 16-px LR patches
(batch 16, flips/quarter-turns) from its left 3/4; every `--eval_every` steps the whole right quarter
(never trained on) is super-resolved at once (borders mirrored) and compared with bicubic upsampling of
the same LR (tf.image.resize, Keys a = -0.5). Results are step-based (the gain after N steps), so they do
not depend on the machine's load.

    .venv/bin/python bench/bench_explore.py --hr IMAGE VARIANT [VARIANT ...]   # names: --list

Prints one JSON line per variant (the gain curve); BENCHMARKS.md's "explore" section holds a run of all.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, replace

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import network  # noqa: E402
from losses import real_pyramid  # noqa: E402
from raster import open_raster, read_array  # noqa: E402
from trainer import Adam  # noqa: E402

MARGIN = 24  # LR pixels mirrored around the test part


@dataclass(frozen=True)
class Variant:
    """A generator and its training: `generator` is "original" (network.Generator, upsampling
    `upsampling`) or "plain" (a residual CNN at LR resolution without normalisation: 3x3 conv, blocks of
    conv-ReLU-conv, x4 sub-pixel head, the bicubic skip)."""

    generator: str = "original"
    upsampling: str = "transposed"
    depth: int = 8
    nresblocks: int = 2
    pixel_norm: bool = True
    equalized: bool = True
    loss_scales: tuple[int, ...] = (1, 2, 4)
    aligned_pyramid: bool = False  # the x2 target as a 2x2 mean instead of the original's blur + stride 2
    center: bool = False  # subtract the training LR mean per band
    scale: float = 1e-4  # raw values times this (after centring)
    adam_lr: float = 1e-3
    cosine: bool = False
    steps: int = 1000


VARIANTS = {
    "original d8": Variant(),
    "original d8, no pixel norm": Variant(pixel_norm=False),
    "original d8, x1 loss only": Variant(loss_scales=(1,)),
    "original d8, centred": Variant(center=True, scale=2e-3),
    "pixelshuffle d48/6": Variant(upsampling="pixelshuffle", depth=48, nresblocks=6, steps=3000),
    "pixelshuffle d48/6, no pixel norm": Variant(upsampling="pixelshuffle", depth=48, nresblocks=6,
                                                 pixel_norm=False, steps=3000),
    "pixelshuffle d48/6, centred": Variant(upsampling="pixelshuffle", depth=48, nresblocks=6, center=True,
                                           scale=2e-3, steps=3000),
    "plain d48/6": Variant(generator="plain", depth=48, nresblocks=6, pixel_norm=False, loss_scales=(1,),
                           steps=3000),
    "plain d48/6, no equalized lr": Variant(generator="plain", depth=48, nresblocks=6, pixel_norm=False,
                                            equalized=False, loss_scales=(1,), steps=3000),
    "plain d48/6, cosine": Variant(generator="plain", depth=48, nresblocks=6, pixel_norm=False,
                                   loss_scales=(1,), cosine=True, steps=3000),
}


class PlainGenerator(tf.Module):
    """A residual CNN at LR resolution without normalisation; zero-initialised x4 sub-pixel output."""

    def __init__(self, nbands: int, depth: int, nresblocks: int):
        super().__init__()
        self.first = network.Conv2D("plain/first", 3, nbands, depth)
        self.blocks = [(network.Conv2D(f"plain/b{i}a", 3, depth, depth),
                        network.Conv2D(f"plain/b{i}b", 3, depth, depth)) for i in range(nresblocks)]
        self.last = network.Conv2D("plain/last", 3, depth, depth)
        self.output = network.Conv2D("plain/output", 3, depth, 16 * nbands, zero_init=True)

    def __call__(self, lr: tf.Tensor) -> dict[int, tf.Tensor]:
        skip = net = self.first(lr)
        for conv1, conv2 in self.blocks:
            net = net + conv2(tf.nn.relu(conv1(net)))
        out = tf.nn.depth_to_space(self.output(self.last(net) + skip), 4)
        return {1: out + network.upsample_bicubic(lr, 4)}


def patch_network_internals(variant: Variant) -> None:
    """Switch pixel norm and equalized learning rate off in network.py, as the variant says (for the
    rest of the process: main runs each variant in a process of its own)."""
    if not variant.pixel_norm:
        network.pixel_norm = lambda x: x
    if not variant.equalized:  # He-initialised weights used as they are
        init = network.Conv2D.__init__

        def he_init(self, scope, ksize, c_in, c_out, use_bias=True, zero_init=False):
            init(self, scope, ksize, c_in, c_out, use_bias, zero_init)
            self.weight.assign(self.weight * self.runtime_scale)
            self.runtime_scale = 1.0

        network.Conv2D.__init__ = he_init


def explore(image: str, variant: Variant, eval_every: int, seed: int = 0) -> list[tuple[int, float]]:
    """Train one variant; [(step, PSNR gain over bicubic on the test part)]."""
    patch_network_internals(variant)
    tf.random.set_seed(seed)
    rng = np.random.default_rng(seed)
    hr = read_array(open_raster(image)).astype(np.float32)
    rows, cols, nbands = hr.shape[0] // 16 * 16, hr.shape[1] // 16 * 16, hr.shape[2]
    hr = hr[:rows, :cols]
    lr = hr.reshape(rows // 4, 4, cols // 4, 4, nbands).mean(axis=(1, 3))
    split = cols * 3 // 16  # LR column where the test part starts
    offset = np.zeros(nbands, np.float32)
    if variant.center:
        offset = lr[:, :split].reshape(-1, nbands).mean(axis=0)
    if variant.generator == "plain":
        generator = PlainGenerator(nbands, variant.depth, variant.nresblocks)
    else:
        generator = network.Generator(nbands, variant.nresblocks, variant.depth, "bicubic",
                                      upsampling=variant.upsampling)
    optimizer = Adam(generator.trainable_variables, variant.adam_lr, 0.9)

    @tf.function
    def step(lr_batch: tf.Tensor, hr_batch: tf.Tensor, rate: tf.Tensor) -> None:
        optimizer.learning_rate.assign(rate)
        real = real_pyramid(variant.scale * hr_batch)
        if variant.aligned_pyramid:
            real[2] = tf.nn.avg_pool2d(variant.scale * hr_batch, 2, 2, "VALID")
        with tf.GradientTape() as tape:
            fake = generator(variant.scale * lr_batch)
            loss = tf.add_n([tf.reduce_mean(tf.abs(fake[f] - real[f]))
                             for f in variant.loss_scales if f in fake])
        grads = tape.gradient(loss, optimizer.params)
        optimizer.apply([tf.zeros_like(v) if g is None else g
                         for g, v in zip(grads, optimizer.params, strict=True)])

    test_lr = np.pad(lr[:, split:] - offset, ((MARGIN, MARGIN), (MARGIN, MARGIN), (0, 0)), "symmetric")[None]
    test_hr, m = hr[:, 4 * split:], 4 * MARGIN

    def gain() -> float:
        sr = generator(tf.constant(variant.scale * test_lr))[1].numpy()[0, m:-m, m:-m]
        sr = sr / variant.scale + offset
        bicubic = network.upsample_bicubic(tf.constant(test_lr), 4).numpy()[0, m:-m, m:-m] + offset
        return 10 * math.log10(np.mean((bicubic - test_hr) ** 2) / np.mean((sr - test_hr) ** 2))

    curve = [(0, gain())]
    for i in range(1, variant.steps + 1):
        ys = rng.integers(0, lr.shape[0] - 16 + 1, 16)
        xs = rng.integers(0, split - 16 + 1, 16)
        lr_batch = np.stack([lr[y:y + 16, x:x + 16] for y, x in zip(ys, xs, strict=True)]) - offset
        hr_batch = np.stack([hr[4 * y:4 * y + 64, 4 * x:4 * x + 64]
                             for y, x in zip(ys, xs, strict=True)]) - offset
        turns, flip = rng.integers(0, 4), rng.integers(0, 2)
        lr_batch, hr_batch = (np.rot90(b, turns, axes=(1, 2)) for b in (lr_batch, hr_batch))
        if flip:
            lr_batch, hr_batch = lr_batch[:, :, ::-1], hr_batch[:, :, ::-1]
        decay = 0.5 * (1 + math.cos(math.pi * (i - 1) / variant.steps)) if variant.cosine else 1.0
        rate = variant.adam_lr * decay
        step(tf.constant(np.ascontiguousarray(lr_batch)), tf.constant(np.ascontiguousarray(hr_batch)),
             tf.constant(rate, tf.float32))
        if i % eval_every == 0 or i == variant.steps:
            curve.append((i, gain()))
    return curve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variants", nargs="*", help="variant names (quoted)")
    p.add_argument("--list", action="store_true", help="list the variants")
    p.add_argument("--hr", help="the real image, required to run variants (BENCHMARKS.md: "
                                "landsat8_rgb_30m.tif)")
    p.add_argument("--eval_every", type=int, default=500)
    p.add_argument("--steps", type=int, help="override the variants' step counts")
    args = p.parse_args()
    if args.list or not args.variants:
        print("\n".join(VARIANTS))
        return
    if not args.hr:
        p.error("--hr IMAGE is required to run variants")
    if len(args.variants) > 1:  # one process per variant (network.py's internals are patched)
        for name in args.variants:
            subprocess.run([sys.executable, __file__, name, "--hr", args.hr, "--eval_every",
                            str(args.eval_every), *(["--steps", str(args.steps)] if args.steps else [])],
                           check=True)
        return
    name = args.variants[0]
    variant = VARIANTS[name] if args.steps is None else replace(VARIANTS[name], steps=args.steps)
    curve = explore(args.hr, variant, args.eval_every)
    print(json.dumps({"variant": name, "gain_db": [(s, round(g, 3)) for s, g in curve]}), flush=True)


if __name__ == "__main__":
    main()
