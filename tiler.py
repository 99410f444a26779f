"""Built-in inference engine (GDAL + TensorFlow): the whole input extent, 4 times the pixels, in tiles.

Each output tile of tw x th HR pixels is computed from the LR window of (tw + 2*pad)/4 x (th + 2*pad)/4
pixels centred on it, through the model output `output_<pad>` (cropped by `pad` HR pixels on every
side): the arithmetic of OTB's TensorflowModelServe, so tiles join seamlessly when `pad` covers the
model's receptive field. Outside the image the LR window is mirrored (symmetric: the edge pixel is
repeated), and the output keeps only what lies inside the image.

    reader thread: GDAL reads, nodata fill  ->  main thread: the model  ->  writer thread: rounding,
    clamping, nodata, GDAL writes

with at most `QUEUE_DEPTH` batches waiting on each side, so memory stays bounded.
"""
from __future__ import annotations

import collections
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tqdm
from osgeo import gdal

import constants
from logs import get_logger
from raster import (
    atomic_output,
    copy_band_metadata,
    gdal_errors,
    numpy_type_of,
    open_raster,
    read_array,
    valid_mask,
)
from sr_model import Signature

logger = get_logger("tiler")

QUEUE_DEPTH = 2


@dataclasses.dataclass(frozen=True)
class Settings:
    """How to run the built-in engine.

    Attributes:
        ts: tile size (HR pixels, multiple of 4).
        pad: margin (HR pixels): the model output `output_<pad>` is used.
        gdal_type: output GDAL data type.
        nodata: input nodata value (None: only NaN is invalid).
        out_nodata: output nodata value written and declared (None: none).
        fill: per-band value that replaces invalid input pixels before inference.
        creation_options: GeoTIFF creation options.
        batch: tiles per model call.
        quiet: no progress bar.
    """

    ts: int
    pad: int
    gdal_type: int
    nodata: float | None
    out_nodata: float | None
    fill: tuple[float, ...]
    creation_options: dict[str, str]
    batch: int = 1
    quiet: bool = False


def mirror_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices [start, stop) folded into [0, size) by symmetric mirroring: ... 1 0 | 0 1 ... n-1 | n-1 ...

    Args:
        start: first index (may be negative).
        stop: end index (may be beyond size).
        size: the axis length.
    """
    idx = np.mod(np.arange(start, stop), 2 * size)
    return np.where(idx >= size, 2 * size - 1 - idx, idx)


def read_window(ds: gdal.Dataset, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """An LR window [height, width, bands] that may leave the image, mirrored at the borders.

    Args:
        ds: the input image.
        x0: first column (may be negative).
        y0: first row (may be negative).
        width: columns.
        height: rows.
    """
    cols = mirror_indices(x0, x0 + width, ds.RasterXSize)
    rows = mirror_indices(y0, y0 + height, ds.RasterYSize)
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
    """One run: the input, the output grid, its tiles, and the read and write of a batch of tiles."""

    def __init__(self, src: gdal.Dataset, dst: gdal.Dataset, settings: Settings, output: str):
        self.src, self.dst, self.s, self.output = src, dst, settings, output
        self.width, self.height = dst.RasterXSize, dst.RasterYSize
        self.tw, self.th = min(settings.ts, self.width), min(settings.ts, self.height)
        self.tiles = [(x, y) for y in range(0, self.height, self.th) for x in range(0, self.width, self.tw)]
        self.dtype = numpy_type_of(settings.gdal_type)
        self.unmarked_invalid = False

    def read(self, tiles: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """LR windows of the tiles, invalid pixels filled [N, h, w, bands], and validity of each
        tile's own LR pixels [N, th/4, tw/4, bands]."""
        m = self.s.pad // constants.SCALE
        lr, valid = [], []
        for x, y in tiles:
            window = read_window(self.src, x // constants.SCALE - m, y // constants.SCALE - m,
                                 self.tw // constants.SCALE + 2 * m, self.th // constants.SCALE + 2 * m)
            ok = valid_mask(window, self.s.nodata)
            lr.append(np.where(ok, window, np.asarray(self.s.fill, np.float32)).astype(np.float32))
            valid.append(ok[m:-m, m:-m])
        return np.stack(lr), np.stack(valid)

    def write(self, tiles: list[tuple[int, int]], hr: np.ndarray, valid: np.ndarray) -> None:
        """Write a batch of model outputs [N, th, tw, bands], cropped to the image."""
        for (x, y), tile, ok in zip(tiles, hr, valid, strict=True):
            w, h = min(self.tw, self.width - x), min(self.th, self.height - y)
            ok = np.repeat(np.repeat(ok, constants.SCALE, 0), constants.SCALE, 1)[:h, :w]
            self.unmarked_invalid |= self.s.out_nodata is None and not ok.all()
            pixels = to_encoding(tile[:h, :w], ok, self.dtype, self.s.out_nodata)
            with gdal_errors(f"{self.output}: writing failed"):
                self.dst.WriteArray(np.moveaxis(pixels, -1, 0), x, y)

    def close(self) -> None:
        """Flush and close the output (GDAL closes a dataset when its last reference goes)."""
        dst, self.dst = self.dst, None
        with gdal_errors(f"{self.output}: writing failed"):
            dst.FlushCache()


def create_output(path: str, src: gdal.Dataset, settings: Settings) -> gdal.Dataset:
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


def _pipeline(job: _Job, signature: Signature, batch: int, progress: tqdm.tqdm) -> float:
    """Read ahead, infer, write behind; returns the number of HR pixels written."""
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
            done += sum(min(job.tw, job.width - x) * min(job.th, job.height - y) for x, y in tiles)
            progress.update(len(tiles))
            progress.set_postfix_str(f"{done / 1e6 / (time.perf_counter() - start):.2f} HR Mpx/s")
        for pending in writes:
            pending.result()
    return done


def run(input_path: str, signature: Signature, output: str, settings: Settings) -> None:
    """Super-resolve `input_path` into `output` (written under a temporary name, renamed on success).

    Args:
        input_path: the LR image.
        signature: the loaded model.
        output: the output GeoTIFF path.
        settings: tile size, margin, encoding, nodata, creation options, batch, progress.
    """
    src = open_raster(input_path)
    start = time.perf_counter()
    with atomic_output(output) as tmp:
        job = _Job(src, create_output(tmp, src, settings), settings, output)
        margin = 2 * settings.pad // constants.SCALE
        logger.info("%s x %s HR pixels in %s tile(s) of %s x %s (LR windows of %s x %s), %s per batch",
                    job.width, job.height, len(job.tiles), job.tw, job.th, job.tw // constants.SCALE + margin,
                    job.th // constants.SCALE + margin, settings.batch)
        progress = tqdm.tqdm(total=len(job.tiles), unit="tile", disable=settings.quiet, leave=False)
        try:
            done = _pipeline(job, signature, settings.batch, progress)
        finally:
            progress.close()
            job.close()
    if job.unmarked_invalid:
        logger.warning("the input has NaN pixels and the output type has no nodata value: their output "
                       "pixels hold model values from the filled input (give --nodata to mark them)")
    logger.info("%s written (%.2f HR Mpx/s)", output, done / 1e6 / (time.perf_counter() - start))
