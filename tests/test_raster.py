"""raster.py (GDAL helpers: opening, outputs, creation options) and the CLI boundary (cli.py)."""
import errno
import os
import stat
import subprocess
import zipfile

import numpy as np
import pytest
from helpers import write_raster
from osgeo import gdal

import raster
from cli import ArgumentParser, run_cli
from errors import SR4RSError


def test_open_raster_names_the_file(tmp_path):
    with pytest.raises(SR4RSError, match="missing.tif: no such file"):
        raster.open_raster(str(tmp_path / "missing.tif"))
    (tmp_path / "text.tif").write_text("not an image")
    with pytest.raises(SR4RSError, match="text.tif: not a readable raster"):
        raster.open_raster(str(tmp_path / "text.tif"))


def test_read_array_is_rows_cols_bands_in_the_file_type(tmp_path):
    image = np.arange(3 * 4 * 2, dtype=np.uint16).reshape(3, 4, 2)
    ds = raster.open_raster(write_raster(str(tmp_path / "a.tif"), image))
    np.testing.assert_array_equal(raster.read_array(ds), image)
    np.testing.assert_array_equal(raster.read_array(ds, 1, 1, 2, 2), image[1:3, 1:3])
    assert raster.numpy_dtype(ds) == np.uint16


@pytest.mark.parametrize("name, gdal_type", [
    ("short", gdal.GDT_Int16), ("int16", gdal.GDT_Int16), ("unsigned_short", gdal.GDT_UInt16),
    ("float", gdal.GDT_Float32), ("UINT8", gdal.GDT_Byte), ("double", gdal.GDT_Float64)])
def test_encodings_accept_otb_and_gdal_names(name, gdal_type):
    assert raster.gdal_type(name) == gdal_type


def test_unknown_encoding_is_refused():
    with pytest.raises(SR4RSError, match="unknown encoding 'int12'"):
        raster.gdal_type("int12")


def test_atomic_output_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = str(tmp_path / "out.tif")
    with pytest.raises(RuntimeError):
        with raster.atomic_output(target) as tmp:
            write_raster(tmp, np.zeros((2, 2), np.uint8))
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []
    with raster.atomic_output(target) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and tmp != target
        write_raster(tmp, np.zeros((2, 2), np.uint8))
    assert os.listdir(tmp_path) == ["out.tif"]
    with pytest.raises(SR4RSError, match="the output directory .* does not exist"):
        with raster.atomic_output(str(tmp_path / "nope" / "out.tif")):
            pass


