"""Read OTBTF patches images (docs/DESIGN.md §7) as a tf.data pipeline of LR/HR pairs, in memory or streaming.

A patches image stacks N patches of s x s pixels vertically (width s, height N*s). LR and HR lists pair
up file by file and patch by patch; HR patches are SCALE (4) times larger than LR patches.
"""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from osgeo import gdal

from constants import HR_KEY, LR_KEY, SCALE
from errors import SR4RSError
from logs import get_logger
from raster import gdal_errors, numpy_dtype, open_raster

logger = get_logger("datasets")

# Bytes read at once when loading or computing statistics (per file, whole patches).
CHUNK_BYTES = 4 * 2 ** 20
# GDAL block cache cap while streaming (patches are read once per epoch: a big cache only grows RSS).
STREAMING_GDAL_CACHE = 16 * 2 ** 20
# Open GDAL handles kept for streaming reads (one per reader thread and file, least recently used out).
MAX_HANDLES = 256


@dataclass(frozen=True)
class _File:
    """One patches image: path, number of patches, patch size, bands, data type."""

    path: str
    n: int
    size: int
    nbands: int
    dtype: np.dtype


def _describe(path: str) -> _File:
    """Open a patches image and check its shape, or raise SR4RSError naming it."""
    ds = open_raster(path)
    width, height, nbands = ds.RasterXSize, ds.RasterYSize, ds.RasterCount
    dtype = numpy_dtype(ds)
    if np.issubdtype(dtype, np.complexfloating):
        raise SR4RSError(f"{path}: complex data type {dtype} is not supported")
    for b in range(2, nbands + 1):
        if ds.GetRasterBand(b).DataType != ds.GetRasterBand(1).DataType:
            raise SR4RSError(f"{path}: its bands have different data types")
    if height % width:
        raise SR4RSError(f"{path}: not a patches image: its height ({height}) is not a multiple of its "
                         f"width ({width})")
    return _File(path, height // width, width, nbands, dtype)


class _Stats:
    """Per-band min, max, mean and std accumulated over chunks.

    8/16-bit integers: exact histograms (fast, order-independent); other types: Chan et al.'s parallel
    mean/variance in float64.
    """

    def __init__(self, nbands: int, dtype: np.dtype) -> None:
        self.hist = None
        if np.issubdtype(dtype, np.integer) and dtype.itemsize <= 2:
            info = np.iinfo(dtype)
            self.offset = -int(info.min)
            self.hist = np.zeros((nbands, int(info.max) - int(info.min) + 1), np.int64)
        self.count = 0
        self.mean = np.zeros(nbands)
        self.m2 = np.zeros(nbands)
        self.min = np.full(nbands, np.inf)
        self.max = np.full(nbands, -np.inf)

    def update(self, chunk: np.ndarray) -> None:
        """Add a chunk [..., bands]."""
        flat = chunk.reshape(-1, chunk.shape[-1])
        n = flat.shape[0]
        if n == 0:
            return
        if self.hist is not None:
            for b in range(flat.shape[1]):
                self.hist[b] += np.bincount(flat[:, b].astype(np.int32) + self.offset,
                                            minlength=self.hist.shape[1])
            return
        mean, m2 = np.empty(flat.shape[1]), np.empty(flat.shape[1])
        for b in range(flat.shape[1]):
            x = flat[:, b].astype(np.float64)
            mean[b] = x.mean()
            x -= mean[b]
            m2[b] = np.dot(x, x)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.count * n / total)
        self.count = total
        self.min = np.minimum(self.min, flat.min(axis=0).astype(np.float64))
        self.max = np.maximum(self.max, flat.max(axis=0).astype(np.float64))

    def result(self) -> dict:
        """{"min": [...], "max": [...], "mean": [...], "std": [...]} (population std), floats."""
        if self.hist is not None:
            values = np.arange(self.hist.shape[1], dtype=np.float64) - self.offset
            for b, h in enumerate(self.hist):
                nz = np.flatnonzero(h)
                n = h.sum()
                self.min[b], self.max[b] = values[nz[0]], values[nz[-1]]
                self.mean[b] = np.dot(h[nz], values[nz]) / n
                self.m2[b] = np.dot(h[nz], (values[nz] - self.mean[b]) ** 2)
                self.count = n
        std = np.sqrt(self.m2 / max(self.count, 1))
        return {k: [float(v) for v in arr] for k, arr in
                (("min", self.min), ("max", self.max), ("mean", self.mean), ("std", std))}


