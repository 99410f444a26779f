"""sr.py --precision: which precision each case gets, and bfloat16 inference (TensorFlow's oneDNN rewrite,
in a process of its own since the option holds for the whole process) close to float32."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, write_raster
from savedmodel_fixtures import cached

from errors import SR4RSError
from export import export_savedmodel
from network import Generator
from precision import choose_precision, cpu_bfloat16_flags
from raster import open_raster, read_array
from scaling import Scaling


@pytest.fixture
def cpuinfo(tmp_path):
    """Fake /proc/cpuinfo files: with and without native bfloat16."""
    paths = {}
    for name, flags in (("amx", "fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile"), ("old", "fpu sse2 avx2")):
        paths[name] = str(tmp_path / name)
        with open(paths[name], "w") as f:
            f.write(f"processor\t: 0\nmodel name\t: a CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    paths["none"] = str(tmp_path / "missing")
    return paths


def test_the_cpu_flags_are_read(cpuinfo):
    assert cpu_bfloat16_flags(cpuinfo["amx"]) == ["avx512_bf16", "amx_bf16"]
    assert cpu_bfloat16_flags(cpuinfo["old"]) == [] and cpu_bfloat16_flags(cpuinfo["none"]) == []


@pytest.mark.parametrize("name, engine, gpu, cpu, chosen", [
    ("auto", "tf", False, "amx", "bfloat16"),
    ("auto", "tf", False, "old", "float32"),
    ("auto", "otb", False, "amx", "float32"),  # OTB runs its own TensorFlow session
    ("auto", "tf", True, "amx", "float32"),  # the rewrite is for CPUs
    ("float32", "tf", False, "amx", "float32"),
    ("bfloat16", "tf", False, "amx", "bfloat16"),
    ("bfloat16", "tf", False, "old", "bfloat16"),  # emulated: a warning says it
])
def test_which_precision(cpuinfo, caplog, name, engine, gpu, cpu, chosen):
    assert choose_precision(name, engine, gpu, cpuinfo[cpu]) == chosen
    assert ("emulated" in caplog.text) == (name == "bfloat16" and cpu == "old")


@pytest.mark.parametrize("engine, gpu, message", [("otb", False, "built-in engine only: add --engine tf"),
                                                  ("tf", True, "this run uses a GPU")])
def test_bfloat16_refusals(cpuinfo, engine, gpu, message):
    with pytest.raises(SR4RSError, match=message):
        choose_precision("bfloat16", engine, gpu, cpuinfo["amx"])


@pytest.fixture(scope="module")
def generator_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small real generator (random weights) exported as the project exports models."""
    def build(path: str) -> None:
        import tensorflow as tf

        tf.random.set_seed(4)
        export_savedmodel(Generator(3, nresblocks=2, dim=16), path, 3, Scaling.scales(3, 1e-3, 1e-3))
    return cached(tmp_path_factory, "generator_d16_rb2", build)


@pytest.mark.slow
def test_bfloat16_inference_is_close_to_float32(generator_model, tmp_path):
    lr = np.random.default_rng(0).uniform(100, 900, (48, 48, 3)).astype(np.float32)
    src = write_raster(str(tmp_path / "lr.tif"), lr)
    outputs = {}
    for precision in ("float32", "bfloat16"):
        outputs[precision] = str(tmp_path / f"{precision}.tif")
        command = [sys.executable, os.path.join(ROOT, "sr.py"), "--input", src, "--savedmodel",
                   generator_model, "--output", outputs[precision], "--engine", "tf",
                   "--precision", precision]
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert f"pad 64, {precision}, float32)" in done.stderr
    f32, bf16 = (read_array(open_raster(outputs[p])).astype(np.float64) for p in ("float32", "bfloat16"))
    psnr = 10 * np.log10((f32.max() - f32.min()) ** 2 / np.mean((bf16 - f32) ** 2 + 1e-30))
    assert psnr > 30, psnr  # random weights: a trained model is closer (BENCHMARKS.md)
    if cpu_bfloat16_flags():
        assert psnr < 120  # the rewrite did run in bfloat16 (float32 would give identical values)
    logging.getLogger(__name__).info("bfloat16 vs float32: %.1f dB", psnr)
