"""Parity oracle: run the original SR4RS networks (TF1 graph code) and dump what they compute to .npz.

Run by tests/test_parity.py in a subprocess, as
`PYTHONPATH=<shared>/sr4rs-original/code python tests/original_oracle.py OUT.npz`: importing the original
`network` module disables eager execution for the whole process, so it must never be imported by pytest.

Configuration: 4 bands, depth 8, 2 residual blocks, a batch of 4 LR patches of 8x8 pixels (HR 32x32).
The .npz holds, with `/` separated keys:

- `input/*`: the inputs (drawn here from a fixed numpy seed), so that the test uses the very same values;
- `var/<name>`: every trainable variable, by its original name without `:0`. Weights come from the
  original initializer; biases are overwritten with non-zero values so that their use is compared too;
- `gen/<f>`, `real/<f>`: generator outputs and the real HR image downscaled by the original for f = 1, 2, 4;
- `dis/*`: discriminator scores on generated images, real images, real images of a batch of 8 (two
  minibatch-stddev groups) and of a batch of 2 (group size 2);
- `loss/*`, `grad_l1/<name>`, `grad_dis/<name>`, `grad_gan/<name>`, `grad_gp/<name>`: an L1 loss and the
  gradients listed in test_parity.py;
- `batch6/*`: what the original does with a batch of 6 (error messages, or outputs when it runs).
"""
from __future__ import annotations

import os
import sys

import numpy as np

NCHANNELS, DEPTH, NRESBLOCKS, BATCH, LR_SIZE = 4, 8, 2, 4, 8
HR_SIZE = 4 * LR_SIZE
FACTORS = (1, 2, 4)
SEED = 20240601


def make_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    return {
        "input/lr": rng.normal(size=(BATCH, LR_SIZE, LR_SIZE, NCHANNELS)).astype(np.float32),
        "input/hr": rng.normal(size=(BATCH, HR_SIZE, HR_SIZE, NCHANNELS)).astype(np.float32),
        "input/hr8": rng.normal(size=(8, HR_SIZE, HR_SIZE, NCHANNELS)).astype(np.float32),
        "input/hr6": rng.normal(size=(6, HR_SIZE, HR_SIZE, NCHANNELS)).astype(np.float32),
        "input/alpha": rng.uniform(size=(BATCH, 1, 1, 1)).astype(np.float32),
        "input/x6": rng.normal(size=(6, 3, 5, 7)).astype(np.float32),
        "input/x8": rng.normal(size=(8, 3, 5, 7)).astype(np.float32),
        "bias_values_seed": np.array(SEED + 1),
    }


def short(name: str) -> str:
    return name.split(":")[0]


