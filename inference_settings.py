"""What an inference engine needs to write a fake HR image: the one settings type that sr.py builds and
that both engines (`tiler.run`, `otb_engine.run`) take."""
from __future__ import annotations

import dataclasses

import numpy as np

from raster import valid_mask

# Both engines' warning when invalid input pixels (NaN, +-inf) cannot be marked in the output.
UNMARKED_INVALID = ("the input has NaN or infinite pixels and the output type has no nodata value: their "
                    "output pixels hold model values from the filled input (give --nodata to mark them)")


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """One run of an inference engine; `run(settings)` has the same shape for both engines.

    Attributes:
        input: the LR image.
        savedmodel: the SavedModel directory.
        output: the output GeoTIFF path, without OTB extended filename (written under a temporary name,
            renamed on success).
        ts: tile size (HR pixels; ts + 2*pad is a multiple of 4).
        pad: margin (HR pixels): the model output `output_<pad>` is used.
        gdal_type: output GDAL data type.
        nodata: input nodata value (None: only NaN and +-inf are invalid).
        out_nodata: nodata value written and declared by the output (None: none).
        creation_options: GeoTIFF creation options.
        fill: per-band value that replaces invalid input pixels before inference.
        batch: tiles per model call; built-in engine only.
        quiet: no progress bar (and no OTB application log).
    """

    input: str
    savedmodel: str
    output: str
    ts: int
    pad: int
    gdal_type: int
    nodata: float | None
    out_nodata: float | None
    creation_options: dict[str, str]
    fill: tuple[float, ...]
    batch: int = 1
    quiet: bool = False

    def filled(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What the model is given: input pixels [rows, cols, bands] as float32 with the invalid ones
        (nodata, NaN, +-inf) replaced by `fill`, and their validity.

        Args:
            pixels: input pixels, in the input's type.
        """
        valid = valid_mask(pixels, self.nodata)
        return np.where(valid, pixels, np.asarray(self.fill, np.float32)).astype(np.float32), valid
