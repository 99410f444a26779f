"""What an inference engine needs to write a fake HR image: the one settings type that sr.py builds and
that both engines (`tiler.run`, `otb_engine.run`) take."""
from __future__ import annotations

import dataclasses


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
        nodata: input nodata value (None: only NaN is invalid).
        out_nodata: nodata value written and declared by the output (None: none).
        creation_options: GeoTIFF creation options.
        fill: per-band value that replaces invalid input pixels before inference; built-in engine only
            (OTB gets `nodata`).
        extended: other OTB extended filename options (`key=value`); OTB engine only, the built-in
            engine warns that it ignores them.
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
    extended: tuple[str, ...] = ()
    batch: int = 1
    quiet: bool = False
