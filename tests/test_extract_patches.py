"""extract_patches.py: co-location, point layers in another CRS, nodata, --max_patches, CLI errors."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from helpers import write_points, write_raster
from osgeo import gdal, ogr, osr

import extract_patches
from cli import run_cli
from datasets import PatchesDataset
from extract_patches import main, otb_pixel_index

X0, Y0 = 500000.0, 4800000.0  # LR/HR corner (EPSG:32631)
LR_PX = 10.0
W = 40  # LR image size
S = 4  # LR patch size


def read_patches(path: str, size: int) -> np.ndarray:
    """A patches image as [N, size, size, bands]."""
    arr = gdal.Open(path).ReadAsArray()
    arr = arr[np.newaxis] if arr.ndim == 2 else arr
    return np.moveaxis(arr, 0, -1).reshape(-1, size, size, arr.shape[0])


def read_centers(path: str) -> list[dict]:
    ds = ogr.Open(path)
    layer = ds.GetLayer(0)
    out = []
    for f in layer:
        g = f.GetGeometryRef()
        out.append({**f.items(), "x": g.GetX(), "y": g.GetY()})
    return out


def block_mean(hr: np.ndarray) -> np.ndarray:
    """4x4 mean of [..., rows, cols, bands]."""
    r, c, b = hr.shape[-3:]
    return hr.reshape(*hr.shape[:-3], r // 4, 4, c // 4, 4, b).mean(axis=(-4, -2))


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict:
    """Synthetic pair: HR integers (2.5 m), LR = exact 4x4 mean of HR (10 m, float64), two bands."""
    d = tmp_path_factory.mktemp("pair")
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 4000, (4 * W, 4 * W, 2)).astype(np.int16)
    lr = block_mean(hr.astype(np.float64))
    return {"dir": d, "hr_arr": hr, "lr_arr": lr,
            "lr": write_raster(str(d / "lr.tif"), lr, origin=(X0, Y0), pixel_size=LR_PX),
            "hr": write_raster(str(d / "hr.tif"), hr, origin=(X0, Y0), pixel_size=LR_PX / 4)}


def run(*args: str) -> int:
    return run_cli(main, ["--quiet", *args])


def test_otb_pixel_index_rounding():
    # the pixel containing the point; a point on an edge goes to the pixel on its right / below
    x = X0 + np.array([0.0, 9.99, 10.0, 15.0, 19.999, 20.0, -0.001])
    assert otb_pixel_index(x, X0, 10.0).tolist() == [0, 0, 1, 1, 1, 2, -1]
    y = Y0 - np.array([0.0, 9.99, 10.0, 20.0])
    assert otb_pixel_index(y, Y0, -10.0).tolist() == [0, 0, 1, 2]


def test_colocation_points(pair, tmp_path):
    rng = np.random.default_rng(2)
    xy = np.column_stack([X0 + rng.uniform(0, W * LR_PX, 60), Y0 - rng.uniform(0, W * LR_PX, 60)])
    xy[:5] = [(X0 + 100, Y0 - 100), (X0 + 105, Y0 - 102.5), (X0 + 109.9, Y0 - 109.9), (X0, Y0),
              (X0 + 400, Y0)]
    vec = write_points(str(tmp_path / "pts.gpkg"), xy)
    out_lr, out_hr = str(tmp_path / "lr_p.tif"), str(tmp_path / "hr_p.tif")
    assert run("--lr", pair["lr"], "--hr", pair["hr"], "--lr_patchsize", str(S), "--vec", vec,
               "--field", "label", "--out_lr", out_lr, "--out_hr", out_hr) == 0
    lr_p, hr_p = read_patches(out_lr, S), read_patches(out_hr, 4 * S)
    assert lr_p.dtype == np.float64 and hr_p.dtype == np.int16  # data types kept
    assert len(lr_p) == len(hr_p) > 30
    np.testing.assert_array_equal(block_mean(hr_p.astype(np.float64)), lr_p)  # same ground
    centers = read_centers(str(tmp_path / "lr_p_centers.gpkg"))
    assert [c["patch"] for c in centers] == list(range(len(lr_p)))
    # patches come in the layer's order; the points outside the image (index 3, 4) are skipped
    fids = [c["source_fid"] for c in centers]
    assert fids == sorted(fids) and 4 not in fids and 5 not in fids  # GPKG FIDs start at 1
    for c, patch in zip(centers, lr_p, strict=True):
        col, row = c["lr_col"], c["lr_row"]
        np.testing.assert_array_equal(patch, pair["lr_arr"][row:row + S, col:col + S])
        # a quarter HR pixel right of and below the window's centre (PatchesExtraction rounds it safely)
        assert c["x"] == X0 + (col + S / 2 + 1 / 16) * LR_PX and c["y"] == Y0 - (row + S / 2 + 1 / 16) * LR_PX
        assert c["label"] == 100 + c["source_fid"] - 1
        px, py = xy[c["source_fid"] - 1]  # OTB's rule: the point's pixel is the (S/2, S/2) pixel of the patch
        assert col + S // 2 == int(np.floor((px - X0) / LR_PX))
        assert row + S // 2 == int(np.floor((Y0 - py) / LR_PX))
    # the first point is on an LR pixel corner: it is the patch centre (plus the quarter HR pixel)
    assert (centers[0]["x"], centers[0]["y"]) == (X0 + 100 + LR_PX / 16, Y0 - 100 - LR_PX / 16)
    # outputs read back as a dataset
    ds = PatchesDataset([out_lr], [out_hr])
    assert ds.n_patches == len(lr_p) and ds.lr_patch_size == S


def test_colocation_grid_and_shifted_hr(pair, tmp_path):
    """HR covering a sub-area starting 3 HR pixels inside an LR pixel; a regular grid."""
    hr = pair["hr_arr"][4 * 5 + 3:4 * 35 + 3, 4 * 2 + 3:4 * 38 + 3]
    hr_path = write_raster(str(tmp_path / "hr_sub.tif"), hr, pixel_size=LR_PX / 4,
                           origin=(X0 + (4 * 2 + 3) * LR_PX / 4, Y0 - (4 * 5 + 3) * LR_PX / 4))
    out_lr, out_hr = str(tmp_path / "g_lr.tif"), str(tmp_path / "g_hr.tif")
    assert run("--lr", pair["lr"], "--hr", hr_path, "--lr_patchsize", str(S), "--step", "3",
               "--out_lr", out_lr, "--out_hr", out_hr) == 0
    lr_p, hr_p = read_patches(out_lr, S), read_patches(out_hr, 4 * S)
    np.testing.assert_array_equal(block_mean(hr_p.astype(np.float64)), lr_p)
    centers = read_centers(str(tmp_path / "g_lr_centers.gpkg"))
    # grid windows at multiples of 3 that fit in the HR sub-area (LR cols 3..37 minus a margin, rows 6..34)
    cols = sorted({c["lr_col"] for c in centers})
    rows = sorted({c["lr_row"] for c in centers})
    assert cols == list(range(3, 34, 3)) and rows == list(range(6, 31, 3))
    assert len(centers) == len(cols) * len(rows) == len(lr_p)


def test_points_in_another_crs(pair, tmp_path):
    cols, rows = np.array([5, 12, 20, 30]), np.array([7, 25, 14, 30])
    utm = np.column_stack([X0 + (cols + 0.5) * LR_PX, Y0 - (rows + 0.5) * LR_PX])  # LR pixel centres
    src, dst = osr.SpatialReference(), osr.SpatialReference()
    src.ImportFromEPSG(32631)
    dst.ImportFromEPSG(4326)
    for s in (src, dst):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    lonlat = np.array(osr.CoordinateTransformation(src, dst).TransformPoints(utm.tolist()))[:, :2]
    results = []
    for name, xy, epsg in (("utm", utm, 32631), ("wgs84", lonlat, 4326)):
        vec = write_points(str(tmp_path / f"{name}.gpkg"), xy, epsg=epsg)
        out_lr, out_hr = str(tmp_path / f"{name}_lr.tif"), str(tmp_path / f"{name}_hr.tif")
        assert run("--lr", pair["lr"], "--hr", pair["hr"], "--lr_patchsize", str(S), "--vec", vec,
                   "--out_lr", out_lr, "--out_hr", out_hr) == 0
        results.append((read_patches(out_lr, S), read_patches(out_hr, 4 * S)))
        centers = read_centers(str(tmp_path / f"{name}_lr_centers.gpkg"))
        assert [c["lr_col"] for c in centers] == (cols - S // 2).tolist()
        assert [c["lr_row"] for c in centers] == (rows - S // 2).tolist()
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_nodata_and_outside_skipped(tmp_path, caplog):
    lr = np.full((W, W, 1), 7, np.int16)
    hr = np.full((4 * W, 4 * W, 1), 9, np.int16)
    lr[10, 10] = -1  # LR nodata (file's value)
    hr[4 * 30 + 1, 4 * 30 + 2] = 255  # HR nodata (given on the command line)
    lr_path = write_raster(str(tmp_path / "lr.tif"), lr, origin=(X0, Y0), pixel_size=LR_PX, nodata=-1)
    hr_path = write_raster(str(tmp_path / "hr.tif"), hr, origin=(X0, Y0), pixel_size=LR_PX / 4)
    centers_lr = [(10, 10), (11, 12), (30, 30), (31, 29), (20, 20), (1, 1), (39, 5), (25, 5)]
    xy = [(X0 + (c + 0.5) * LR_PX, Y0 - (r + 0.5) * LR_PX) for c, r in centers_lr]
    xy.append((X0 - 1000, Y0))  # outside
    vec = write_points(str(tmp_path / "pts.gpkg"), xy)
    out_lr, out_hr = str(tmp_path / "n_lr.tif"), str(tmp_path / "n_hr.tif")
    with caplog.at_level(logging.INFO):
        assert run_cli(main, ["--lr", lr_path, "--hr", hr_path, "--lr_patchsize", str(S), "--vec", vec,
                              "--hr_nodata", "255", "--out_lr", out_lr, "--out_hr", out_hr]) == 0
    # 0,1: LR nodata; 2,3: HR nodata; 5 (1,1) and 6 (39,5) and the last: outside
    assert "kept 2 patches; skipped 3 outside an image, 4 with nodata" in caplog.text
    assert [c["lr_col"] + S // 2 for c in read_centers(str(tmp_path / "n_lr_centers.gpkg"))] == [20, 25]
    assert (read_patches(out_lr, S) == 7).all() and (read_patches(out_hr, 4 * S) == 9).all()


def test_nan_is_nodata(tmp_path):
    lr = np.ones((W, W, 1), np.float32)
    lr[:, :20] = np.nan
    lr_path = write_raster(str(tmp_path / "lr.tif"), lr, origin=(X0, Y0), pixel_size=LR_PX)
    hr_path = write_raster(str(tmp_path / "hr.tif"), np.ones((4 * W, 4 * W, 1), np.float32), origin=(X0, Y0),
                           pixel_size=LR_PX / 4)
    out_lr, out_hr = str(tmp_path / "lr_p.tif"), str(tmp_path / "hr_p.tif")
    assert run("--lr", lr_path, "--hr", hr_path, "--lr_patchsize", str(S), "--step", str(S),
               "--out_lr", out_lr, "--out_hr", out_hr) == 0
    assert len(read_patches(out_lr, S)) == 5 * 10  # only the right half


def test_max_patches_seed_and_encoding(pair, tmp_path):
    base = ["--lr", pair["lr"], "--hr", pair["hr"], "--lr_patchsize", str(S), "--step", "2"]
    outs = {}
    for name, extra in (("all", []), ("a", ["--max_patches", "10", "--seed", "1"]),
                        ("b", ["--max_patches", "10", "--seed", "1"]),
                        ("c", ["--max_patches", "10", "--seed", "2"])):
        out_lr, out_hr = str(tmp_path / f"{name}_lr.tif"), str(tmp_path / f"{name}_hr.tif")
        assert run(*base, *extra, "--encoding", "uint8", "--out_lr", out_lr, "--out_hr", out_hr) == 0
        centers = read_centers(str(tmp_path / f"{name}_lr_centers.gpkg"))
        outs[name] = [(c["lr_col"], c["lr_row"]) for c in centers]
        if name == "all":
            lr_p, hr_p = read_patches(out_lr, S), read_patches(out_hr, 4 * S)
    assert len(outs["all"]) == 19 * 19
    assert len(outs["a"]) == 10 and outs["a"] == outs["b"] != outs["c"]
    assert set(outs["a"]) <= set(outs["all"]) and outs["a"] == sorted(outs["a"], key=outs["all"].index)
    # --encoding uint8: clipped to [0, 255] then truncated
    assert lr_p.dtype == hr_p.dtype == np.uint8
    col, row = outs["all"][0]
    expected = np.clip(pair["lr_arr"][row:row + S, col:col + S], 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(lr_p[0], expected)


def test_resample_hr(tmp_path):
    lr = np.random.default_rng(3).integers(0, 100, (W, W, 1)).astype(np.float32)
    hr5 = np.repeat(np.repeat(lr, 2, 0), 2, 1)  # 5 m pixels: not LR / 4
    lr_path = write_raster(str(tmp_path / "lr.tif"), lr, origin=(X0, Y0), pixel_size=LR_PX)
    hr_path = write_raster(str(tmp_path / "hr5.tif"), hr5, origin=(X0, Y0), pixel_size=5.0)
    out_lr, out_hr = str(tmp_path / "r_lr.tif"), str(tmp_path / "r_hr.tif")
    args = ["--lr", lr_path, "--hr", hr_path, "--lr_patchsize", str(S), "--step", "5", "--out_lr", out_lr,
            "--out_hr", out_hr]
    assert run(*args) == 2
    assert not os.path.exists(out_lr)
    assert run(*args, "--resample_hr", "--resampling", "nearest") == 0
    lr_p, hr_p = read_patches(out_lr, S), read_patches(out_hr, 4 * S)
    assert len(lr_p) == 8 * 8
    np.testing.assert_array_equal(block_mean(hr_p), lr_p)


def test_help_documents_everything(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for option in ("--lr", "--hr", "--lr_patchsize", "--vec", "--step", "--layer", "--field", "--out_lr",
                   "--out_hr", "--out_centers", "--encoding", "--lr_nodata", "--hr_nodata", "--resample_hr",
                   "--resampling", "--max_patches", "--seed", "--quiet"):
        assert option in text
    assert "half up" in text and "PatchesExtraction" in text and "_centers.gpkg" in text


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, pair) -> dict:
    d = tmp_path_factory.mktemp("bad")
    three = write_raster(str(d / "hr3.tif"), np.zeros((4 * W, 4 * W, 3), np.int16), origin=(X0, Y0),
                         pixel_size=LR_PX / 4)
    hr2 = write_raster(str(d / "hr2m.tif"), np.zeros((5 * W, 5 * W, 2), np.int16), origin=(X0, Y0),
                       pixel_size=2.0)
    shifted = write_raster(str(d / "hr_shift.tif"), np.zeros((4 * W, 4 * W, 2), np.int16),
                           origin=(X0 + 1.0, Y0), pixel_size=LR_PX / 4)
    other_crs = write_raster(str(d / "hr_crs.tif"), np.zeros((4 * W, 4 * W, 2), np.int16), origin=(X0, Y0),
                             pixel_size=LR_PX / 4, epsg=32632)
    polygons = write_points(str(d / "poly.gpkg"), ["POLYGON ((500000 4799900,500100 4799900,500100 4799800,"
                                                   "500000 4799900))"], geom_type=ogr.wkbPolygon)
    outside = write_points(str(d / "out.gpkg"), [(0.0, 0.0)])
    inside = write_points(str(d / "in.gpkg"), [(X0 + 200, Y0 - 200)])
    return {"dir": d, "three": three, "hr2": hr2, "shifted": shifted, "other_crs": other_crs,
            "polygons": polygons, "outside": outside, "inside": inside}


@pytest.mark.parametrize("case, expected", [
    ("missing_lr", "missing.tif: no such file"),
    ("bands", "3 bands"),
    ("pixel_size", "is not"),
    ("grid", "not aligned"),
    ("crs", "CRS differs"),
    ("field", "no field 'nope'"),
    ("layer", "no layer 'nope'"),
    ("polygons", "must be points"),
    ("outside", "no patch to extract"),
    ("encoding", "unknown encoding"),
    ("extension", "use a .tif name"),
    ("out_dir", "does not exist"),
    ("same_out", "are the same file"),
    ("patchsize", "--lr_patchsize must be >= 1"),
    ("missing_vec", "nope.gpkg: no such file"),
])
def test_cli_errors(case, expected, pair, bad_inputs, tmp_path, capsys):
    b = bad_inputs
    out_lr, out_hr = str(tmp_path / "o_lr.tif"), str(tmp_path / "o_hr.tif")
    args = {"--lr": pair["lr"], "--hr": pair["hr"], "--lr_patchsize": str(S), "--vec": b["inside"],
            "--out_lr": out_lr, "--out_hr": out_hr}
    changes = {
        "missing_lr": {"--lr": str(tmp_path / "missing.tif")}, "bands": {"--hr": b["three"]},
        "pixel_size": {"--hr": b["hr2"]}, "grid": {"--hr": b["shifted"]}, "crs": {"--hr": b["other_crs"]},
        "field": {"--field": "nope"}, "layer": {"--layer": "nope"}, "polygons": {"--vec": b["polygons"]},
        "outside": {"--vec": b["outside"]}, "encoding": {"--encoding": "int3"},
        "extension": {"--out_lr": str(tmp_path / "o_lr.png")},
        "out_dir": {"--out_hr": str(tmp_path / "nodir" / "o_hr.tif")}, "same_out": {"--out_hr": out_lr},
        "patchsize": {"--lr_patchsize": "0"}, "missing_vec": {"--vec": str(tmp_path / "nope.gpkg")},
    }
    args.update(changes[case])
    argv = [x for kv in args.items() for x in kv]
    assert run_cli(main, ["--quiet", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert os.listdir(tmp_path) == []  # no output, no temporary file left
    if case == "pixel_size":
        assert "--resample_hr" in err[0] and "hr2m.tif" in err[0]


def test_interrupted_write_leaves_nothing_and_names_the_file(pair, tmp_path, monkeypatch, capsys):
    def boom(*_args, **_kwargs):
        raise RuntimeError("sqlite3_exec failed: database or disk is full")

    monkeypatch.setattr(extract_patches, "_fill_centers", boom)
    assert run("--lr", pair["lr"], "--hr", pair["hr"], "--lr_patchsize", str(S), "--step", "8",
               "--out_lr", str(tmp_path / "a.tif"), "--out_hr", str(tmp_path / "b.tif")) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'a_centers.gpkg'}: writing failed (sqlite3_exec "
                                       "failed: database or disk is full)\n")
    assert os.listdir(tmp_path) == []


def test_outputs_through_symbolic_links_and_hard_links(pair, tmp_path, capsys):
    """A symbolic link output is written through (its target replaced, the link kept); an output that
    is an input under another name is refused."""
    target = tmp_path / "real" / "a.tif"
    target.parent.mkdir()
    target.write_bytes(b"old")
    os.symlink(target, tmp_path / "link.tif")
    base = ["--lr", pair["lr"], "--hr", pair["hr"], "--lr_patchsize", str(S), "--step", "8",
            "--out_hr", str(tmp_path / "b.tif")]
    assert run(*base, "--out_lr", str(tmp_path / "link.tif")) == 0
    assert os.path.islink(tmp_path / "link.tif") and gdal.Open(str(target)).RasterXSize == S
    os.link(pair["hr"], tmp_path / "hr_again.tif")
    before = sorted(os.listdir(tmp_path))
    assert run(*base, "--out_lr", str(tmp_path / "hr_again.tif")) == 2
    assert "would overwrite the input --hr" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == before
