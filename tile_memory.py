"""`sr.py --ts auto`: the largest tile whose inference fits a memory budget (`--max_memory`).

An estimate, not a measurement: the built-in engine's peak memory is TensorFlow's own (about 0.6 GB
with the model) plus, for each tile of a batch, a few float32 maps of the network's widest features over
the tile's LR window at HR resolution, (ts + 2 pad)^2 pixels. With the default network (depth 64, 16
residual blocks, transposed upsampling: 256 channels at HR resolution) that slope was measured at about
2.5 KB per HR window pixel (README, `--ts`), i.e. about 10 bytes per channel and pixel; the features a
model has come from its sr4rs.json (depth, upsampling), the default network's when it has none (a model
of the original SR4RS).
"""
from __future__ import annotations

import os

from errors import SR4RSError

BASE_BYTES = 800 * 2 ** 20  # TensorFlow, the model, the reader and writer queues
BYTES_PER_CHANNEL_PIXEL = 10  # measured: 2.5 KB per HR window pixel for 256 channels
DEFAULT_DEPTH, DEFAULT_UPSAMPLING = 64, "transposed"
TS_STEP, TS_MAX = 64, 8192  # the tile sizes --ts auto chooses from
MEMORY_SHARE = 0.5  # of the available memory, when --max_memory is not given
MEMINFO = "/proc/meminfo"


def available_memory(meminfo: str = MEMINFO) -> int:
    """Bytes of memory available to a new process (MemAvailable; the physical memory elsewhere).

    Args:
        meminfo: the kernel's memory report.
    """
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def hr_channels(metadata: dict) -> int:
    """Channels of the widest feature maps at HR resolution: 4 x depth for transposed upsampling (the
    original's x2 and x4 stages), depth / 4 for sub-pixel convolutions (computed at LR resolution).

    Args:
        metadata: the SavedModel's sr4rs.json ({} for a model without one).
    """
    depth = int(metadata.get("depth", DEFAULT_DEPTH))
    upsampling = metadata.get("upsampling", DEFAULT_UPSAMPLING)
    return 4 * depth if upsampling == "transposed" else max(depth // 4, int(metadata.get("nbands", 4)))


def tile_bytes(ts: int, pad: int, batch: int, channels: int) -> int:
    """Estimated peak memory of the built-in engine with tiles of ts HR pixels.

    Args:
        ts: tile size.
        pad: margin.
        batch: tiles per model call.
        channels: hr_channels() of the model.
    """
    return BASE_BYTES + batch * (ts + 2 * pad) ** 2 * channels * BYTES_PER_CHANNEL_PIXEL


def computed_pixels(ts: int, pad: int, hr_size: tuple[int, int]) -> int:
    """HR pixels the model computes for an output of hr_size (columns, rows) in tiles of ts: every tile,
    the last ones of a row or column included, at its full size with its margins."""
    return -(-hr_size[0] // ts) * -(-hr_size[1] // ts) * (ts + 2 * pad) ** 2


def auto_tile_size(max_bytes: int, pad: int, batch: int, metadata: dict, hr_size: tuple[int, int]) -> int:
    """The multiple of 64 whose tile_bytes() fits `max_bytes` and that computes the fewest pixels for
    this output (margins and the cropped last tiles included; the larger on a tie): on a large image, the
    largest that fits (up to 8192).

    Args:
        max_bytes: the memory budget.
        pad: margin.
        batch: tiles per model call.
        metadata: the SavedModel's sr4rs.json ({} for none).
        hr_size: the output's (columns, rows), HR pixels.
    """
    channels = hr_channels(metadata)
    largest = min(TS_MAX, -(-max(hr_size) // TS_STEP) * TS_STEP)
    fitting = [ts for ts in range(TS_STEP, largest + 1, TS_STEP)
               if tile_bytes(ts, pad, batch, channels) <= max_bytes]
    if not fitting:
        need = tile_bytes(TS_STEP, pad, batch, channels) / 2 ** 30
        raise SR4RSError(f"--ts auto: even tiles of {TS_STEP} HR pixels need about {need:.1f} GB, more than "
                         f"--max_memory {max_bytes / 2 ** 30:.1f} GB: give more, or a --ts")
    return min(reversed(fitting), key=lambda ts: computed_pixels(ts, pad, hr_size))


def parse_memory(text: str) -> int:
    """--max_memory: "8G", "500M", "16GB", or a number of MB.

    Args:
        text: the option's value.
    """
    units = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = units.get(value[-1:], None)
    number = value[:-1] if scale else value
    try:
        amount = float(number) * (scale or 2 ** 20)
    except ValueError:
        raise SR4RSError(f"--max_memory {text}: expected a size such as 8G or 500M") from None
    if amount <= 0:
        raise SR4RSError(f"--max_memory {text}: give a positive size")
    return int(amount)
