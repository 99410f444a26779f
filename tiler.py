"""Built-in inference engine (GDAL + TensorFlow): the whole input extent, 4 times the pixels, in tiles.

The tiles and their LR windows come from `tile_windows.TileGrid` (OTB TensorflowModelServe's
arithmetic, mirrored beyond the image borders); this module reads the windows, runs the model and
writes the tiles:

    reader thread: GDAL reads, nodata fill  ->  main thread: the model  ->  writer thread: rounding,
    clamping, nodata, GDAL writes

with at most `QUEUE_DEPTH` batches waiting on each side, so memory stays bounded.
"""
from __future__ import annotations

import collections
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tqdm
from osgeo import gdal

import constants
from inference_settings import UNMARKED_INVALID, InferenceSettings
from logs import get_logger
from raster import (
    atomic_output,
    close_dataset,
    create_geotiff,
    gdal_errors,
    numpy_type_of,
    open_raster,
    read_window,
    to_encoding,
    write_window,
)
from sr_model import Signature, inspect_savedmodel
from tile_windows import Tile, TileGrid, hr_mask

logger = get_logger("tiler")

QUEUE_DEPTH = 2


class _Job:
    """One run: the input, the output, its tiles, and the read and write of a batch of tiles.

    Args:
        src: the input image.
        dst: the output being written: the whole image, or the part `area` of it.
        settings: the run's settings.
        area: the part of the output `dst` holds (one of TileGrid.parts()); None: the whole output.
    """

    def __init__(self, src: gdal.Dataset, dst: gdal.Dataset, settings: InferenceSettings,
                 area: Tile | None = None):
        self.src, self.dst, self.s = src, dst, settings
        self.grid = TileGrid(src.RasterXSize, src.RasterYSize, settings.ts, settings.pad)
        self.tiles = self.grid.tiles(area)
        self.origin = (0, 0) if area is None else (area.x, area.y)
        self.dtype = numpy_type_of(settings.gdal_type)
        self.unmarked_invalid = False

    def read(self, tiles: list[Tile]) -> tuple[np.ndarray, np.ndarray]:
        """LR windows of the tiles, invalid pixels filled [N, h, w, bands], and validity of each
        tile's own LR pixels [N, th/4, tw/4, bands]."""
        lr, valid = [], []
        for tile in tiles:
            window, ok = self.s.filled(read_window(self.src, *self.grid.window_indices(tile)))
            lr.append(window)
            valid.append(self.grid.inner(ok))
        return np.stack(lr), np.stack(valid)

    def write(self, tiles: list[Tile], hr: np.ndarray, valid: np.ndarray) -> None:
        """Write a batch of model outputs [N, th, tw, bands], cropped to the image."""
        for tile, pixels, own in zip(tiles, hr, valid, strict=True):
            ok = hr_mask(own, tile)
            self.unmarked_invalid |= self.s.out_nodata is None and not ok.all()
            encoded = to_encoding(tile.crop(pixels), ok, self.dtype, self.s.out_nodata)
            write_window(self.dst, encoded, tile.x - self.origin[0], tile.y - self.origin[1],
                         f"{self.s.output}: writing failed")

    def close(self) -> None:
        """Flush and close the output, even when the flush fails (a full disk gives one error, not a
        second one when Python drops the dataset)."""
        dst, self.dst = self.dst, None
        message = f"{self.s.output}: writing failed"
        try:
            with gdal_errors(message):
                dst.FlushCache()
        finally:
            close_dataset(dst, message)


