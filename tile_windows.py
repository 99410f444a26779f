"""The window arithmetic of the built-in engine (docs/DESIGN.md §9) on integers and arrays only: the
output tiles, the LR window of each (its pad/4 margin included, mirrored beyond the image), and the crop
of a model output back to its tile. No GDAL and no threads: tiler.py reads, runs and writes.

Every tile is computed at the same size (so that tiles stack into batches) from the LR window of
(tile + 2*pad)/4 pixels centred on it, through `output_<pad>`, which drops `pad` HR pixels on every
side; the last tiles of a row or a column are cropped to the image when written.
"""
from __future__ import annotations

import dataclasses

import numpy as np

import constants


@dataclasses.dataclass(frozen=True)
class Tile:
    """One output tile.

    Attributes:
        x: HR column of its first pixel.
        y: HR row of its first pixel.
        width: HR columns written: the grid's tile width, less in the last column of tiles.
        height: HR rows written: the grid's tile height, less in the last row of tiles.
    """

    x: int
    y: int
    width: int
    height: int

    def crop(self, hr: np.ndarray) -> np.ndarray:
        """The part of a tile-sized array [rows, cols, ...] that lies inside the image.

        Args:
            hr: a model output or a mask, [tile height, tile width, ...] of the grid.
        """
        return hr[:self.height, :self.width]


@dataclasses.dataclass(frozen=True)
class Window:
    """An LR window, which may leave the image: columns [x0, x0 + width), rows [y0, y0 + height).

    Attributes:
        x0: first column (negative beyond the left border).
        y0: first row (negative beyond the top border).
        width: columns.
        height: rows.
    """

    x0: int
    y0: int
    width: int
    height: int


def mirror_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices [start, stop) folded into [0, size) by symmetric mirroring: ... 1 0 | 0 1 ... n-1 | n-1 ...,
    as `np.pad(mode="symmetric")`, for any distance from the image.

    Args:
        start: first index (may be negative).
        stop: end index (may be beyond size).
        size: the axis length.
    """
    idx = np.mod(np.arange(start, stop), 2 * size)
    return np.where(idx >= size, 2 * size - 1 - idx, idx)


def hr_mask(own: np.ndarray, tile: Tile) -> np.ndarray:
    """A mask of a tile's own LR pixels [rows, cols, ...] -> its HR mask: each value over its 4 x 4 HR
    pixels, cropped to the image.

    Args:
        own: the mask of the tile's LR pixels (see TileGrid.inner).
        tile: the tile.
    """
    return tile.crop(np.repeat(np.repeat(own, constants.SCALE, 0), constants.SCALE, 1))


@dataclasses.dataclass(frozen=True)
class TileGrid:
    """The tiles of the HR output (4 times the pixels) of an LR image, and their LR windows.

    Attributes:
        lr_width: input columns.
        lr_height: input rows.
        ts: tile size (HR pixels, a multiple of 4).
        pad: margin (HR pixels, a multiple of 4).
    """

    lr_width: int
    lr_height: int
    ts: int
    pad: int

    @property
    def width(self) -> int:
        """HR columns of the output."""
        return constants.SCALE * self.lr_width

    @property
    def height(self) -> int:
        """HR rows of the output."""
        return constants.SCALE * self.lr_height

    @property
    def tile_width(self) -> int:
        """HR columns every tile is computed with: ts, or the output's width when smaller."""
        return min(self.ts, self.width)

    @property
    def tile_height(self) -> int:
        """HR rows every tile is computed with."""
        return min(self.ts, self.height)

    @property
    def margin(self) -> int:
        """LR pixels added on every side of a tile's own LR pixels: pad/4."""
        return self.pad // constants.SCALE

    def tiles(self, area: Tile | None = None) -> list[Tile]:
        """The tiles, row by row, covering every output pixel once.

        Args:
            area: only the tiles of this part of the output (one of parts()); None: all of them.
        """
        tw, th = self.tile_width, self.tile_height
        x0, y0, x1, y1 = (0, 0, self.width, self.height) if area is None else \
            (area.x, area.y, area.x + area.width, area.y + area.height)
        return [Tile(x, y, min(tw, self.width - x), min(th, self.height - y))
                for y in range(y0, y1, th) for x in range(x0, x1, tw)]

    def parts(self, size: int) -> list[Tile]:
        """The output cut into parts of whole tiles, row by row: rectangles of about `size` HR pixels a
        side (rounded up to whole tiles, cropped to the image), which tiles(part) computes exactly as the
        whole image's run does.

        Args:
            size: HR pixels a side.
        """
        pw = -(-max(size, 1) // self.tile_width) * self.tile_width
        ph = -(-max(size, 1) // self.tile_height) * self.tile_height
        return [Tile(x, y, min(pw, self.width - x), min(ph, self.height - y))
                for y in range(0, self.height, ph) for x in range(0, self.width, pw)]

    def window(self, tile: Tile) -> Window:
        """The LR window a tile is computed from: its own LR pixels and `margin` more on every side.

        Args:
            tile: one of tiles().
        """
        m = self.margin
        return Window(tile.x // constants.SCALE - m, tile.y // constants.SCALE - m,
                      self.tile_width // constants.SCALE + 2 * m, self.tile_height // constants.SCALE + 2 * m)

    def window_indices(self, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
        """Rows and columns of the image that make a tile's LR window, mirrored at the borders:
        `image[np.ix_(rows, cols)]` is the window.

        Args:
            tile: one of tiles().
        """
        w = self.window(tile)
        return (mirror_indices(w.y0, w.y0 + w.height, self.lr_height),
                mirror_indices(w.x0, w.x0 + w.width, self.lr_width))

    def inner(self, window: np.ndarray) -> np.ndarray:
        """A tile's own LR pixels in its window [rows, cols, ...]: the margins dropped.

        Args:
            window: an array of a window's shape (e.g. its validity).
        """
        m = self.margin
        return window[m:window.shape[0] - m, m:window.shape[1] - m]
