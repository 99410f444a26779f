"""quicklook.py: the side-by-side PNG (layout, common stretch, labels), read back with Pillow; without
Pillow, the stretch still works and `evaluate.py --png` stops at once with a clear error."""
from __future__ import annotations

import importlib
import os
import sys

import numpy as np
import pytest
from helpers import write_raster
from PIL import Image

import quicklook
from cli import run_cli
from errors import SR4RSError


def scene(size: int = 64, bands: int = 4) -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size].astype(float)
    base = 1000 + 500 * np.sin(x / 4.0) * np.cos(y / 6.0)
    return base[..., np.newaxis] * rng.uniform(0.5, 1.5, bands) + rng.normal(0, 20, (size, size, bands))


def test_panels_side_by_side_with_labels(tmp_path):
    ref = scene()
    changed = ref.copy()
    changed[10:20, 30:40] += 400  # brighter in one place only
    mask = np.ones(ref.shape[:2], dtype=bool)
    path = str(tmp_path / "q.png")
    panels = [("same", ref.copy()), ("changed", changed), ("HR reference", ref)]
    quicklook.write_png(path, quicklook.quicklook_image(panels, ref, mask))
    assert os.listdir(tmp_path) == ["q.png"]  # no temporary left
    with Image.open(path) as png:
        assert png.format == "PNG" and png.mode == "RGB"
        canvas = np.asarray(png)
    side, top, gap = 64 * 4, quicklook.LABEL_HEIGHT, quicklook.GAP  # 64-pixel crops enlarged 4 times
    assert canvas.shape == (top + side, 3 * side + 2 * gap, 3)
    panels = [canvas[top:, i * (side + gap):i * (side + gap) + side] for i in range(3)]
    assert (canvas[top:, side:side + gap] == 255).all()  # white gaps
    np.testing.assert_array_equal(panels[0], panels[2])  # same image, same stretch: same pixels
    differs = (panels[1] != panels[2]).any(axis=2)
    assert differs[10 * 4:20 * 4, 30 * 4:40 * 4].mean() > 0.5  # where the images differ
    differs[10 * 4:20 * 4, 30 * 4:40 * 4] = False
    assert not differs.any()  # nowhere else
    assert panels[2].std() > 20
    for i in range(3):  # a dark label on white above each panel
        label = canvas[:top, i * (side + gap):i * (side + gap) + side]
        assert (label < 128).any() and (label == 255).mean() > 0.5


