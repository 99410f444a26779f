"""Side-by-side PNG quicklooks (Pillow): the same crop of several images, one common colour stretch
(2-98% of the reference), first 3 bands as RGB, a label above each panel.

Pillow is imported only when a PNG is drawn (`require_pillow`): the OTBTF Docker image may have none,
and `stretch` and `GAP` (used during training) need only numpy."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from errors import SR4RSError
from raster import atomic_output

if TYPE_CHECKING:
    from PIL import Image

CROP = 256  # crop size (pixels of the images) and size of the panels
STRETCH = (2.0, 98.0)  # percentiles of the reference mapped to 0 and 255
MAX_ZOOM = 4  # a small crop is enlarged (nearest neighbour) by up to this factor
GAP = 8  # white pixels between panels
LABEL_HEIGHT = 24  # white band above the panels, for the labels
FONT_SIZES = (16, 14, 12, 10, 8)  # the largest one whose label fits in its panel is used


def stretch(images: Sequence[np.ndarray], reference: np.ndarray, mask: np.ndarray | None = None,
            percentiles: tuple[float, float] = STRETCH) -> list[np.ndarray]:
    """8-bit RGB renderings of images with one linear stretch per band, taken from the reference's
    percentiles (first 3 bands; a single band is shown in grey).

    Args:
        images: arrays [rows, cols, bands] with the reference's bands.
        reference: [rows, cols, bands], whose valid pixels set the stretch.
        mask: True where valid (None: every pixel); invalid pixels are drawn black.
        percentiles: the reference's percentiles mapped to 0 and 255.

    Returns:
        one uint8 array [rows, cols, 3] per image.
    """
    bands = [0, 1, 2] if reference.shape[2] >= 3 else [0, 0, 0]
    valid = reference[mask] if mask is not None and mask.any() else reference.reshape(-1, reference.shape[2])
    out = []
    lows, highs = np.nanpercentile(valid[:, bands], percentiles, axis=0)
    highs = np.where(highs > lows, highs, lows + 1)
    for image in images:
        scaled = (image[:, :, bands].astype(np.float64) - lows) / (highs - lows)
        rgb = np.clip(np.nan_to_num(scaled) * 255 + 0.5, 0, 255).astype(np.uint8)
        if mask is not None:
            rgb[~mask] = 0
        out.append(rgb)
    return out


def detailed_crop(reference: np.ndarray, mask: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner (row, col) of a size x size crop with more detail than most: the crop (stride
    size / 4) whose reference gradient energy is the closest to the 75th percentile of all crops.
    Chosen on the reference only, so the choice favours none of the compared images.

    Args:
        reference: [rows, cols, bands].
        mask: True where valid (invalid pixels add no detail).
        size: crop size.
    """
    rows, cols = mask.shape
    if rows <= size and cols <= size:
        return 0, 0
    grey = np.nan_to_num(reference.astype(np.float64).mean(axis=2))
    grad = np.zeros_like(grey)
    grad[:, 1:] += np.abs(np.diff(grey, axis=1))
    grad[1:, :] += np.abs(np.diff(grey, axis=0))
    grad[~mask] = 0
    integral = np.pad(grad.cumsum(axis=0).cumsum(axis=1), ((1, 0), (1, 0)))
    h, w = min(size, rows), min(size, cols)
    scores = integral[h:, w:] - integral[:-h, w:] - integral[h:, :-w] + integral[:-h, :-w]
    step = max(1, size // 4)
    scores = scores[::step, ::step]
    target = np.percentile(scores, 75)
    r, c = np.unravel_index(int(np.argmin(np.abs(scores - target))), scores.shape)
    return int(r) * step, int(c) * step


def require_pillow(what: str = "a PNG quicklook") -> None:
    """Check that Pillow can be imported, e.g. before a long computation whose result is drawn.

    Args:
        what: what needs Pillow, for the error message (e.g. a command-line option).

    Raises:
        SR4RSError: "<what> needs Pillow (pip install pillow)" when it cannot.
    """
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        raise SR4RSError(f"{what} needs Pillow (pip install pillow)") from None


def side_by_side(panels: Sequence[np.ndarray], labels: Sequence[str] | None = None) -> Image.Image:
    """Panels of the same height in a row, GAP white pixels apart, with their labels above them.

    Args:
        panels: uint8 arrays [rows, cols, 3].
        labels: one text per panel, drawn in a white band of LABEL_HEIGHT pixels (None: no band).
    """
    require_pillow()
    from PIL import Image

    top = LABEL_HEIGHT if labels is not None else 0
    width = sum(p.shape[1] for p in panels) + GAP * (len(panels) - 1)
    canvas = Image.new("RGB", (width, panels[0].shape[0] + top), "white")
    x = 0
    for i, panel in enumerate(panels):
        canvas.paste(Image.fromarray(panel), (x, top))
        if labels is not None:
            canvas.paste(_label(labels[i], panel.shape[1]), (x, 0))
        x += panel.shape[1] + GAP
    return canvas


def _label(text: str, width: int) -> Image.Image:
    """`text` in black on a white band `width` x LABEL_HEIGHT, in Pillow's default font at the largest
    of FONT_SIZES that fits (a text too long even so is cut at the band's edge)."""
    from PIL import Image, ImageDraw, ImageFont  # side_by_side checked that Pillow is there

    band = Image.new("RGB", (width, LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(band)
    for size in FONT_SIZES:
        font = ImageFont.load_default(size=size)
        if draw.textlength(text, font=font) <= width - 4:
            break
    _, ink_top, _, ink_bottom = draw.textbbox((0, 0), text, font=font)
    draw.text((2, (LABEL_HEIGHT - ink_top - ink_bottom) // 2), text, fill="black", font=font)
    return band


def write_png(path: str, image: Image.Image) -> None:
    """Write an image as a PNG, atomically.

    Args:
        path: output file.
        image: the Pillow image.
    """
    with atomic_output(path) as tmp:
        image.save(tmp, format="PNG")


def quicklook_image(panels: Sequence[tuple[str, np.ndarray]], reference: np.ndarray, mask: np.ndarray,
                    size: int = CROP) -> Image.Image:
    """Side by side, the same detailed crop of each image, one stretch (the reference's) for all, labels
    above (write it with `write_png`).

    Args:
        panels: (label, image [rows, cols, bands]) pairs, left to right, on the reference's grid.
        reference: [rows, cols, bands], which sets the crop and the stretch.
        mask: [rows, cols], True where every image is valid.
        size: crop size; a smaller crop (small images) is enlarged up to MAX_ZOOM times.
    """
    r, c = detailed_crop(reference, mask, size)
    crop = (slice(r, r + size), slice(c, c + size))
    rgbs = stretch([image[crop] for _, image in panels], reference[crop], mask[crop])
    rows, cols = mask[crop].shape
    zoom = max(1, min(MAX_ZOOM, size // max(rows, cols)))
    zoomed = [np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1) for rgb in rgbs]
    return side_by_side(zoomed, [label for label, _ in panels])
