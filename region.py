"""sr.py over a large region on a Dask cluster (`--workers N` or `--scheduler ADDRESS`).

The output is cut into parts of whole tiles (TileGrid.parts, `--part_size` HR pixels a side); each part
is a Dask task that a worker process computes with the built-in engine (tiler.write_part: the same tiles,
the same LR windows as the single-process run, so the same values, bit for bit) into its own GeoTIFF in
the parts folder `<output>.parts/`. A part is written under a temporary name and renamed when complete,
so a rerun of the same command computes only the parts that are missing (after a crash, Ctrl-C, or a
killed machine); a run with other settings starts the parts again. Dask reschedules the tasks of a
worker that dies. When every part is there they become the output: one GeoTIFF (or COG) copied from the
parts, after which the parts folder is removed, or, for an output named `*.vrt`, a VRT of the parts,
which stay.

The workers import SR4RS's modules and read the inputs and the SavedModel by their absolute names, and
write in the parts folder: on a cluster of several machines they need SR4RS installed and a shared file
system.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import os
import shutil
import time
import uuid

import tqdm
from osgeo import gdal

from errors import SR4RSError
from inference_settings import UNMARKED_INVALID, InferenceSettings
from logs import get_logger, native_start_up
from raster import atomic_output, close_dataset, copy_metadata, gdal_errors, open_raster
from tile_windows import Tile, TileGrid

logger = get_logger("region")

MANIFEST = "manifest.json"
INPUTS_FOLDER = "inputs"
DEFAULT_PART_SIZE = 4096
CONNECT_TIMEOUT = "30s"


@dataclasses.dataclass(frozen=True)
class ClusterOptions:
    """Where the parts are computed.

    Attributes:
        workers: worker processes of a local Dask cluster (--workers), or None.
        scheduler: address of a running Dask scheduler (--scheduler), or None.
        part_size: HR pixels a side of a part (rounded up to whole tiles).
        precision: "float32" or "bfloat16" (precision.choose_precision), set in every worker.
    """

    workers: int | None
    scheduler: str | None
    part_size: int = DEFAULT_PART_SIZE
    precision: str = "float32"


def parts_folder(output: str) -> str:
    """The folder of the parts of `output`: `<output>.parts`, beside it."""
    return os.path.abspath(output) + ".parts"


def inputs_folder(output: str) -> str:
    """Where the VRTs of the inputs (band selections, products, mosaics) are written for the workers to
    read: in the parts folder, created if needed."""
    folder = os.path.join(parts_folder(output), INPUTS_FOLDER)
    shutil.rmtree(folder, ignore_errors=True)  # a previous run's VRTs: written again, identically
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise SR4RSError(f"{output}: cannot create the parts folder {folder} ({err.strerror})") from None
    return folder


def part_name(area: Tile) -> str:
    """The file name of a part: `part_<row>_<column>.tif` (its first HR pixel)."""
    return f"part_{area.y:07d}_{area.x:07d}.tif"


def manifest(settings: InferenceSettings, options: ClusterOptions, src: gdal.Dataset) -> dict:
    """What the parts depend on: a rerun with the same manifest reuses the finished parts (`src`: the
    opened input)."""
    model = os.path.join(settings.savedmodel, "saved_model.pb")
    stat = os.stat(model)
    return {"input": settings.input, "input_size": [src.RasterXSize, src.RasterYSize, src.RasterCount],
            "input_geotransform": list(src.GetGeoTransform()),
            "savedmodel": os.path.abspath(settings.savedmodel),
            "savedmodel_stamp": [stat.st_size, stat.st_mtime_ns], "ts": settings.ts, "pad": settings.pad,
            "part_size": options.part_size, "gdal_type": settings.gdal_type, "nodata": repr(settings.nodata),
            "out_nodata": repr(settings.out_nodata), "fill": list(settings.fill), "batch": settings.batch,
            "creation_options": settings.creation_options, "precision": options.precision}


def prepare_parts(folder: str, wanted: dict) -> None:
    """Keep the finished parts of a previous run with the same manifest; remove them otherwise.

    Args:
        folder: the parts folder.
        wanted: this run's manifest.
    """
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path) as f:
            previous = json.load(f)
    except (OSError, ValueError):
        previous = None
    parts = [name for name in os.listdir(folder) if name.startswith("part_") and name.endswith(".tif")]
    if previous != wanted and parts:
        logger.warning("%s: %s part(s) of a run with other settings removed", folder, len(parts))
        for name in parts:
            os.remove(os.path.join(folder, name))
    with atomic_output(path) as tmp, open(tmp, "w") as f:
        json.dump(wanted, f, indent=1)


_WORKER_MODELS: dict = {}  # per worker process: (savedmodel, pad, precision) -> Signature


def gpu_slot(worker_name: object, gpus: int) -> int | None:
    """The GPU a worker of a local cluster takes: its number (LocalCluster names them 0, 1, ...) modulo the
    GPUs, so that N workers on N GPUs take one each; None without GPUs or for another worker name.

    Args:
        worker_name: the Dask worker's name.
        gpus: the GPUs the worker sees.
    """
    if gpus == 0 or not str(worker_name).isdigit():
        return None
    return int(worker_name) % gpus


def _setup_worker(threads: int | None, one_gpu_each: bool) -> None:
    """Before a worker's first model: its TensorFlow threads, and on a local cluster with GPUs, the one GPU
    it uses (gpu_slot)."""
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
    gpus = tf.config.list_physical_devices("GPU")
    if one_gpu_each and gpus:
        from distributed import get_worker

        slot = gpu_slot(get_worker().name, len(gpus))
        if slot is not None:
            tf.config.set_visible_devices(gpus[slot], "GPU")


def compute_part(settings: InferenceSettings, area: Tile, path: str, precision: str,
                 threads: int | None, one_gpu_each: bool = False) -> tuple[int, bool]:
    """The Dask task: write one part (tiler.write_part) with the model this worker process keeps loaded.

    Args:
        settings: the run's settings.
        area: the part.
        path: its file.
        precision: "float32" or "bfloat16".
        threads: TensorFlow's threads in this worker (None: its default, every core).
        one_gpu_each: a local cluster's workers each take one GPU (gpu_slot).

    Returns:
        the HR pixels written, and whether invalid input pixels could not be marked as nodata.
    """
    with native_start_up(settings.quiet):  # once per worker: TensorFlow's start-up lines, filtered
        import tiler
    from precision import enable_bfloat16
    from sr_model import Signature, inspect_savedmodel

    key = (settings.savedmodel, settings.pad, precision)
    if key not in _WORKER_MODELS:
        if not _WORKER_MODELS:
            _setup_worker(threads, one_gpu_each)
        if precision == "bfloat16":
            enable_bfloat16()
        _WORKER_MODELS[key] = Signature(inspect_savedmodel(settings.savedmodel), settings.pad)
    unmarked = tiler.write_part(settings, _WORKER_MODELS[key], area, path)
    return area.width * area.height, unmarked


@dataclasses.dataclass
class _Client:
    """A Dask client, and the local cluster it started (if any)."""

    client: object
    cluster: object | None
    threads: int | None

    def close(self) -> None:
        """Disconnect, and stop the local cluster's workers."""
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def connect(options: ClusterOptions, quiet: bool) -> _Client:
    """A client of a new local cluster (--workers: processes of one thread, TensorFlow given the cores in
    equal shares) or of a running scheduler (--scheduler).

    Args:
        options: --workers or --scheduler.
        quiet: Dask's errors only (else its warnings too, e.g. a worker restarted).
    """
    from dask.distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR if quiet else logging.WARNING)

    if options.scheduler:
        try:
            client = Client(options.scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as err:
            raise SR4RSError(f"--scheduler {options.scheduler}: cannot connect ({err})") from None
        return _Client(client, None, None)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    env = {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    cluster = LocalCluster(n_workers=options.workers, threads_per_worker=1, processes=True,
                           silence_logs=logging.ERROR, dashboard_address=":0", env=env)
    return _Client(Client(cluster), cluster, max(1, cores // options.workers))


def remove_parts(output: str) -> None:
    """Remove the parts folder of a finished output."""
    shutil.rmtree(parts_folder(output), ignore_errors=True)


def dashboard(client: _Client) -> str:
    """Where Dask's dashboard is (a local cluster serves it only when bokeh is installed)."""
    if client.cluster is not None and importlib.util.find_spec("bokeh") is None:
        return "no dashboard (Dask's needs bokeh: pip install bokeh)"
    return f"dashboard {client.client.dashboard_link}"


def assemble(parts: list[tuple[Tile, str]], src: gdal.Dataset, settings: InferenceSettings, target: str,
             quiet: bool) -> None:
    """Copy the parts into one GeoTIFF `target` (the output, or the tiled GeoTIFF a COG is made from).

    Args:
        parts: each part and its file.
        src: the input (the output's grid, CRS and band metadata).
        settings: the run's settings.
        target: the GeoTIFF to write, atomically.
        quiet: no progress bar.
    """
    import tiler  # GDAL + TensorFlow: the workers' module, loaded here for create_output only

    message = f"{settings.output}: writing failed"
    with atomic_output(target) as tmp:
        dst = tiler.create_output(tmp, src, settings)
        try:
            for area, path in tqdm.tqdm(parts, desc="assembling", unit="part", disable=quiet, leave=False):
                part = open_raster(path)
                with gdal_errors(message):
                    data = part.ReadRaster(0, 0, area.width, area.height)
                    dst.WriteRaster(area.x, area.y, area.width, area.height, data)
            with gdal_errors(message):
                dst.FlushCache()
        finally:
            close_dataset(dst, message)


def write_vrt(parts: list[tuple[Tile, str]], src: gdal.Dataset, output: str) -> None:
    """The output as a VRT of the parts (which stay in the parts folder).

    Args:
        parts: each part and its file.
        src: the input (band metadata).
        output: the VRT to write, atomically.
    """
    message = f"{output}: writing failed"
    with atomic_output(output) as tmp:
        with gdal_errors(message):
            vrt = gdal.BuildVRT(tmp, [path for _, path in parts])
        copy_metadata(src, vrt)
        close_dataset(vrt, message)


def _compute(client: _Client, settings: InferenceSettings, grid: TileGrid, todo: list[tuple[Tile, str]],
             options: ClusterOptions, progress: tqdm.tqdm) -> bool:
    """Submit the missing parts and follow them to the end; returns whether some had invalid input pixels
    that could not be marked as nodata."""
    from dask.distributed import as_completed
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    run_id = uuid.uuid4().hex  # tasks of two runs on one scheduler never share a key
    futures = {client.client.submit(compute_part, settings, area, path, options.precision, client.threads,
                                    client.cluster is not None,
                                    key=f"sr4rs-{run_id}-{os.path.basename(path)}",
                                    pure=False): (area, path)
               for area, path in todo}
    start, pixels, unmarked = time.perf_counter(), 0, False
    try:
        for future in as_completed(futures):
            area, path = futures[future]
            try:
                written, invalid = future.result()
            except KilledWorker:
                raise SR4RSError(f"{path}: the workers computing it died several times (out of memory? try a "
                                 "smaller --ts or --part_size, or fewer --workers)") from None
            except FutureCancelledError:
                raise SR4RSError(f"{path}: cancelled (the Dask cluster went away)") from None
            pixels, unmarked = pixels + written, unmarked or invalid
            progress.update(len(grid.tiles(area)))
            progress.set_postfix_str(f"{pixels / 1e6 / (time.perf_counter() - start):.2f} HR Mpx/s")
    finally:
        for future in futures:
            future.cancel()
    return unmarked


def run(settings: InferenceSettings, options: ClusterOptions, target: str | None = None) -> None:
    """Super-resolve `settings.input` into `settings.output` part by part on a Dask cluster.

    Args:
        settings: the run's settings, with absolute names (the workers may run elsewhere).
        options: the cluster and the part size.
        target: the GeoTIFF to assemble into (default: settings.output; cog_output's tiled file for a
            COG).
    """
    src = open_raster(settings.input)
    grid = TileGrid(src.RasterXSize, src.RasterYSize, settings.ts, settings.pad)
    folder = parts_folder(settings.output)
    os.makedirs(folder, exist_ok=True)
    prepare_parts(folder, manifest(settings, options, src))
    parts = [(area, os.path.join(folder, part_name(area))) for area in grid.parts(options.part_size)]
    todo = [(area, path) for area, path in parts if not os.path.exists(path)]
    logger.info("%s x %s HR pixels in %s part(s) of up to %s x %s HR pixels, %s to compute (in %s)",
                grid.width, grid.height, len(parts), parts[0][0].width, parts[0][0].height, len(todo), folder)
    start = time.perf_counter()
    if todo:
        client = connect(options, settings.quiet)
        try:
            logger.info("Dask cluster: %s worker(s); %s", len(client.client.scheduler_info()["workers"]),
                        dashboard(client))
            total = len(grid.tiles())
            done = total - sum(len(grid.tiles(area)) for area, _ in todo)
            progress = tqdm.tqdm(total=total, initial=done, unit="tile", disable=settings.quiet, leave=False)
            try:
                if _compute(client, settings, grid, todo, options, progress):
                    logger.warning(UNMARKED_INVALID)
            finally:
                progress.close()
        finally:
            client.close()
    computed = sum(a.width * a.height for a, _ in todo)
    if settings.output.lower().endswith(".vrt"):
        write_vrt(parts, src, settings.output)
        shutil.rmtree(os.path.join(folder, INPUTS_FOLDER), ignore_errors=True)
    else:
        assemble(parts, src, settings, target or settings.output, settings.quiet)
        if target is None:  # a COG's caller removes the parts once the COG exists (remove_parts)
            remove_parts(settings.output)
    seconds = time.perf_counter() - start
    logger.info("%s written (%.1f HR Mpx computed, %.2f HR Mpx/s)", settings.output, computed / 1e6,
                computed / 1e6 / seconds if seconds else math.inf)