def test_the_parts_a_killed_run_left_are_removed_by_the_next(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = raster.part_owner().rsplit("-", 1)[0]
    stale = [f".out.{host}-{dead.pid}.abc123.part.tif", f".out.{host}-{dead.pid}.abc123.part.tif.aux.xml"]
    kept = [f".out.{host}-{os.getppid()}.def456.part.tif",  # a running process's
            f".out.otherhost-{dead.pid}.ghi789.part.tif",  # another machine's, on a shared file system
            f".other.{host}-{dead.pid}.jkl012.part.tif"]  # another output's
    for name in stale + kept:
        (tmp_path / name).write_text("partial")
    (tmp_path / f".out.{host}-{dead.pid}.mno345.part.scratch").mkdir()  # OTB's scratch folder
    with raster.atomic_output(str(tmp_path / "out.tif")) as tmp:
        assert os.path.basename(tmp).startswith(f".out.{raster.part_owner()}.")
        gdal.GetDriverByName("GTiff").Create(tmp, 2, 2, 1)
    assert sorted(os.listdir(tmp_path)) == sorted(kept + ["out.tif"])


def test_statistics_of_a_replaced_file_do_not_survive(tmp_path):
    target = str(tmp_path / "out.tif")
    write_raster(target, np.full((4, 4), 7, np.uint8))
    gdal.Info(target, stats=True)  # writes out.tif.aux.xml with its statistics
    assert os.path.exists(target + ".aux.xml")
    with raster.atomic_output(target) as tmp:
        write_raster(tmp, np.zeros((4, 4), np.uint8))
    assert not os.path.exists(target + ".aux.xml")


def test_srs_from_wkt_uses_x_y_order():
    srs = raster.srs_from_wkt(gdal.osr.SpatialReference(gdal.osr.SRS_WKT_WGS84_LAT_LONG).ExportToWkt())
    assert srs.GetAxisMappingStrategy() == gdal.osr.OAMS_TRADITIONAL_GIS_ORDER
    assert raster.srs_from_wkt("") is None


def test_system_errors_are_one_line_messages(capsys):
    def main(argv):
        raise PermissionError(13, "Permission denied", "/opt/out.tif")

    assert run_cli(main, []) == 2
    assert capsys.readouterr().err == "error: /opt/out.tif: permission denied\n"


def test_grid_of_a_north_up_image(tmp_path):
    path = write_raster(str(tmp_path / "a.tif"), np.zeros((3, 5), np.uint8), (100.0, 200.0), 2.5)
    ds = raster.open_raster(path)
    grid = raster.Grid.of(ds, "a.tif")
    assert (grid.x0, grid.y0, grid.px, grid.py, grid.width, grid.height) == (100.0, 200.0, 2.5, -2.5, 5, 3)
    assert grid.bounds() == (100.0, 192.5, 112.5, 200.0)
    assert grid.centre(2.0, 1.0) == (105.0, 197.5)
    assert grid.srs.GetAuthorityCode(None) == "32631"


@pytest.mark.parametrize("geotransform, message", [
    (None, "the image has no georeferencing"),
    ((100.0, 2.5, 0.1, 200.0, 0.0, -2.5), "only north-up images are supported"),
    ((100.0, 2.5, 0.0, 200.0, 0.0, 2.5), "only north-up images are supported"),
])
def test_grid_of_refuses_images_without_a_north_up_geotransform(tmp_path, geotransform, message):
    ds = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "x.tif"), 4, 4, 1)
    if geotransform:
        ds.SetGeoTransform(geotransform)
    with pytest.raises(SR4RSError, match=f"^the image x: {message}"):
        raster.Grid.of(ds, "the image x")


def test_dilate_grows_by_a_square():
    rng = np.random.default_rng(0)
    mask = rng.random((9, 12)) > 0.93
    for radius in (1, 2):
        expected = np.zeros_like(mask)
        for r, c in zip(*np.nonzero(mask), strict=True):
            expected[max(0, r - radius):r + radius + 1, max(0, c - radius):c + radius + 1] = True
        np.testing.assert_array_equal(raster.dilate(mask, radius), expected)
    assert mask.any() and not raster.dilate(np.zeros((3, 3), bool), 2).any()


def test_read_sample_is_a_decimated_rows_cols_bands_read(tmp_path):
    image = np.arange(40 * 20 * 2, dtype=np.int16).reshape(40, 20, 2)
    ds = raster.open_raster(write_raster(str(tmp_path / "a.tif"), image))
    sample = raster.read_sample(ds, max_size=10)
    assert sample.shape == (10, 5, 2) and sample.dtype == np.int16
    np.testing.assert_array_equal(sample, image[2::4, 2::4])  # nearest: the pixels under the centres
    np.testing.assert_array_equal(raster.read_sample(ds, max_size=100), image)


# --- dataset names, outputs that are not files, links, full disks --------------------------------

def test_gdal_dataset_names_are_opened_by_gdal(tmp_path):
    tif = write_raster(str(tmp_path / "a.tif"), np.arange(6, dtype=np.uint8).reshape(2, 3))
    assert raster.open_raster(f"GTIFF_DIR:1:{tif}").RasterXSize == 3
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        z.write(tif, "inside/a.tif")
    zipped = raster.open_raster(f"/vsizip/{tmp_path / 'a.zip'}/inside/a.tif")
    assert raster.read_array(zipped).shape == (2, 3, 1)
    # A special name GDAL cannot open gets GDAL's reason, not "no such file".
    with pytest.raises(SR4RSError, match=r"GTIFF_DIR:1:/nope.tif: not a readable raster \(.+\)"):
        raster.open_raster("GTIFF_DIR:1:/nope.tif")
    with pytest.raises(SR4RSError, match="missing.tif: no such file"):
        raster.open_raster(str(tmp_path / "missing.tif"))