class _Handles:
    """GDAL datasets for streaming reads: one per (OS thread, file), as GDAL handles are not thread-safe."""

    def __init__(self, capacity: int = MAX_HANDLES) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._handles: OrderedDict[tuple[int, str], gdal.Dataset] = OrderedDict()

    def get(self, path: str) -> gdal.Dataset:
        """A handle on `path` private to the calling thread."""
        key = (threading.get_ident(), path)
        with self._lock:
            ds = self._handles.get(key)
            if ds is not None:
                self._handles.move_to_end(key)
                return ds
        ds = open_raster(path)
        with self._lock:
            self._handles[key] = ds
            while len(self._handles) > self.capacity:  # threads of past epochs: their handles go first
                self._handles.popitem(last=False)
        return ds


def _read_patches(ds: gdal.Dataset, path: str, start: int, count: int, size: int, out: np.ndarray) -> None:
    """Read patches [start, start + count) of a patches image into `out` [count, size, size, bands]."""
    with gdal_errors(f"{path}: read failed"):
        arr = ds.ReadAsArray(0, start * size, size, count * size, interleave="pixel")
    out[...] = arr.reshape(count, size, size, -1)


class PatchesDataset:
    """Pairs of LR/HR patches from lists of OTBTF patches images, as a tf.data pipeline.

    Both modes give the same samples in the same order for a given seed: in memory (everything read
    once into a CPU tf.Variable, epochs are a gather) or streaming (patches read from disk on the fly by
    parallel readers, RAM independent of the dataset size).

    Attributes:
        n_patches: number of patch pairs.
        file_counts: number of patch pairs of each file pair, in order.
        nbands: bands per patch (same in LR and HR).
        lr_patch_size: LR patch size s (HR patches are 4s).
        hr_patch_size: HR patch size.
        dtype: data type of the samples: the files' type (numpy promotion when the files differ).
        lr_stats, hr_stats: per-band {"min", "max", "mean", "std"} (floats) over all patches.
    """

    def __init__(self, lr_files: list[str], hr_files: list[str], streaming: bool = False) -> None:
        """Validate every file up front (SR4RSError naming the file); load them unless streaming.

        Args:
            lr_files: LR patches images.
            hr_files: HR patches images, paired with lr_files file by file and patch by patch.
            streaming: read patches on the fly instead of loading everything in memory.
        """
        lr_files, hr_files = list(lr_files or []), list(hr_files or [])
        if not lr_files or not hr_files:
            raise SR4RSError("no patches images given (need LR and HR patches images)")
        if len(lr_files) != len(hr_files):
            extra = (hr_files[len(lr_files)] if len(hr_files) > len(lr_files) else lr_files[len(hr_files)])
            raise SR4RSError(f"{len(lr_files)} LR patches images but {len(hr_files)} HR patches images "
                             f"({extra} has no pair)")
        self.streaming = streaming
        self._lr = [_describe(p) for p in lr_files]
        self._hr = [_describe(p) for p in hr_files]
        first = self._lr[0]
        for lr, hr in zip(self._lr, self._hr, strict=True):
            if lr.size != first.size:
                raise SR4RSError(f"{lr.path}: patch size {lr.size}, but {first.path} has {first.size}")
            if hr.size != SCALE * lr.size:
                raise SR4RSError(f"{hr.path}: HR patch size {hr.size} is not {SCALE} x the LR patch size "
                                 f"{lr.size} of {lr.path}")
            if hr.n != lr.n:
                raise SR4RSError(f"{hr.path}: {hr.n} patches, but its LR pair {lr.path} has {lr.n}")
            if lr.nbands != first.nbands:
                raise SR4RSError(f"{lr.path}: {lr.nbands} bands, but {first.path} has {first.nbands}")
            if hr.nbands != lr.nbands:
                raise SR4RSError(f"{hr.path}: {hr.nbands} bands, but its LR pair {lr.path} has {lr.nbands}")
        self.file_counts = [f.n for f in self._lr]
        self.n_patches = sum(self.file_counts)
        self.nbands = first.nbands
        self.lr_patch_size = first.size
        self.hr_patch_size = SCALE * first.size
        self.dtype = np.dtype(np.result_type(*[f.dtype for f in self._lr + self._hr]))
        if len({f.dtype for f in self._lr + self._hr}) > 1:
            logger.warning("patches images have different data types: samples are %s", self.dtype)
        self._starts = np.cumsum([0] + [f.n for f in self._lr])  # first global index of each file
        self._wait = 0.0
        self._wait_lock = threading.Lock()
        self._stats: tuple[dict, dict] | None = None
        self._handles = _Handles()
        self._lr_var: tf.Variable | None = None
        self._hr_var: tf.Variable | None = None
        logger.info("%d patch pairs in %d file pair(s): LR %dx%d, HR %dx%d, %d band(s), %s, %s",
                    self.n_patches, len(self._lr), self.lr_patch_size, self.lr_patch_size,
                    self.hr_patch_size, self.hr_patch_size, self.nbands, self.dtype,
                    "streaming" if streaming else "in memory")
        if streaming:
            if "GDAL_CACHEMAX" not in os.environ and gdal.GetCacheMax() > STREAMING_GDAL_CACHE:
                gdal.SetCacheMax(STREAMING_GDAL_CACHE)
        else:
            self._load()

    # -- statistics --------------------------------------------------------------------------------
    @property
    def lr_stats(self) -> dict:
        """Per-band statistics of the LR patches."""
        return self._get_stats()[0]

    @property
    def hr_stats(self) -> dict:
        """Per-band statistics of the HR patches."""
        return self._get_stats()[1]

    def _get_stats(self) -> tuple[dict, dict]:
        if self._stats is None:  # streaming: one chunked pass over the files
            t0 = time.perf_counter()
            acc = []
            for files in (self._lr, self._hr):
                stats = _Stats(self.nbands, self.dtype)
                for _, _, chunk in self._chunks(files):
                    stats.update(chunk)
                acc.append(stats.result())
            self._stats = (acc[0], acc[1])
            self._add_wait(time.perf_counter() - t0)
        return self._stats

    def _chunks(self, files: list[_File]) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield (global index of the first patch, count, patches [count, s, s, C]) file by file; refuse
        a file with non-finite values (NaN, infinity), after reading it whole, naming its patches."""
        for k, f in enumerate(files):
            ds = open_raster(f.path)
            per = max(1, CHUNK_BYTES // (f.size * f.size * f.nbands * f.dtype.itemsize))
            non_finite: list[int] = []
            for start in range(0, f.n, per):
                count = min(per, f.n - start)
                buf = np.empty((count, f.size, f.size, f.nbands), f.dtype)
                _read_patches(ds, f.path, start, count, f.size, buf)
                ds.FlushCache()  # each block is read once: free GDAL's block cache (else RSS ~ dataset)
                if np.issubdtype(f.dtype, np.floating):
                    bad = start + np.flatnonzero(~np.isfinite(buf).all(axis=(1, 2, 3)))
                    non_finite += bad.tolist()
                    if non_finite:
                        continue  # refused below: its statistics are meaningless
                yield int(self._starts[k]) + start, count, buf
            ds = None
            if non_finite:
                shown = ", ".join(map(str, non_finite[:5])) + (", ..." if len(non_finite) > 5 else "")
                raise SR4RSError(f"{f.path}: {len(non_finite)} of its {f.n} patches hold NaN or infinite "
                                 f"values (patch index {shown}, from 0 at the top): a model cannot learn "
                                 "from them; remove them or fill the gaps before extracting patches")

    # -- in memory ----------------------------------------------------------------------------------
    def _load(self) -> None:
        """Read everything into two CPU variables (chunk by chunk: no second copy), with the statistics."""
        t0 = time.perf_counter()
        tf_dtype = tf.as_dtype(self.dtype)
        stats = []
        variables = []
        for name, files, size in (("lr", self._lr, self.lr_patch_size), ("hr", self._hr, self.hr_patch_size)):
            with tf.device("/CPU:0"):
                var = tf.Variable(tf.zeros((self.n_patches, size, size, self.nbands), tf_dtype),
                                  trainable=False, name=f"{name}_patches")
            acc = _Stats(self.nbands, self.dtype)
            for start, count, chunk in self._chunks(files):
                acc.update(chunk)
                # scatter in place (a sliced `assign` would copy the whole variable each time)
                tf.raw_ops.ResourceScatterUpdate(resource=var.handle,
                                                 indices=tf.range(start, start + count, dtype=tf.int64),
                                                 updates=chunk.astype(self.dtype, copy=False))
            stats.append(acc.result())
            variables.append(var)
        self._lr_var, self._hr_var = variables
        self._stats = (stats[0], stats[1])
        seconds = time.perf_counter() - t0
        self._add_wait(seconds)
        logger.info("loaded %d patch pairs in memory in %.1f s", self.n_patches, seconds)

    # -- streaming ----------------------------------------------------------------------------------
    def _add_wait(self, seconds: float) -> None:
        with self._wait_lock:
            self._wait += seconds

    def pop_wait_seconds(self) -> float:
        """Seconds spent reading the file system since the last call (summed over parallel readers).

        In memory: the initial load, reported once. Streaming: the time spent in patch reads during the
        epoch(s) since the last call; compare it with the epoch time times the number of readers.
        """
        with self._wait_lock:
            seconds, self._wait = self._wait, 0.0
        return seconds

    def _read_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Read the LR and HR patches of a batch of global indices (runs in tf.data reader threads)."""
        t0 = time.perf_counter()
        indices = np.asarray(indices, dtype=np.int64)
        files = np.searchsorted(self._starts, indices, side="right") - 1
        out = [np.empty((len(indices), s, s, self.nbands), self.dtype)
               for s in (self.lr_patch_size, self.hr_patch_size)]
        for j, (i, k) in enumerate(zip(indices.tolist(), files.tolist(), strict=True)):
            local = i - int(self._starts[k])
            for f, buf in ((self._lr[k], out[0]), (self._hr[k], out[1])):
                ds = self._handles.get(f.path)
                target = buf[j] if self.nbands > 1 else buf[j, :, :, 0]  # GDAL wants 2-D for one band
                # straight into the batch, converted to the common type by GDAL if needed
                with gdal_errors(f"{f.path}: read failed"):
                    ds.ReadAsArray(0, local * f.size, f.size, f.size, buf_obj=target, interleave="pixel")
        self._add_wait(time.perf_counter() - t0)
        return out[0], out[1]

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The LR and HR patches of some global indices, as numpy arrays in the samples' data type.

        Args:
            indices: global patch indices (0 .. n_patches - 1), in the order wanted.
        """
        indices = np.asarray(indices, dtype=np.int64)
        if self.streaming:
            return self._read_batch(indices)
        return tf.gather(self._lr_var, indices).numpy(), tf.gather(self._hr_var, indices).numpy()

    # -- tf.data ------------------------------------------------------------------------------------
    def tf_dataset(self, batch_size: int, seed: int | None = None, shuffle: bool = True,
                   indices: np.ndarray | None = None, augment: bool = False) -> tf.data.Dataset:
        """One epoch of {"lr": [B, s, s, C], "hr": [B, 4s, 4s, C]} batches in the files' data type.

        Reshuffled on each iteration (deterministic sequence of orders for a given seed, identical in both
        modes), the last incomplete batch dropped, prefetched.

        Args:
            batch_size: samples per batch (at most the number of patches drawn from).
            seed: shuffling (and augmentation) seed (None: random).
            shuffle: False keeps the files' order.
            indices: the global patch indices to draw from (default: all), e.g. the training part when
                some patches are held out for validation.
            augment: apply one of the 8 flips/quarter-turns, drawn at random for each pair, to the LR
                and the HR patch alike.
        """
        indices = np.arange(self.n_patches) if indices is None else np.asarray(indices, dtype=np.int64)
        if batch_size < 1:
            raise SR4RSError(f"the batch size must be >= 1 (got {batch_size})")
        if batch_size > len(indices):
            raise SR4RSError(f"the batch size ({batch_size}) is larger than the number of patches "
                             f"({len(indices)})")
        s, hs, c = self.lr_patch_size, self.hr_patch_size, self.nbands
        tf_dtype = tf.as_dtype(self.dtype)
        ds = tf.data.Dataset.from_tensor_slices(indices)
        if shuffle:
            ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=True)  # batches of indices: the same in both modes
        if self.streaming:
            def read(indices: tf.Tensor) -> dict:
                lr, hr = tf.numpy_function(self._read_batch, [indices], [tf_dtype, tf_dtype], stateful=True)
                lr.set_shape((batch_size, s, s, c))
                hr.set_shape((batch_size, hs, hs, c))
                return {LR_KEY: lr, HR_KEY: hr}

            ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        else:
            lr_var, hr_var = self._lr_var, self._hr_var

            def gather(indices: tf.Tensor) -> dict:
                return {LR_KEY: tf.gather(lr_var, indices), HR_KEY: tf.gather(hr_var, indices)}

            ds = ds.map(gather)
        if augment:
            # one stateless seed per batch: the same transforms in both modes, for a given seed
            seeds = tf.data.Dataset.random(seed=seed).batch(2)
            ds = tf.data.Dataset.zip((ds, seeds)).map(dihedral_augment)
        return ds.prefetch(tf.data.AUTOTUNE)


def dihedral_augment(batch: dict[str, tf.Tensor], seed: tf.Tensor) -> dict[str, tf.Tensor]:
    """Each LR/HR pair turned by the same random element of the dihedral group (4 quarter-turns, with or
    without a left-right flip): 8 equally likely transforms, drawn per pair from a stateless seed."""
    lr, hr = batch[LR_KEY], batch[HR_KEY]
    draws = tf.random.stateless_uniform([tf.shape(lr)[0]], seed=seed, maxval=8, dtype=tf.int32)

    def transform(args: tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        lr_patch, hr_patch, draw = args
        pair = [tf.image.rot90(p, draw % 4) for p in (lr_patch, hr_patch)]
        flipped = [tf.image.flip_left_right(p) for p in pair]
        return tuple(tf.where(draw >= 4, f, p) for f, p in zip(flipped, pair, strict=True))

    lr, hr = tf.map_fn(transform, (lr, hr, draws), fn_output_signature=(lr.dtype, hr.dtype))
    return {LR_KEY: lr, HR_KEY: hr}