def main(out_path: str) -> None:
    import network as original_network  # noqa: I001  (the original, found through PYTHONPATH)
    import ops as original_ops
    import tensorflow.compat.v1 as tf

    code_dir = os.path.dirname(os.path.abspath(original_network.__file__))
    if not os.path.isfile(os.path.join(code_dir, "ops.py")) or "sr4rs-original" not in code_dir:
        raise SystemExit(f"imported the wrong `network` module: {original_network.__file__}")

    tf.set_random_seed(SEED)
    data = make_inputs()

    def fed(key):
        """A constant seen through a placeholder of unknown batch and size, as in the original train.py."""
        value = data[key]
        return tf.placeholder_with_default(value, shape=(None, None, None, value.shape[-1]))

    lr = fed("input/lr")
    hr = fed("input/hr")

    def gen(x):
        return original_network.generator(x, "gen", NCHANNELS, NRESBLOCKS, DEPTH)

    def dis(images):
        return original_network.discriminator(images, "dis", DEPTH)

    def real_of(images):
        return {f: original_ops.downscale2d(images, factor=f) for f in FACTORS}

    fake = gen(lr)
    real = real_of(hr)
    d_fake = dis(fake)
    d_real = dis(real)
    d_real8 = dis(real_of(fed("input/hr8")))
    d_real2 = dis({f: real[f][:2] for f in FACTORS})

    gen_vars = tf.trainable_variables("gen")
    dis_vars = tf.trainable_variables("dis")

    l1 = tf.add_n([tf.reduce_mean(tf.abs(fake[f] - real[f])) for f in FACTORS])
    dis_sum = tf.reduce_sum(d_fake) + tf.reduce_sum(d_real)
    gan = tf.reduce_sum(d_fake)
    # Second order (what WGAN-GP needs): gradient of a penalty on input gradients.
    alpha = tf.constant(data["input/alpha"])
    inter = {f: real[f] + alpha * (fake[f] - real[f]) for f in FACTORS}
    d_inter = tf.reduce_sum(dis(inter))
    input_grads = tf.gradients(d_inter, [inter[f] for f in FACTORS])
    norms = [tf.sqrt(tf.reduce_sum(tf.square(g), axis=[1, 2, 3])) for g in input_grads]
    gp = tf.add_n([tf.reduce_mean(tf.square(n - 1.0)) for n in norms]) / len(FACTORS)

    grads = {
        "grad_l1": (tf.gradients(l1, gen_vars), gen_vars),
        "grad_dis": (tf.gradients(dis_sum, dis_vars), dis_vars),
        "grad_gan": (tf.gradients(gan, gen_vars), gen_vars),
        "grad_gp": (tf.gradients(gp, dis_vars), dis_vars),
    }

    # Batch of 6 (not a multiple of 4): the layer alone, the layer forced to groups of 3, and the whole
    # discriminator. Strided grouping is also dumped for a batch of 8 (two groups of 4).
    # With a batch of unknown size (the original's training graph) a failure shows at run time; with a
    # static batch of 6, already when the graph is built.
    x6 = fed("input/x6")
    mbstd6 = original_ops.minibatch_stddev_layer(x6)
    mbstd6_g3 = original_ops.minibatch_stddev_layer(x6, group_size=3)
    mbstd8 = original_ops.minibatch_stddev_layer(fed("input/x8"))
    d_real6 = dis(real_of(fed("input/hr6")))
    try:
        original_ops.minibatch_stddev_layer(tf.constant(data["input/x6"]))
        static_error = ""
    except ValueError as err:
        static_error = f"ValueError: {str(err).splitlines()[0]}"

    rng = np.random.default_rng(int(data["bias_values_seed"]))
    set_biases = tf.group([var.assign(rng.normal(scale=0.1, size=var.shape.as_list()).astype(np.float32))
                           for var in gen_vars + dis_vars if short(var.name).endswith("/bias")])
    fetch = {
        **{f"gen/{f}": fake[f] for f in FACTORS},
        **{f"real/{f}": real[f] for f in FACTORS},
        "dis/fake": d_fake, "dis/real": d_real, "dis/real8": d_real8, "dis/real2": d_real2,
        "loss/l1": l1, "loss/gp": gp,
        "mbstd/g3_on_6": mbstd6_g3, "mbstd/batch8": mbstd8,
        **{f"var/{short(var.name)}": var for var in gen_vars + dis_vars},
    }
    zeros = {}  # a variable that the differentiated value does not depend on gets no gradient (None)
    for key, (tensors, variables) in grads.items():
        for var, tensor in zip(variables, tensors, strict=True):
            if tensor is None:
                zeros[f"{key}/{short(var.name)}"] = np.zeros(var.shape.as_list(), np.float32)
            else:
                fetch[f"{key}/{short(var.name)}"] = tensor

    out = dict(data, **zeros)
    out["batch6/static_mbstd_error"] = np.array(static_error)
    # Grappler's graph rewrites only cost time here (seconds on this graph): run the graph as built.
    config = tf.ConfigProto()
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    with tf.Session(config=config) as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(set_biases)
        out.update(sess.run(fetch))
        for key, tensor in (("batch6/mbstd", mbstd6), ("batch6/dis", d_real6)):
            try:
                out[f"{key}_output"] = sess.run(tensor)
                out[f"{key}_error"] = np.array("")
            except tf.errors.OpError as err:
                out[f"{key}_error"] = np.array(f"{type(err).__name__}: {err.message}")
    np.savez(out_path, **out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: original_oracle.py OUT.npz")
    main(sys.argv[1])