@pytest.mark.parametrize("name, plain", [
    ("a.tif", True), ("/data/S2 10m.tif", True), ("./x:y.tif", True),
    ('NETCDF:"f.nc":var', False), ("HDF5:f.h5://group/data", False), ("GTIFF_DIR:1:f.tif", False),
    ("/vsizip/a.zip/f.tif", False), ("https://example.org/f.tif", False),
])
def test_plain_paths_and_gdal_names(name, plain):
    assert raster.is_plain_path(name) == plain
    if not plain and not name.startswith("https"):
        with pytest.raises(SR4RSError, match="not a readable raster"):  # GDAL's word, not "no such file"
            raster.open_raster(name)


def file_kinds(tmp_path) -> dict[str, str]:
    """Outputs that exist and are not files: a directory, a FIFO, a character device (as root)."""
    kinds = {"a directory": str(tmp_path / "folder"), "a FIFO": str(tmp_path / "fifo")}
    os.mkdir(kinds["a directory"])
    os.mkfifo(kinds["a FIFO"])
    try:
        os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
        kinds["a character device"] = str(tmp_path / "null")
    except PermissionError:  # not root: no device test
        pass
    return kinds


def test_outputs_that_are_not_files_are_refused(tmp_path):
    for kind, path in file_kinds(tmp_path).items():
        os.symlink(path, tmp_path / "link")
        for name in (path, str(tmp_path / "link")):
            with pytest.raises(SR4RSError, match=f"exists and is {kind}, not a file"):
                raster.check_output_path(name)
            with pytest.raises(SR4RSError, match=f"exists and is {kind}, not a file"):
                with raster.atomic_output(name):
                    pass
        os.remove(tmp_path / "link")
        assert not stat.S_ISREG(os.stat(path).st_mode)  # untouched


def test_a_symbolic_link_output_writes_its_target(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "out.tif"
    target.write_bytes(b"old")
    os.symlink(target, tmp_path / "link.tif")
    os.symlink(tmp_path / "real" / "new.tif", tmp_path / "dangling.tif")
    for link, real in (("link.tif", target), ("dangling.tif", tmp_path / "real" / "new.tif")):
        assert raster.check_output_path(str(tmp_path / link)) == str(real)
        with raster.atomic_output(str(tmp_path / link)) as tmp:
            assert os.path.dirname(tmp) == str(tmp_path / "real")
            write_raster(tmp, np.zeros((2, 2), np.uint8))
        assert os.path.islink(tmp_path / link) and gdal.Open(str(real)).RasterXSize == 2
    assert sorted(os.listdir(tmp_path / "real")) == ["new.tif", "out.tif"]


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder no one can write in, root included (immutable, chattr +i); skipped without chattr."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder read-only for root here (chattr +i failed)")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_an_output_in_a_read_only_folder_is_permission_denied(read_only_dir):
    with pytest.raises(SR4RSError, match="out.tif: permission denied"):
        raster.check_output_path(str(read_only_dir / "out.tif"))


def test_outputs_equal_to_inputs_or_to_each_other_are_refused(tmp_path):
    a = write_raster(str(tmp_path / "a.tif"), np.zeros((2, 2), np.uint8))
    os.symlink(a, tmp_path / "sym.tif")
    os.link(a, tmp_path / "hard.tif")
    for alias in (a, str(tmp_path / "sym.tif"), str(tmp_path / "hard.tif"), str(tmp_path / "." / "a.tif")):
        with pytest.raises(SR4RSError, match="--out would overwrite the input --in"):
            raster.check_outputs({"--out": alias}, {"--in": a, "--other": None})
    out = str(tmp_path / "o.json")
    os.symlink(out, tmp_path / "o_link.json")
    with pytest.raises(SR4RSError, match="--b and --a are the same file"):
        raster.check_outputs({"--a": out, "--b": str(tmp_path / "o_link.json")}, {"--in": a})
    raster.check_outputs({"--a": out, "--b": str(tmp_path / "q.png"), "--c": None}, {"--in": a})


