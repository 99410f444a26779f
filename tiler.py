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
from inference_settings import InferenceSettings
from logs import get_logger
from raster import (
    atomic_output,
    close_dataset,
    copy_band_metadata,
    gdal_errors,
    numpy_type_of,
    open_raster,
    read_array,
    valid_mask,
)
from sr_model import Signature, inspect_savedmodel
from tile_windows import Tile, TileGrid, hr_mask

logger = get_logger("tiler")

QUEUE_DEPTH = 2


def read_window(ds: gdal.Dataset, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The pixels [rows, cols, bands] at the given image rows and columns (see
    TileGrid.window_indices), read as the bounding box of those indices.

    Args:
        ds: the input image.
        rows: image rows, in [0, ds.RasterYSize).
        cols: image columns, in [0, ds.RasterXSize).
    """
    c0, r0 = int(cols.min()), int(rows.min())
    block = read_array(ds, c0, r0, int(cols.max()) - c0 + 1, int(rows.max()) - r0 + 1)
    return block[np.ix_(rows - r0, cols - c0)]


def to_encoding(hr: np.ndarray, valid: np.ndarray, dtype: np.dtype, out_nodata: float | None) -> np.ndarray:
    """Model output -> output pixels: integers rounded and clamped to the type's range; invalid pixels
    set to the output nodata (valid integer pixels that land on it are moved by one).

    Args:
        hr: model output [rows, cols, bands], float32.
        valid: True where the output comes from a valid input pixel.
        dtype: output numpy type.
        out_nodata: output nodata value, or None.
    """
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        hr = np.clip(np.rint(hr), info.min, info.max)
        if out_nodata is not None:
            hr[valid & (hr == out_nodata)] = out_nodata + (1 if out_nodata < info.max else -1)
    if out_nodata is not None:
        hr = np.where(valid, hr, out_nodata)
    return hr.astype(dtype)


class _Job:
    """One run: the input, the output, its tiles, and the read and write of a batch of tiles.

    Args:
        src: the input image.
        dst: the output being written.
        settings: the run's settings.
    """

    def __init__(self, src: gdal.Dataset, dst: gdal.Dataset, settings: InferenceSettings):
        self.src, self.dst, self.s = src, dst, settings
        self.grid = TileGrid(src.RasterXSize, src.RasterYSize, settings.ts, settings.pad)
        self.tiles = self.grid.tiles()
        self.dtype = numpy_type_of(settings.gdal_type)
        self.unmarked_invalid = False

    def read(self, tiles: list[Tile]) -> tuple[np.ndarray, np.ndarray]:
        """LR windows of the tiles, invalid pixels filled [N, h, w, bands], and validity of each
        tile's own LR pixels [N, th/4, tw/4, bands]."""
        lr, valid = [], []
        for tile in tiles:
            window = read_window(self.src, *self.grid.window_indices(tile))
            ok = valid_mask(window, self.s.nodata)
            lr.append(np.where(ok, window, np.asarray(self.s.fill, np.float32)).astype(np.float32))
            valid.append(self.grid.inner(ok))
        return np.stack(lr), np.stack(valid)

    def write(self, tiles: list[Tile], hr: np.ndarray, valid: np.ndarray) -> None:
        """Write a batch of model outputs [N, th, tw, bands], cropped to the image."""
        for tile, pixels, own in zip(tiles, hr, valid, strict=True):
            ok = hr_mask(own, tile)
            self.unmarked_invalid |= self.s.out_nodata is None and not ok.all()
            encoded = to_encoding(tile.crop(pixels), ok, self.dtype, self.s.out_nodata)
            with gdal_errors(f"{self.s.output}: writing failed"):
                self.dst.WriteArray(np.moveaxis(encoded, -1, 0), tile.x, tile.y)

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


def create_output(path: str, src: gdal.Dataset, settings: InferenceSettings) -> gdal.Dataset:
    """The output GeoTIFF: 4 times the input's pixels over the same extent, same CRS and band metadata.

    Args:
        path: the file to create.
        src: the input image.
        settings: output type, nodata, creation options.
    """
    options = [f"{key}={value}" for key, value in settings.creation_options.items()]
    with gdal_errors(f"{path}: cannot create the output"):
        dst = gdal.GetDriverByName("GTiff").Create(path, src.RasterXSize * constants.SCALE,
                                                   src.RasterYSize * constants.SCALE, src.RasterCount,
                                                   settings.gdal_type, options)
    gt = src.GetGeoTransform(can_return_null=True)
    if gt is not None:  # an image without georeferencing gives one without
        dst.SetGeoTransform((gt[0], gt[1] / constants.SCALE, gt[2] / constants.SCALE,
                             gt[3], gt[4] / constants.SCALE, gt[5] / constants.SCALE))
    if src.GetProjection():
        dst.SetProjection(src.GetProjection())
    copy_band_metadata(src, dst)
    if settings.out_nodata is not None:
        for b in range(1, dst.RasterCount + 1):
            dst.GetRasterBand(b).SetNoDataValue(settings.out_nodata)
    return dst


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


def run(settings: InferenceSettings) -> None:
    """Super-resolve `settings.input` with the SavedModel into `settings.output` (written under a
    temporary name, renamed on success), over the whole input extent.

    Args:
        settings: paths, tile size, margin, encoding, nodata, fill values, creation options, batch,
            progress (the OTB extended filename options are ignored, with a warning).
    """
    if settings.extended:
        logger.warning("extended filename options ignored by the built-in engine: %s",
                       "&".join(settings.extended))
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
        logger.warning("the input has NaN pixels and the output type has no nodata value: their output "
                       "pixels hold model values from the filled input (give --nodata to mark them)")
    logger.info("%s written (%.2f HR Mpx/s)", settings.output, done / 1e6 / (time.perf_counter() - start))
