"""The original SR4RS generator's forward pass (TF1 graph code), timed on tiles of a given LR window size:
bench_roofline.py runs it in a subprocess, as

    PYTHONPATH=<shared>/sr4rs-original/code python bench/original_forward.py WINDOW NBANDS DEPTH NRESBLOCKS

and reads one JSON line: {"seconds_per_tile": best of the rounds}. Importing the original `network` module
disables eager execution for the whole process, hence the subprocess. Only its public `generator`
function is called; its full-resolution output (factor 1) is fetched, as its SavedModel's output_<pad>.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np

ROUNDS, TILES = 3, 2


def main(window: int, nbands: int, depth: int, nresblocks: int) -> None:
    import tensorflow.compat.v1 as tf

    import network as original_network  # the original, found through PYTHONPATH

    lr = tf.placeholder(tf.float32, [1, window, window, nbands])
    hr = original_network.generator(lr, "gen", nbands, nresblocks, depth)[1]
    tiles = np.random.default_rng(0).uniform(0, 1, (TILES, 1, window, window, nbands)).astype(np.float32)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(hr, {lr: tiles[0]})  # warm-up
        best = float("inf")
        for _ in range(ROUNDS):
            start = time.perf_counter()
            for tile in tiles:
                sess.run(hr, {lr: tile})
            best = min(best, (time.perf_counter() - start) / TILES)
    print(json.dumps({"seconds_per_tile": best}))


if __name__ == "__main__":
    main(*map(int, sys.argv[1:5]))
