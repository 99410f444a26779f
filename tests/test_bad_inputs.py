"""Bad inputs for sr.py, extract_patches.py and evaluate.py, as a hostile-but-realistic user gives them.

Every case must end the same way: exit code 2, exactly one line on stderr (C-level GDAL messages
included) that starts with `error: ` and names the file or the option, no traceback, no output or
temporary file left behind, and the outputs that existed before (and the inputs) untouched.
"""
from __future__ import annotations

import gc
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from helpers import write_points, write_raster
from osgeo import gdal

import evaluate
import extract_patches
import sr
from cli import run_cli

ORIGIN = (500000.0, 4800000.0)
# Outputs that exist before every case (5 tmpfs pages: the full-disk cases leave one page free).
EXISTING = ("o.tif", "o_hr.tif", "o_centers.gpkg", "m.json", "q.png")
FULL_DISK = "24k"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Good and bad input files, made once (small: the whole module runs in seconds)."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    hr = rng.integers(100, 3000, (64, 64, 3)).astype(np.int16)
    lr = hr.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3)).astype(np.int16)
    paths = {
        "lr": write_raster(str(d / "lr.tif"), lr, ORIGIN, 10.0),
        "hr": write_raster(str(d / "hr.tif"), hr, ORIGIN, 2.5),
        "sr": write_raster(str(d / "sr.tif"), hr + 5, ORIGIN, 2.5),
        "lr2": write_raster(str(d / "lr2.tif"), lr[:, :, :2], ORIGIN, 10.0),
        "hr2": write_raster(str(d / "hr2.tif"), hr[:, :, :2], ORIGIN, 2.5),
        "far": write_raster(str(d / "far.tif"), hr, (ORIGIN[0] + 5000, ORIGIN[1]), 2.5),
        "constant": write_raster(str(d / "constant.tif"), np.full((64, 64, 3), 7, np.int16), ORIGIN, 2.5),
        "truncated": write_raster(str(d / "truncated.tif"), hr, ORIGIN, 2.5,
                                  options=("TILED=YES", "BLOCKXSIZE=16", "BLOCKYSIZE=16")),
        "truncated_lr": write_raster(str(d / "truncated_lr.tif"), np.repeat(np.repeat(lr, 4, 0), 4, 1),
                                     ORIGIN, 10.0, options=("TILED=YES", "BLOCKXSIZE=16", "BLOCKYSIZE=16")),
        "points": write_points(str(d / "points.gpkg"), [(ORIGIN[0] + 80, ORIGIN[1] - 80)]),
        "no_points": write_points(str(d / "no_points.gpkg"), []),
        "empty": str(d / "empty.tif"),
        "text": str(d / "text.tif"),
        "text_vec": str(d / "text.gpkg"),
        "folder": str(d / "folder.tif"),
        "missing": str(d / "missing.tif"),
        "empty_model": str(d / "empty_model"),
    }
    for name in ("truncated", "truncated_lr"):
        with open(paths[name], "r+b") as f:
            f.truncate(os.path.getsize(paths[name]) * 3 // 4)
    open(paths["empty"], "wb").close()
    for name in ("text", "text_vec"):
        with open(paths[name], "w") as f:
            f.write("not a dataset\n")
    os.mkdir(paths["folder"])
    os.mkdir(paths["empty_model"])
    for name, array in (("nogeo_sr", hr), ("nogeo_ref", hr[:, :60]), ("nogeo_lr", lr)):
        paths[name] = str(d / f"{name}.tif")
        ds = gdal.GetDriverByName("GTiff").Create(paths[name], array.shape[1], array.shape[0], 3,
                                                  gdal.GDT_Int16)
        for b in range(3):
            ds.GetRasterBand(b + 1).WriteArray(array[:, :, b])
        ds = None
    paths["rotated"] = write_raster(str(d / "rotated.tif"), lr, ORIGIN, 10.0)
    ds = gdal.Open(paths["rotated"], gdal.GA_Update)
    ds.SetGeoTransform((ORIGIN[0], 10.0, 1.0, ORIGIN[1], 0.0, -10.0))
    ds = None
    return paths


@dataclass(frozen=True)
class Case:
    """One bad command line: `changes` replace (or, as None, remove) options of the command's good
    command line; `{name}` is an input file, `{out}` the output folder. The error line must contain
    every string of `expected` (formatted the same way)."""

    id: str
    command: str
    changes: dict[str, str | None]
    expected: tuple[str, ...]
    disk: str = ""  # "full": the output folder is a tiny tmpfs; "read_only": chattr +i


def good_command_line(command: str) -> dict[str, str | None]:
    """A command line that works, with placeholders."""
    if command == "sr":
        return {"--input": "{lr}", "--savedmodel": "{model}", "--output": "{out}/o.tif", "--engine": "tf",
                "--quiet": None}
    if command == "extract":
        return {"--lr": "{lr}", "--hr": "{hr}", "--lr_patchsize": "4", "--step": "4",
                "--out_lr": "{out}/o.tif", "--out_hr": "{out}/o_hr.tif", "--quiet": None}
    return {"--sr": "{sr}", "--ref": "{hr}", "--lr": "{lr}", "--out": "{out}/m.json", "--png": "{out}/q.png"}


MAINS = {"sr": sr.main, "extract": extract_patches.main, "evaluate": evaluate.main}
DROP = "<drop>"  # a change that removes the option

CASES = [
    # --- sr.py ---------------------------------------------------------------------------------
    Case("sr-missing-input", "sr", {"--input": "{missing}"}, ("{missing}: no such file",)),
    Case("sr-empty-input", "sr", {"--input": "{empty}"}, ("{empty}: not a readable raster",)),
    Case("sr-text-input", "sr", {"--input": "{text}"}, ("{text}: not a readable raster",)),
    Case("sr-truncated-input", "sr", {"--input": "{truncated_lr}"}, ("{truncated_lr}: read failed",)),
    Case("sr-folder-input", "sr", {"--input": "{folder}"},
         ("{folder}: a folder, but not a Sentinel-2 product",)),
    Case("sr-gtiff-dir-missing", "sr", {"--input": "GTIFF_DIR:2:{lr}"},
         ("GTIFF_DIR:2:{lr}: not a readable raster (",)),
    Case("sr-vsizip-missing", "sr", {"--input": "/vsizip/{points}/lr.tif"},
         ("/vsizip/{points}/lr.tif: not a readable raster",)),
    Case("sr-band-count", "sr", {"--input": "{lr2}"}, ("2 band(s) but the model {model} expects 3",)),
    Case("sr-missing-model", "sr", {"--savedmodel": "{missing}"},
         ("{missing}: no such SavedModel directory",)),
    Case("sr-empty-model", "sr", {"--savedmodel": "{empty_model}"}, ("{empty_model}: not a SavedModel",)),
    Case("sr-output-folder", "sr", {"--output": "{out}/dir.tif"},
         ("dir.tif: the output exists and is a directory",)),
    Case("sr-output-fifo", "sr", {"--output": "{out}/fifo"}, ("fifo: the output exists and is a FIFO",)),
    Case("sr-output-no-folder", "sr", {"--output": "{out}/nodir/o.tif"}, ("the output directory", "nodir")),
    Case("sr-output-is-input-link", "sr", {"--output": "{out}/in_link.tif"},
         ("in_link.tif: --output would overwrite the input --input",)),
    Case("sr-output-read-only", "sr", {}, ("{out}/o.tif: permission denied",), disk="read_only"),
    Case("sr-full-disk", "sr", {}, ("{out}/o.tif: writing failed",), disk="full"),
    Case("sr-co-bad-value", "sr", {"--co": "COMPRESS=FOO"}, ("bad GeoTIFF creation option", "COMPRESS")),
    Case("sr-co-unknown", "sr", {"--co": "NOPE=1"}, ("bad GeoTIFF creation option", "NOPE")),
    Case("sr-co-no-equals", "sr", {"--co": "TILED"}, ("--co TILED: expected KEY=VALUE",)),
    Case("sr-co-extended-filename", "sr", {"--output": "{out}/o.tif?&gdal:co:PREDICTOR=9"},
         ("bad GeoTIFF creation option", "PREDICTOR=9")),
    Case("sr-encoding", "sr", {"--encoding": "int12"}, ("unknown encoding 'int12'",)),
    Case("sr-nodata-encoding", "sr", {"--encoding": "uint8", "--nodata": "-5"},
         ("the nodata value -5.0 cannot be stored as uint8",)),
    Case("sr-ts-not-multiple", "sr", {"--ts": "30"}, ("--ts 30",)),
    Case("sr-ts-zero", "sr", {"--ts": "0"}, ("--ts 0",)),
    Case("sr-ts-negative", "sr", {"--ts": "-8"}, ("--ts -8",)),
    Case("sr-ts-not-a-number", "sr", {"--ts": "big"},
         ("argument --ts: expected a number of HR pixels or auto, not 'big'",)),
    Case("sr-pad", "sr", {"--pad": "48"}, ("argument --pad: invalid choice: 48",)),
    Case("sr-batch", "sr", {"--batch": "0"}, ("--batch 0",)),
    Case("sr-no-output", "sr", {"--output": DROP}, ("the following arguments are required: --output",)),
    # --- extract_patches.py --------------------------------------------------------------------
    Case("ex-missing-hr", "extract", {"--hr": "{missing}"}, ("{missing}: no such file",)),
    Case("ex-empty-lr", "extract", {"--lr": "{empty}"}, ("{empty}: not a readable raster",)),
    Case("ex-truncated-hr", "extract", {"--hr": "{truncated}"}, ("{truncated}: read failed",)),
    Case("ex-band-count", "extract", {"--hr": "{hr2}"}, ("{hr2}: 2 bands, but {lr} has 3",)),
    Case("ex-no-georeferencing", "extract", {"--lr": "{nogeo_lr}"}, ("{nogeo_lr}: the image has no georef",)),
    Case("ex-rotated", "extract", {"--lr": "{rotated}"}, ("{rotated}: only north-up images",)),
    Case("ex-vec-missing", "extract", {"--step": DROP, "--vec": "{missing}"}, ("{missing}: no such file",)),
    Case("ex-vec-text", "extract", {"--step": DROP, "--vec": "{text_vec}"},
         ("{text_vec}: not a readable vector layer",)),
    Case("ex-vec-no-point", "extract", {"--step": DROP, "--vec": "{no_points}"},
         ("{no_points}: the layer has no point",)),
    Case("ex-out-is-input", "extract", {"--out_lr": "{lr}"}, ("--out_lr would overwrite the input --lr",)),
    Case("ex-outs-same-via-link", "extract", {"--out_hr": "{out}/o_link.tif"},
         ("--out_hr and --out_lr are the same file",)),
    Case("ex-out-folder", "extract", {"--out_hr": "{out}/dir.tif"},
         ("dir.tif: the output exists and is a directory",)),
    Case("ex-centers-fifo", "extract", {"--out_centers": "{out}/fifo.gpkg"},
         ("fifo.gpkg: the output exists and is a FIFO",)),
    Case("ex-patchsize", "extract", {"--lr_patchsize": "0"}, ("--lr_patchsize must be >= 1",)),
    Case("ex-step", "extract", {"--step": "0"}, ("--step must be >= 1",)),
    Case("ex-encoding", "extract", {"--encoding": "uint12"}, ("unknown encoding 'uint12'",)),
    Case("ex-out-extension", "extract", {"--out_lr": "{out}/o.png"}, ("o.png: patches images are GeoTIFF",)),
    Case("ex-patch-too-large", "extract", {"--lr_patchsize": "17"}, ("no patch to extract",)),
    Case("ex-full-disk", "extract", {}, ("{out}/o.tif: writing the patches", "no space left on device"),
         disk="full"),
    Case("ex-read-only", "extract", {}, ("{out}/o.tif: permission denied",), disk="read_only"),
    # --- evaluate.py ---------------------------------------------------------------------------
    Case("ev-out-is-sr", "evaluate", {"--out": "{sr}"}, ("--out would overwrite the input --sr",)),
    Case("ev-png-is-ref-link", "evaluate", {"--png": "{out}/ref_link.png"},
         ("ref_link.png: --png would overwrite the input --ref",)),
    Case("ev-png-is-out", "evaluate", {"--png": "{out}/m_link.json"}, ("--png and --out are the same file",)),
    Case("ev-missing-lr", "evaluate", {"--lr": "{missing}"}, ("{missing}: no such file",)),
    Case("ev-empty-sr", "evaluate", {"--sr": "{empty}"}, ("{empty}: not a readable raster",)),
    Case("ev-truncated-ref", "evaluate", {"--ref": "{truncated}"}, ("{truncated}", "read failed")),
    Case("ev-band-count", "evaluate", {"--ref": "{hr2}"}, ("band counts differ: SR 3, reference 2",)),
    Case("ev-sizes-without-georeferencing", "evaluate",
         {"--sr": "{nogeo_sr}", "--ref": "{nogeo_ref}", "--lr": "{nogeo_lr}"},
         ("sizes do not match: SR 64 x 64, reference 60 x 64",)),
    Case("ev-half-georeferenced", "evaluate", {"--ref": "{nogeo_sr}", "--lr": DROP},
         ("reference not georeferenced while SR is",)),
    Case("ev-no-overlap", "evaluate", {"--ref": "{far}"}, ("the reference image does not overlap the SR",)),
    Case("ev-crop-border-large", "evaluate", {"--crop_border": "30"}, ("after --crop_border 30",)),
    Case("ev-crop-border-negative", "evaluate", {"--crop_border": "-1"}, ("--crop_border must be >= 0",)),
    Case("ev-data-range", "evaluate", {"--data_range": "0"}, ("--data_range must be > 0",)),
    Case("ev-constant-reference", "evaluate", {"--ref": "{constant}", "--lr": DROP},
         ("the reference is constant", "--data_range")),
    Case("ev-all-nodata", "evaluate", {"--sr": "{constant}", "--nodata": "7", "--lr": DROP},
         ("no pixel is valid", "nodata")),
    Case("ev-out-folder", "evaluate", {"--out": "{out}/dir.tif"},
         ("dir.tif: the output exists and is a directory",)),
    Case("ev-png-fifo", "evaluate", {"--png": "{out}/fifo"}, ("fifo: the output exists and is a FIFO",)),
    Case("ev-out-no-folder", "evaluate", {"--out": "{out}/nodir/m.json"}, ("the output directory", "nodir")),
    Case("ev-full-disk", "evaluate", {}, ("{out}/q.png: writing failed (no space left on device)",),
         disk="full"),
    Case("ev-read-only", "evaluate", {}, ("{out}/m.json: permission denied",), disk="read_only"),
]


def make_outputs_folder(out: str, inputs: dict[str, str]) -> None:
    """Outputs that exist before the run, and names that are not files."""
    for name in EXISTING:
        with open(os.path.join(out, name), "w") as f:
            f.write(f"old {name}\n")
    os.mkdir(os.path.join(out, "dir.tif"))
    for fifo in ("fifo", "fifo.gpkg"):
        os.mkfifo(os.path.join(out, fifo))
    for link, target in (("in_link.tif", inputs["lr"]), ("ref_link.png", inputs["hr"]),
                         ("m_link.json", os.path.join(out, "m.json")),
                         ("o_link.tif", os.path.join(out, "o.tif"))):
        os.symlink(target, os.path.join(out, link))


def snapshot(folder: str) -> dict[str, object]:
    """What a folder holds: each entry's kind and, for files and links, content or target."""
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            out[name] = ("link", os.readlink(path))
        elif stat.S_ISREG(mode):
            with open(path, "rb") as f:
                out[name] = ("file", f.read())
        else:
            out[name] = ("other", stat.S_IFMT(mode), sorted(os.listdir(path)) if stat.S_ISDIR(mode) else None)
    return out


@pytest.fixture
def outputs_folder(request: pytest.FixtureRequest, tmp_path, inputs) -> Iterator[str]:
    """The output folder of a case: plain, a tiny tmpfs ("full"), or immutable ("read_only")."""
    out = str(tmp_path / "out")
    os.mkdir(out)
    disk = request.param
    if disk == "full":
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FULL_DISK}", "tmpfs", out],
                                 capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tiny tmpfs to fill (not root?): {mounted.stderr.decode().strip()}")
    make_outputs_folder(out, inputs)
    if disk == "read_only" and subprocess.run(["chattr", "+i", out], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder read-only for root here (chattr +i failed)")
    try:
        yield out
    finally:
        if disk == "read_only":
            subprocess.run(["chattr", "-i", out], check=True)
        if disk == "full":
            subprocess.run(["umount", out], check=True)


@pytest.mark.parametrize("case, outputs_folder", [pytest.param(c, c.disk, id=c.id) for c in CASES],
                         indirect=["outputs_folder"])
def test_bad_input(case: Case, outputs_folder: str, inputs, tf1_nearest, capfd, monkeypatch):
    names = {**inputs, "out": outputs_folder, "model": tf1_nearest}
    options = good_command_line(case.command)
    options.update(case.changes)
    argv = []
    for option, value in options.items():
        if value != DROP:
            argv += [option] if value is None else [option, value.format(**names)]
    before, inputs_before = snapshot(outputs_folder), snapshot(os.path.dirname(inputs["lr"]))
    ignored = []  # errors Python can only print as "Exception ignored" (e.g. GDAL closing a dataset late)
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)
    capfd.readouterr()
    assert run_cli(MAINS[case.command], argv) == 2, argv
    gc.collect()
    assert not ignored, [str(u.exc_value) for u in ignored]
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for expected in case.expected:
        assert expected.format(**names) in lines[0], lines[0]
    assert snapshot(outputs_folder) == before  # nothing left, nothing replaced
    assert snapshot(os.path.dirname(inputs["lr"])) == inputs_before