def create_output(path: str, src: gdal.Dataset, settings: InferenceSettings,
                  area: Tile | None = None) -> gdal.Dataset:
    """The output GeoTIFF: 4 times the input's pixels over the same extent (or the part `area` of it),
    same CRS and band metadata.

    Args:
        path: the file to create.
        src: the input image.
        settings: output type, nodata, creation options.
        area: the part of the output to create (HR pixels); None: all of it.
    """
    gt, k = src.GetGeoTransform(can_return_null=True), constants.SCALE
    if area is None:
        area = Tile(0, 0, k * src.RasterXSize, k * src.RasterYSize)
    # an input without georeferencing gives an output without
    hr_gt = None if gt is None else (gt[0] + (area.x * gt[1] + area.y * gt[2]) / k, gt[1] / k, gt[2] / k,
                                     gt[3] + (area.x * gt[4] + area.y * gt[5]) / k, gt[4] / k, gt[5] / k)
    return create_geotiff(path, src, (area.width, area.height), settings.gdal_type,
                          settings.creation_options, hr_gt, settings.out_nodata)


def _pipeline(job: _Job, signature: Signature, progress: tqdm.tqdm) -> float:
    """Read ahead, infer, write behind; returns the number of HR pixels written."""
    batch = job.s.batch
    batches = [job.tiles[i:i + batch] for i in range(0, len(job.tiles), batch)]
    start, done = time.perf_counter(), 0
    with ThreadPoolExecutor(1, "sr-read") as reader, ThreadPoolExecutor(1, "sr-write") as writer:
        reads = collections.deque(reader.submit(job.read, b) for b in batches[:QUEUE_DEPTH])
        writes: collections.deque = collections.deque()
        for i, tiles in enumerate(batches):
            lr, valid = reads.popleft().result()
            if i + QUEUE_DEPTH < len(batches):
                reads.append(reader.submit(job.read, batches[i + QUEUE_DEPTH]))
            writes.append(writer.submit(job.write, tiles, signature(lr), valid))
            while len(writes) > QUEUE_DEPTH:
                writes.popleft().result()
            done += sum(tile.width * tile.height for tile in tiles)
            progress.update(len(tiles))
            progress.set_postfix_str(f"{done / 1e6 / (time.perf_counter() - start):.2f} HR Mpx/s")
        for pending in writes:
            pending.result()
    return done


def write_part(settings: InferenceSettings, signature: Signature, area: Tile, path: str) -> bool:
    """Super-resolve one part of the output into its own GeoTIFF `path` (written under a temporary name,
    renamed on success), with exactly the values the whole image's run gives there.

    Args:
        settings: the run's settings (its `output` names the whole output, for messages).
        signature: the loaded model.
        area: the part, one of TileGrid.parts().
        path: the part's file.

    Returns:
        whether some invalid input pixels could not be marked as nodata (see UNMARKED_INVALID).
    """
    src = open_raster(settings.input)
    with atomic_output(path) as tmp:
        job = _Job(src, create_output(tmp, src, settings, area), settings, area)
        try:
            _pipeline(job, signature, tqdm.tqdm(disable=True))
        finally:
            job.close()
    return job.unmarked_invalid


def run(settings: InferenceSettings) -> None:
    """Super-resolve `settings.input` with the SavedModel into `settings.output` (written under a
    temporary name, renamed on success), over the whole input extent.

    Args:
        settings: paths, tile size, margin, encoding, nodata, fill values, creation options, batch,
            progress.
    """
    src = open_raster(settings.input)
    signature = Signature(inspect_savedmodel(settings.savedmodel), settings.pad)
    start = time.perf_counter()
    with atomic_output(settings.output) as tmp:
        job = _Job(src, create_output(tmp, src, settings), settings)
        grid, window = job.grid, job.grid.window(job.tiles[0])
        logger.info("%s x %s HR pixels in %s tile(s) of %s x %s (LR windows of %s x %s), %s per batch",
                    grid.width, grid.height, len(job.tiles), grid.tile_width, grid.tile_height, window.width,
                    window.height, settings.batch)
        progress = tqdm.tqdm(total=len(job.tiles), unit="tile", disable=settings.quiet, leave=False)
        try:
            done = _pipeline(job, signature, progress)
        finally:
            progress.close()
            job.close()
    if job.unmarked_invalid:
        logger.warning(UNMARKED_INVALID)
    logger.info("%s written (%.2f HR Mpx/s)", settings.output, done / 1e6 / (time.perf_counter() - start))