def test_stretch_is_the_references_and_masked_pixels_are_black():
    ref = scene(32, 3)
    mask = np.ones(ref.shape[:2], dtype=bool)
    mask[:4] = False
    ref[:4] = 1e6  # outside the mask: must not move the stretch
    darker, same = quicklook.stretch([ref * 0.5, ref], ref, mask)
    valid = ref[mask]
    low, high = np.percentile(valid, quicklook.STRETCH, axis=0)
    expected = np.clip((ref[mask] - low) / (high - low) * 255 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(same[mask], expected)
    assert (same[~mask] == 0).all() and (darker[~mask] == 0).all()
    assert darker[mask].mean() < same[mask].mean() - 50
    grey = quicklook.stretch([ref[:, :, :1]], ref[:, :, :1])[0]  # one band: grey
    assert grey.shape == (32, 32, 3) and (grey[..., 0] == grey[..., 2]).all()


def test_side_by_side_without_labels_has_no_label_band():
    panels = [np.zeros((10, 7, 3), np.uint8), np.full((10, 5, 3), 100, np.uint8)]
    canvas = np.asarray(quicklook.side_by_side(panels))
    assert canvas.shape == (10, 7 + quicklook.GAP + 5, 3)
    assert (canvas[:, :7] == 0).all() and (canvas[:, 7:7 + quicklook.GAP] == 255).all()
    assert (canvas[:, -5:] == 100).all()


def ink_columns(canvas: np.ndarray) -> np.ndarray:
    """The columns of the label band where something is drawn."""
    return np.nonzero((canvas[:quicklook.LABEL_HEIGHT] < 128).any(axis=(0, 2)))[0]


def test_a_long_label_gets_a_smaller_font_and_stays_over_its_panel():
    text = "HR reference, PSNR 99.99 dB"
    wide = ink_columns(np.asarray(quicklook.side_by_side([np.zeros((40, 400, 3), np.uint8)], [text])))
    narrow = ink_columns(np.asarray(quicklook.side_by_side([np.zeros((40, 150, 3), np.uint8)], [text])))
    assert narrow[-1] < 148 and narrow[-1] - narrow[0] < wide[-1] - wide[0]  # smaller, and it fits
    tiny = np.zeros((40, 30, 3), np.uint8)
    columns = ink_columns(np.asarray(quicklook.side_by_side([tiny, tiny], [text, "SR"])))
    assert not ((columns >= 30) & (columns < 30 + quicklook.GAP)).any()  # cut, not spilling over


@pytest.mark.parametrize("rows, cols", [(64, 64), (600, 700)])
def test_detailed_crop_stays_inside_the_image(rows, cols):
    ref = np.zeros((rows, cols, 1))
    detail = ref[rows // 2:, cols // 2:]
    detail[:] = np.random.default_rng(1).normal(0, 1, detail.shape)
    r, c = quicklook.detailed_crop(ref, np.ones((rows, cols), dtype=bool), 256)
    assert 0 <= r <= max(0, rows - 256) and 0 <= c <= max(0, cols - 256)
    if rows > 256:  # the detail is in the bottom-right quarter: the crop overlaps it
        assert r + 256 > rows // 2 and c + 256 > cols // 2


@pytest.fixture
def without_pillow(monkeypatch):
    """Pillow unimportable (as in an OTBTF image without it); quicklook and evaluate are imported afresh
    by the test and the originals put back afterwards."""
    for name in [m for m in sys.modules if m == "PIL" or m.startswith("PIL.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "PIL", None)
    for name in ("quicklook", "evaluate"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(ImportError):
        import PIL  # noqa: F401


def test_without_pillow_the_stretch_works_and_drawing_says_what_is_missing(without_pillow):
    fresh = importlib.import_module("quicklook")
    assert fresh is not quicklook
    ref = scene(16, 3)
    (rgb,) = fresh.stretch([ref], ref)
    np.testing.assert_array_equal(rgb, quicklook.stretch([ref], ref)[0])
    assert fresh.GAP == quicklook.GAP
    with pytest.raises(SR4RSError, match=r"^a PNG quicklook needs Pillow \(pip install pillow\)$"):
        fresh.side_by_side([rgb])


def test_without_pillow_evaluate_png_fails_before_reading_anything(without_pillow, tmp_path, capsys):
    evaluate = importlib.import_module("evaluate")
    out, png = tmp_path / "m.json", tmp_path / "q.png"
    args = ["--sr", str(tmp_path / "missing_sr.tif"), "--ref", str(tmp_path / "missing_hr.tif"),
            "--out", str(out), "--png", str(png)]
    assert run_cli(evaluate.main, args) == 2  # checked first: the missing inputs are not even opened
    assert capsys.readouterr().err == "error: --png needs Pillow (pip install pillow)\n"
    assert not os.listdir(tmp_path)
    with pytest.raises(SR4RSError, match="needs Pillow"):
        evaluate.evaluate(args[1], args[3], png=str(png))


def test_without_pillow_evaluate_without_png_works(without_pillow, tmp_path):
    evaluate = importlib.import_module("evaluate")
    hr = (scene(32, 3) * 4).astype(np.int16)
    path = write_raster(str(tmp_path / "hr.tif"), hr, pixel_size=2.5)
    out = tmp_path / "m.json"
    assert run_cli(evaluate.main, ["--sr", path, "--ref", path, "--out", str(out)]) == 0
    assert out.exists()
