"""sr.py over a region on a Dask cluster (region.py): the parts computed by worker processes make the
single-process output bit for bit (GeoTIFF, COG, VRT of the parts, a running scheduler); a rerun after a
kill computes only the missing parts; a worker killed in the middle does not fail the run."""
from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from helpers import ROOT, write_raster
from osgeo import gdal

import region
import sr
from export import export_savedmodel
from network import Generator
from raster import read_array
from scaling import Scaling

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
ORIGIN = (600000.0, 5000000.0)
COMMON = ["--ts", "128", "--pad", "32", "--quiet"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An LR image with nodata pixels, a generator slow enough to be stopped while it runs (seconds), and
    the single-process output (the reference)."""
    folder = tmp_path_factory.mktemp("region")
    lr = np.random.default_rng(0).integers(1, 1000, (150, 170, 3)).astype(np.uint16)
    lr[:5, :7] = 0
    paths = {"lr": write_raster(str(folder / "lr.tif"), lr, origin=ORIGIN, nodata=0),
             "model": str(folder / "model"), "single": str(folder / "single.tif")}
    export_savedmodel(Generator(3, nresblocks=2, dim=16), paths["model"], 3, Scaling.scales(3, 1e-3, 1e-3))
    assert sr.main(["--input", paths["lr"], "--savedmodel", paths["model"], "--output", paths["single"],
                    "--engine", "tf", *COMMON]) == 0
    return paths


def sr_command(scene: dict[str, str], output: str, *args: str) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "sr.py"), "--input", scene["lr"], "--savedmodel",
            scene["model"], "--output", output, *COMMON, *args]


def run_sr(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env=ENV, text=True, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def assert_same_image(path: str, reference: str) -> None:
    """Same pixels, bit for bit, and the same grid, CRS, nodata and band metadata."""
    a, b = gdal.Open(path), gdal.Open(reference)
    np.testing.assert_array_equal(read_array(a), read_array(b))
    assert a.GetGeoTransform() == b.GetGeoTransform()
    assert a.GetProjection() == b.GetProjection()
    for i in range(1, b.RasterCount + 1):
        assert a.GetRasterBand(i).GetNoDataValue() == b.GetRasterBand(i).GetNoDataValue()
        assert a.GetRasterBand(i).GetDescription() == b.GetRasterBand(i).GetDescription()


def part_files(output: str) -> list[str]:
    return glob.glob(os.path.join(region.parts_folder(output), "part_*.tif"))


def start_with_two_workers(scene: dict[str, str], output: str) -> subprocess.Popen:
    """sr.py --workers 2 in parts of one tile (30 parts), started and left running; its output read."""
    return subprocess.Popen(sr_command(scene, output, "--workers", "2", "--part_size", "128"), env=ENV,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_parts(output: str, process: subprocess.Popen, count: int, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while len(part_files(output)) < count:
        assert process.poll() is None, f"ended too early: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_two_workers_give_the_single_process_output_bit_for_bit(scene, tmp_path):
    out = str(tmp_path / "hr.tif")
    done = run_sr(sr_command(scene, out, "--workers", "2", "--part_size", "256"))
    assert done.stderr == ""  # --quiet: nothing on success, the workers' TensorFlow start-up included
    assert_same_image(out, scene["single"])
    assert not os.path.exists(region.parts_folder(out))
    assert os.listdir(tmp_path) == ["hr.tif"]


@pytest.mark.slow
def test_vrt_of_the_parts_and_cog_are_the_single_process_output(scene, tmp_path):
    vrt, cog = str(tmp_path / "hr.vrt"), str(tmp_path / "hr_cog.tif")
    run_sr(sr_command(scene, vrt, "--workers", "1", "--part_size", "200"))
    assert len(part_files(vrt)) == 3 * 3  # 680 x 600 HR pixels in parts of 256 (two tiles of 128)
    os.rename(tmp_path, tmp_path.parent / "moved")  # the VRT names its parts relative to itself
    assert_same_image(str(tmp_path.parent / "moved" / "hr.vrt"), scene["single"])
    os.rename(tmp_path.parent / "moved", tmp_path)
    run_sr(sr_command(scene, cog, "--workers", "2", "--cog"))
    assert gdal.Open(cog).GetMetadata("IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert_same_image(cog, scene["single"])


@pytest.mark.slow
def test_a_rerun_after_a_kill_computes_only_the_missing_parts(scene, tmp_path):
    out = str(tmp_path / "hr.tif")
    command = sr_command(scene, out, "--workers", "1", "--part_size", "128")
    first = subprocess.Popen(command, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
    wait_for_parts(out, first, 3)
    os.killpg(first.pid, signal.SIGKILL)  # the machine crashed: the client, its cluster and its workers
    first.communicate()
    finished = len(part_files(out))
    assert 3 <= finished < 30 and not os.path.exists(out)
    done = run_sr([c for c in command if c != "--quiet"])  # the same command, its log read
    todo = int(re.search(r"in 30 part\(s\) of up to 128 x 128 HR pixels, (\d+) to compute", done.stderr)[1])
    assert todo == 30 - finished
    assert_same_image(out, scene["single"])


@pytest.mark.slow
def test_sigterm_stops_the_cluster_and_keeps_the_finished_parts(scene, tmp_path):
    out = str(tmp_path / "hr.tif")
    process = start_with_two_workers(scene, out)
    wait_for_parts(out, process, 2)
    tree = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM and stderr.strip().endswith("terminated (SIGTERM)")
    assert not os.path.exists(out) and len(part_files(out)) >= 2  # what a rerun starts from
    _, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive  # no worker left behind


@pytest.mark.slow
def test_a_killed_worker_does_not_fail_the_run(scene, tmp_path):
    out = str(tmp_path / "hr.tif")
    process = start_with_two_workers(scene, out)
    wait_for_parts(out, process, 2)
    workers = [p for p in psutil.Process(process.pid).children(recursive=True)
               if any("spawn_main" in part for part in p.cmdline())]
    assert len(workers) == 2
    workers[0].kill()
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    assert len(part_files(out)) == 0 and len(glob.glob(str(tmp_path / ".*"))) == 0
    assert_same_image(out, scene["single"])


@pytest.mark.slow
def test_a_running_scheduler_and_its_workers(scene, tmp_path):
    scheduler_file = str(tmp_path / "scheduler.json")
    dask = os.path.join(os.path.dirname(sys.executable), "dask")
    servers = [subprocess.Popen([dask, "scheduler", "--scheduler-file", scheduler_file, "--port", "0",
                                 "--dashboard-address", ":0"], env=ENV, stderr=subprocess.DEVNULL)]
    try:
        end = time.monotonic() + 60
        while not os.path.exists(scheduler_file):
            assert time.monotonic() < end
            time.sleep(0.1)
        time.sleep(0.5)
        with open(scheduler_file) as f:
            address = json.load(f)["address"]
        servers.append(subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--nworkers", "1"],
                                        env=ENV, cwd=str(tmp_path), stderr=subprocess.DEVNULL))
        out = str(tmp_path / "hr.tif")
        run_sr(sr_command(scene, out, "--scheduler", address))
        assert_same_image(out, scene["single"])
    finally:
        for server in servers:
            server.terminate()
            server.wait(30)


def test_each_local_worker_takes_one_gpu():
    assert [region.gpu_slot(name, 4) for name in (0, 1, 2, 3, 4, "5")] == [0, 1, 2, 3, 0, 1]
    assert region.gpu_slot(0, 0) is None  # no GPU: TensorFlow's CPU
    assert region.gpu_slot("tcp://10.0.0.2:40000", 2) is None  # a cluster's worker: its own devices


def test_parts_of_a_run_with_other_settings_are_removed(tmp_path, caplog):
    for name in ("part_0000000_0000000.tif", "part_0000000_0000512.tif"):
        (tmp_path / name).write_text("x")
    region.prepare_parts(str(tmp_path), {"ts": 512})
    assert len(glob.glob(str(tmp_path / "part_*"))) == 0  # no manifest: unknown settings
    (tmp_path / "part_0000000_0000000.tif").write_text("x")
    region.prepare_parts(str(tmp_path), {"ts": 512})
    assert len(glob.glob(str(tmp_path / "part_*"))) == 1  # the same settings: kept
    region.prepare_parts(str(tmp_path), {"ts": 256})
    assert len(glob.glob(str(tmp_path / "part_*"))) == 0
    assert "other settings removed" in caplog.text


def test_several_inputs_are_mosaicked(scene, tmp_path):
    """The image cut in three files (given as names, or as a glob) gives the whole image's output."""
    lr = read_array(gdal.Open(scene["lr"]))
    pieces = [(0, 0, 60, 150), (60, 0, 110, 70), (60, 70, 110, 80)]  # (col, row, cols, rows)
    for i, (x, y, w, h) in enumerate(pieces):
        write_raster(str(tmp_path / f"piece{i}.tif"), lr[y:y + h, x:x + w],
                     origin=(ORIGIN[0] + 10 * x, ORIGIN[1] - 10 * y), nodata=0)
    for inputs in ([str(tmp_path / f"piece{i}.tif") for i in range(3)], [str(tmp_path / "piece*.tif")]):
        out = str(tmp_path / "hr.tif")
        assert sr.main(["--input", *inputs, "--savedmodel", scene["model"], "--output", out, "--engine", "tf",
                        *COMMON]) == 0
        assert_same_image(out, scene["single"])
        os.remove(out)
    assert sorted(os.listdir(tmp_path)) == ["piece0.tif", "piece1.tif", "piece2.tif"]


@pytest.mark.parametrize("change, message", [
    ({"epsg": 32632}, "another CRS than"),
    ({"origin": (ORIGIN[0] + 1010 + 3, ORIGIN[1])}, "not on the pixel grid"),
    ({"pixel_size": 20.0}, "pixels of 20 x 20"),
    ({"bands": 2}, "2 band(s), but"),
    ({"dtype": np.float32}, "data type Float32 vs UInt16"),
])
def test_inputs_that_cannot_be_mosaicked_are_refused(tmp_path, change, message):
    first = write_raster(str(tmp_path / "a.tif"), np.ones((10, 10, 3), np.uint16), origin=ORIGIN)
    second = write_raster(str(tmp_path / "b.tif"), np.ones((10, 10, change.get("bands", 3)),
                                                           change.get("dtype", np.uint16)),
                          origin=change.get("origin", (ORIGIN[0] + 100, ORIGIN[1])),
                          pixel_size=change.get("pixel_size", 10.0), epsg=change.get("epsg", 32631))
    with pytest.raises(sr.SR4RSError, match=re.escape(message)) as err:
        sr.main(["--input", first, second, "--savedmodel", str(tmp_path), "--output",
                 str(tmp_path / "o.tif")])
    assert "b.tif" in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["a.tif", "b.tif"]


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers 0: give at least 1"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "give one"),
    (["--workers", "2", "--engine", "otb"], "use --engine tf"),
    (["--part_size", "0", "--workers", "1"], "--part_size 0"),
    (["--output", "out.vrt"], "a VRT output is the VRT of the parts"),
    (["--output", "out.vrt", "--workers", "1", "--cog"], "--cog writes a GeoTIFF"),
    (["--input", "no_such_*.tif"], "no_such_*.tif: no file matches this pattern"),
])
def test_region_options_are_checked_first(tmp_path, args, message):
    given = {"--input": "in.tif", "--savedmodel": "model", "--output": "out.tif"}
    for key in ("--input", "--output"):
        if key in args:
            given[key] = args.pop(args.index(key) + 1)
            args.remove(key)
    argv = [item for key, value in given.items() for item in (key, str(tmp_path / value))] + args
    with pytest.raises(sr.SR4RSError, match=re.escape(message)):
        sr.main(argv)
    assert os.listdir(tmp_path) == []
