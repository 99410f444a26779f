"""The window arithmetic of the built-in engine (tile_windows.py) on integers and in-memory arrays, no
GDAL: the tiles cover the output once, each LR window is centred on its tile with the pad/4 margin, the
mirroring is numpy's symmetric pad, and the whole chain with numpy 'models' gives the one-pass result."""
from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

from tile_windows import Tile, TileGrid, Window, hr_mask, mirror_indices

# LR sizes (1 pixel; partial last tiles; exact multiples; windows larger than the image) x tile sizes x pads.
GRIDS = [TileGrid(w, h, ts, pad) for (w, h), ts, pad in
         itertools.product([(1, 1), (13, 9), (16, 8), (37, 5)], [4, 16, 52, 512], [32, 64, 128])]


def region(tile: Tile) -> tuple[slice, slice]:
    """The rows and columns of the HR output that a tile writes."""
    return slice(tile.y, tile.y + tile.height), slice(tile.x, tile.x + tile.width)


def x4(array: np.ndarray) -> np.ndarray:
    """Nearest-neighbour x4 of [rows, cols, ...]."""
    return np.repeat(np.repeat(array, 4, 0), 4, 1)


def nearest_model(window: np.ndarray, pad: int) -> np.ndarray:
    """An exact x4 nearest-neighbour 'model' in numpy: output_<pad> of an LR window."""
    hr = x4(window)
    return hr[pad:hr.shape[0] - pad, pad:hr.shape[1] - pad]


def box_model(window: np.ndarray, pad: int) -> np.ndarray:
    """A 'model' that mixes neighbours: 3 x 3 LR box sums (1 LR pixel of context on each side), x4,
    output_<pad>."""
    h, w = window.shape[0] - 2, window.shape[1] - 2
    summed = sum(window[i:i + h, j:j + w] for i in range(3) for j in range(3))
    return nearest_model(summed, pad - 4)


def assemble(grid: TileGrid, image: np.ndarray, model: Callable[[np.ndarray, int], np.ndarray]) -> np.ndarray:
    """The HR output of `model` on `image`, tile by tile, with the functions of tile_windows only."""
    out = np.zeros((grid.height, grid.width, *image.shape[2:]), image.dtype)
    for tile in grid.tiles():
        hr = model(image[np.ix_(*grid.window_indices(tile))], grid.pad)
        assert hr.shape[:2] == (grid.tile_height, grid.tile_width)
        out[region(tile)] = tile.crop(hr)
    return out


def test_tiles_of_a_small_grid():
    grid = TileGrid(5, 3, 8, 32)  # HR 20 x 12
    assert grid.tiles() == [Tile(0, 0, 8, 8), Tile(8, 0, 8, 8), Tile(16, 0, 4, 8),
                            Tile(0, 8, 8, 4), Tile(8, 8, 8, 4), Tile(16, 8, 4, 4)]
    assert TileGrid(5, 3, 512, 64).tiles() == [Tile(0, 0, 20, 12)]
    assert grid.window(Tile(8, 8, 8, 4)) == Window(2 - 8, 2 - 8, 2 + 16, 2 + 16)


@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_tiles_cover_every_output_pixel_once(grid):
    count = np.zeros((grid.height, grid.width), int)
    tiles = grid.tiles()
    assert tiles == sorted(tiles, key=lambda t: (t.y, t.x))
    for tile in tiles:
        assert tile.x % grid.tile_width == 0 and tile.y % grid.tile_height == 0
        assert 0 < tile.width <= grid.tile_width and 0 < tile.height <= grid.tile_height
        count[region(tile)] += 1
    assert (count == 1).all()


@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_parts_are_whole_tiles_and_cover_the_output_once(grid):
    """region.py's parts: each part's tiles are the whole grid's tiles in it, and they add up to all tiles."""
    size = 2 * grid.tile_width + 1  # three tiles a side, except at the edges
    parts, tiles = grid.parts(size), []
    count = np.zeros((grid.height, grid.width), int)
    for part in parts:
        count[region(part)] += 1
        assert part.x % grid.tile_width == 0 and part.y % grid.tile_height == 0
        assert part.width >= min(size, grid.width - part.x) and part.height >= min(size, grid.height - part.y)
        inside = grid.tiles(part)
        assert all(part.x <= tile.x < part.x + part.width and part.y <= tile.y < part.y + part.height
                   for tile in inside)
        tiles += inside
    assert (count == 1).all()
    assert sorted(tiles, key=lambda t: (t.y, t.x)) == grid.tiles()


@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_each_window_is_centred_on_its_tile_with_a_pad_margin(grid):
    for tile in grid.tiles():
        w = grid.window(tile)
        # in HR pixels: from pad before the tile to pad after its computed (uncropped) extent
        assert (4 * w.x0, 4 * (w.x0 + w.width)) == (tile.x - grid.pad, tile.x + grid.tile_width + grid.pad)
        assert (4 * w.y0, 4 * (w.y0 + w.height)) == (tile.y - grid.pad, tile.y + grid.tile_height + grid.pad)


@pytest.mark.parametrize("size", [1, 2, 5, 8])
def test_mirror_indices_are_numpys_symmetric_pad(size):
    far = 3 * size + 5  # windows that start or end beyond one mirrored copy of the image
    padded = np.pad(np.arange(size), far, mode="symmetric")
    for start in range(-far, size):
        for stop in range(start + 1, size + far + 1):
            np.testing.assert_array_equal(mirror_indices(start, stop, size), padded[start + far:stop + far])


@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_window_indices_give_the_symmetric_padded_window_and_its_inner_part(grid):
    image = np.arange(grid.lr_height * grid.lr_width).reshape(grid.lr_height, grid.lr_width)
    far = grid.margin + grid.ts // 4  # the window of a partial last tile leaves the image further
    padded = np.pad(image, far, mode="symmetric")
    for tile in grid.tiles():
        w = grid.window(tile)
        window = image[np.ix_(*grid.window_indices(tile))]
        np.testing.assert_array_equal(window, padded[w.y0 + far:w.y0 + far + w.height,
                                                     w.x0 + far:w.x0 + far + w.width])
        y, x = tile.y // 4 + far, tile.x // 4 + far
        np.testing.assert_array_equal(grid.inner(window),
                                      padded[y:y + grid.tile_height // 4, x:x + grid.tile_width // 4])


@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_nearest_model_tile_by_tile_is_np_repeat(grid):
    image = np.random.default_rng(0).integers(0, 1000, (grid.lr_height, grid.lr_width, 2))
    np.testing.assert_array_equal(assemble(grid, image, nearest_model), x4(image))


@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_a_model_with_context_is_seamless_and_mirrored_at_the_borders(grid):
    image = np.random.default_rng(1).integers(0, 1000, (grid.lr_height, grid.lr_width))
    m = grid.margin
    whole = box_model(np.pad(image, m, mode="symmetric"), grid.pad)  # one pass over the mirrored image
    assert whole.shape == (grid.height, grid.width)
    np.testing.assert_array_equal(assemble(grid, image, box_model), whole)


@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_hr_masks_of_the_inner_pixels_make_the_x4_mask(grid):
    holes = np.random.default_rng(2).random((grid.lr_height, grid.lr_width, 3)) < 0.3
    out = np.zeros((grid.height, grid.width, 3), bool)
    for tile in grid.tiles():
        mask = hr_mask(grid.inner(holes[np.ix_(*grid.window_indices(tile))]), tile)
        assert mask.shape == (tile.height, tile.width, 3)
        out[region(tile)] = mask
    np.testing.assert_array_equal(out, x4(holes))
