"""Training on several machines: TF_CONFIG read (and refused in one line), and two worker processes on
localhost (MultiWorkerMirroredStrategy) training the same model as one process with the same global batch,
only the chief writing the outputs."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import ROOT, write_raster

import train
import training
from checkpoints import Checkpoints
from cli import run_cli
from errors import SR4RSError
from folders import read_metadata
from train_options import Cluster, read_tf_config
from trainer import TrainConfig, Trainer

PATCHES, SIZE, BANDS = 16, 8, 3
DEPTH, RESBLOCKS = 8, 1


@pytest.fixture(scope="module")
def patches(tmp_path_factory):
    """16 random int16 patch pairs (LR 8 px = the 4 x 4 means of HR 32 px), 3 bands."""
    folder = tmp_path_factory.mktemp("multiworker")
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 4000, (PATCHES, 4 * SIZE, 4 * SIZE, BANDS)).astype(np.int16)
    lr = hr.reshape(PATCHES, SIZE, 4, SIZE, 4, BANDS).mean(axis=(2, 4)).astype(np.int16)
    return {"lr": write_raster(str(folder / "lr.tif"), lr.reshape(-1, SIZE, BANDS)),
            "hr": write_raster(str(folder / "hr.tif"), hr.reshape(-1, 4 * SIZE, BANDS))}


def tf_config(addresses, index, job="worker"):
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": job, "index": index}})


@pytest.mark.parametrize("text, expected", [
    (None, None),
    ("  ", None),
    (tf_config(["a:1"], 0), None),  # a cluster of one: one machine
    (tf_config(["a:1", "b:2"], 0), Cluster(workers=2, rank=0, task="worker 0")),
    (tf_config(["a:1", "b:2", "c:3"], 2), Cluster(workers=3, rank=2, task="worker 2")),
    ('{"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
     Cluster(workers=2, rank=0, task="chief 0")),
    ('{"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}',
     Cluster(workers=2, rank=1, task="worker 0")),
])
def test_tf_config_names_the_cluster_and_this_machine(text, expected, monkeypatch):
    if text is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", text)
    cluster = read_tf_config()
    assert cluster == expected
    if cluster is not None:
        assert cluster.is_chief == (cluster.rank == 0)


MALFORMED = [
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}',
     "TF_CONFIG is not valid JSON: Expecting ',' delimiter"),
    ('["a:1", "b:2"]', "TF_CONFIG is not a JSON object"),
    ('{"cluster": {"worker": "a:1,b:2"}}', 'TF_CONFIG has a "cluster" that does not map job names to lists'),
    ('{"cluster": {"worker": ["a:1"], "ps": ["p:1"]}}', "TF_CONFIG has the job(s) ps: SR4RS trains with "
                                                        "MultiWorkerMirroredStrategy"),
    ('{"cluster": {"chief": ["a:1", "b:2"]}}', "TF_CONFIG names 2 chiefs: there is at most one"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}}', 'TF_CONFIG has no "task"'),
    (tf_config(["a:1", "b:2"], 2), 'TF_CONFIG has the task {"type": "worker", "index": 2}, which is not one '
                                   "of its cluster's (0 chief, 2 worker(s), indices from 0)"),
    (tf_config(["a:1", "b:2"], 0, job="evaluator"), 'the task {"type": "evaluator", "index": 0}'),
]


@pytest.mark.parametrize("text, message", MALFORMED)
def test_a_malformed_tf_config_is_refused_in_one_line(patches, tmp_path, capsys, monkeypatch, text, message):
    monkeypatch.setenv("TF_CONFIG", text)
    args = ["--lr_patches", patches["lr"], "--hr_patches", patches["hr"], "--save_ckpt", f"{tmp_path}/ck/",
            "--depth", str(DEPTH), "--nresblocks", str(RESBLOCKS), "--epochs", "1"]
    assert run_cli(train.main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: TF_CONFIG ") and message in err[-1], err[-1]
    assert "(expected e.g. {" in err[-1]  # with an example
    assert os.listdir(tmp_path) == []


def test_a_malformed_tf_config_is_answered_before_tensorflow_loads(patches, tmp_path):
    probe = ("import sys, cli, train\ncode = cli.run_cli(train.main, sys.argv[1:])\n"
             "print(code, 'tensorflow' in sys.modules)")
    args = ["--lr_patches", patches["lr"], "--hr_patches", patches["hr"], "--save_ckpt", f"{tmp_path}/ck/"]
    env = {**os.environ, "TF_CONFIG": MALFORMED[0][0]}
    done = subprocess.run([sys.executable, "-c", probe, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "2 False", done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: TF_CONFIG is not valid JSON")


def test_a_cluster_after_tensorflow_started_is_refused_in_one_line(monkeypatch):
    tf.constant(0.0) + 1.0  # TensorFlow has run in this process (MultiWorkerMirroredStrategy must come first)
    monkeypatch.setenv("TF_CONFIG", tf_config(["localhost:1", "localhost:2"], 0))
    with pytest.raises(SR4RSError, match="TF_CONFIG names 2 workers, but TensorFlow already ran in this "
                                         "process"):
        training.make_strategy()


def free_ports(count):
    """Ports free on localhost (held together while chosen, so that they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def generator_weights(checkpoint):
    """The generator variables of a checkpoint, restored into a trainer of the test's size."""
    trainer = Trainer(TrainConfig(depth=DEPTH, nresblocks=RESBLOCKS), BANDS)
    Checkpoints(trainer, "unused/", "run").restore(checkpoint)
    return [v.numpy() for v in trainer.generator.trainable_variables]


def run_folder(root):
    """The one run folder in a checkpoints or logs folder."""
    runs = os.listdir(root)
    assert len(runs) == 1, runs  # the chief's; a second worker writes none
    return os.path.join(root, runs[0])


# The same run on two workers and on one process, global batch 4. Pre-training then one GAN epoch with
# --ganweight 0: the generator's gradient is then that of the content losses only, which split exactly
# over replicas (sum of the per-replica means / 2 = the mean of the global batch). With a GAN weight the
# generators would differ by design (docs/DESIGN.md §5): minibatch-stddev groups and WGAN-GP alphas are
# per replica; the discriminators differ here for that reason. The data order is the same: --seed fixes
# the shuffling, and each worker takes its half of every global batch (DATA sharding after splitting the
# batches per replica), so the two replicas see exactly the single process's batches.
RUN = ["--depth", str(DEPTH), "--nresblocks", str(RESBLOCKS), "--batchsize", "4", "--pretrain",
       "--pretrain_epochs", "2", "--epochs", "1", "--ganweight", "0", "--valid_split", "0.25", "--seed", "3"]
RTOL, ATOL = 1e-4, 1e-5


@pytest.mark.slow
def test_two_workers_train_as_one_process_with_the_same_global_batch(patches, tmp_path):
    out, ref = tmp_path / "workers", tmp_path / "single"
    args = ["--lr_patches", patches["lr"], "--hr_patches", patches["hr"], "--save_ckpt", f"{out}/ck/",
            "--logdir", str(out / "logs"), "--savedmodel", str(out / "model"), *RUN]
    addresses = [f"localhost:{port}" for port in free_ports(2)]
    workers, logs = [], [tmp_path / f"worker{index}.log" for index in range(2)]
    for index, log in enumerate(logs):
        scratch = tmp_path / f"tmp{index}"  # the worker's TMPDIR: its scratch folder goes there
        scratch.mkdir()
        env = {**os.environ, "TF_CONFIG": tf_config(addresses, index), "TMPDIR": str(scratch),
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        with open(log, "w") as output:  # the child keeps its own copy of the file descriptor
            workers.append(subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, env=env,
                                            stdout=output, stderr=subprocess.STDOUT))
    try:
        # meanwhile, the same run in this process
        options = train.options_from_args(train.build_parser().parse_args(
            ["--lr_patches", patches["lr"], "--hr_patches", patches["hr"], "--save_ckpt", f"{ref}/ck/",
             "--savedmodel", str(ref / "model"), *RUN]))
        single = train.train(options)
        codes = [worker.wait(timeout=240) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n".join(text[-3000:] for text in texts)
    assert "Worker 0 of 2 (worker 0 in TF_CONFIG; MultiWorkerMirroredStrategy, 2 replicas in all): the " \
           "chief" in texts[0]
    assert "Worker 1 of 2" in texts[1] and "Done: the chief wrote the run's outputs" in texts[1]

    # only the chief wrote: one run folder, checkpoints, TensorBoard, SavedModel; no worker scratch is left
    assert sorted(os.listdir(out)) == ["ck", "logs", "model"]
    chief_ck = run_folder(out / "ck")
    assert sorted(f for f in os.listdir(chief_ck) if f.endswith(".index")) == \
        ["ckpt-0.index", "ckpt-1.index", "ckpt-2.index"]
    assert os.listdir(os.path.join(chief_ck, "best"))
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(run_folder(out / "logs")))
    assert [os.listdir(tmp_path / f"tmp{index}") for index in range(2)] == [[], []]
    meta, single_meta = read_metadata(str(out / "model")), read_metadata(single.savedmodel)
    assert meta["steps"] == single_meta["steps"] == single.steps == 9  # 12 training pairs / 4, 3 epochs
    # the same validations, hence the same best weights exported
    assert meta["validation"]["step"] == single_meta["validation"]["step"]
    assert meta["validation"]["psnr"] == pytest.approx(single_meta["validation"]["psnr"], abs=1e-3)

    # the chief's generator is the single process's
    chief = generator_weights(os.path.join(chief_ck, "ckpt-2"))
    expected = generator_weights(os.path.join(single.checkpoints, "ckpt-2"))
    first_epoch = generator_weights(os.path.join(single.checkpoints, "ckpt-0"))
    diff = max(float(np.abs(a - b).max()) for a, b in zip(chief, expected, strict=True))
    print(f"max |chief - single process| = {diff:.3g}")
    for a, b in zip(chief, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    # ... and the comparison means something: 6 more steps moved the weights far beyond the tolerance
    moved = max(float(np.abs(a - b).max()) for a, b in zip(expected, first_epoch, strict=True))
    assert moved > 100 * ATOL