def test_a_system_error_while_writing_names_the_output_and_leaves_nothing(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(SR4RSError, match=f"^{target}: writing failed \\(no space left on device\\)$"):
        with raster.atomic_output(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write("new")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert os.listdir(tmp_path) == ["out.json"] and target.read_text() == "old"


@pytest.mark.parametrize("options, message", [
    ({"COMPRESS": "FOO"}, "'FOO' is an unexpected value for COMPRESS"),
    ({"NOPE": "1"}, "does not support creation option NOPE"),
    ({"TILED": "YES", "BLOCKXSIZE": "7"}, "Bad value 7"),
    ({"PREDICTOR": "9"}, "PREDICTOR=9 is not supported"),
])
def test_bad_creation_options_are_refused(options, message):
    with pytest.raises(SR4RSError, match=f"^bad GeoTIFF creation option: .*{message}"):
        raster.check_creation_options(options, gdal.GDT_Int16)
    raster.check_creation_options({"COMPRESS": "ZSTD", "TILED": "YES", "BLOCKXSIZE": "256"}, gdal.GDT_Int16)
    assert gdal.ReadDirRecursive("/vsimem/") in (None, [])  # the check leaves nothing in memory


def test_usage_errors_are_one_line(capsys):
    parser = ArgumentParser(prog="tool.py")
    parser.add_argument("--n", type=int, required=True)
    assert run_cli(lambda argv: parser.parse_args(argv), ["--n", "x"]) == 2
    assert capsys.readouterr().err == "error: argument --n: invalid int value: 'x' (see tool.py --help)\n"


def test_to_encoding_rounds_clamps_and_marks_nodata():
    hr = np.array([[[2.5], [3.5], [-7.6], [70000.0], [0.2], [np.nan]]], np.float32)
    valid = np.array([[[True]] * 5 + [[False]]])
    out = raster.to_encoding(hr, valid, np.dtype(np.uint16), 0.0)
    assert out.dtype == np.uint16
    assert out[0, :, 0].tolist() == [2, 4, 0 + 1, 65535, 0 + 1, 0]  # valid zeros moved off nodata 0
    out = raster.to_encoding(hr[:, :5], valid[:, :5], np.dtype(np.int16), None)
    assert out[0, :, 0].tolist() == [2, 4, -8, 32767, 0]
    out = raster.to_encoding(hr, valid, np.dtype(np.float32), float("nan"))
    np.testing.assert_array_equal(out[0, :5, 0], hr[0, :5, 0])
    assert np.isnan(out[0, 5, 0])


@pytest.mark.parametrize("options, size, max_values", [
    (["TILED=YES", "BLOCKXSIZE=32", "BLOCKYSIZE=16"], (100, 70), 2000), (["TILED=YES"], (300, 40), 1 << 22),
    ([], (50, 130), 600)])
def test_block_windows_cover_the_image_once_by_whole_blocks(tmp_path, options, size, max_values):
    ds = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "a.tif"), *size, 3, gdal.GDT_Int16, options)
    bx, by = ds.GetRasterBand(1).GetBlockSize()
    covered = np.zeros(size[::-1], int)
    for x, y, w, h in raster.block_windows(ds, max_values):
        assert x % bx == 0 and y % by == 0
        assert (w % bx == 0 or x + w == size[0]) and (h % by == 0 or y + h == size[1])
        assert w * h * 3 <= max(max_values, bx * by * 3 * max(1, 64 // by))
        covered[y:y + h, x:x + w] += 1
    assert (covered == 1).all()
