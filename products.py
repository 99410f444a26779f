"""Inputs as the user gives them, opened as one plain GDAL raster: any GDAL raster or dataset name (passed
through, bands optionally chosen by number or description), or a Sentinel-2 product read directly:

- ESA L2A or L1C: the .SAFE folder, its .zip, its MTD_MSIL2A.xml / MTD_MSIL1C.xml (or a
  `SENTINEL2_L2A:<mtd>:10m:EPSG_<code>` name), read through GDAL's SENTINEL2 driver, 10 m bands only;
- THEIA/MAJA L2A: the product folder or its .zip (`*_FRE_B4.tif`, `MASKS/*_CLM_R1.tif`, ...).

A product becomes a VRT written in a work folder (nothing is loaded in memory): the requested bands in the
requested order, as int16 reflectance x 10000 without offset (ESA: `(DN + offset) x 10000 / quantification`,
the offset and quantification read from the product's metadata, e.g. -1000 and 10000 since processing
baseline 04.00), nodata PRODUCT_NODATA (-10000, THEIA's) where the product has no data and where the mask
(`SCL` classes or THEIA `CLM`/`EDG`) says so, so that the commands' nodata handling takes them.
docs/DESIGN.md, "Sentinel-2 products".
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from osgeo import gdal

from errors import SR4RSError
from logs import get_logger
from raster import band_descriptions, close_dataset, gdal_errors, is_plain_path, open_dataset, open_raster

logger = get_logger("products")

gdal.UseExceptions()

PRODUCT_NODATA = -10000  # the nodata value of a product's VRT (THEIA's own)
INT16_CLAMP = "-32768:-32768,32767:32767"  # a VRT LUT: identity clamped to the int16 range
REFLECTANCE_SCALE = 10000  # values given to the model: reflectance x REFLECTANCE_SCALE
S2_DEFAULT_BANDS = ("B4", "B3", "B2", "B8")  # the original SR4RS band order
S2_10M_BANDS = ("B2", "B3", "B4", "B8")
S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")  # ESA band ids
MASKS = ("SCL", "CLM")
# Scene classification (ESA L2A SCL) classes that become nodata with mask="SCL".
SCL_MASKED = {0: "no data", 1: "saturated or defective", 3: "cloud shadows", 8: "cloud medium probability",
              9: "cloud high probability", 10: "thin cirrus"}
SCL_CLASSES = 12
THEIA_REFLECTANCES = ("FRE", "SRE")
BASELINE_WITH_OFFSET = 4.0  # processing baseline 04.00 (January 2022) added the -1000 offset
DEFAULT_OFFSET = -1000

ESA_MTD = re.compile(r"^(MTD_MSIL(1C|2A)|S2[A-D]_(OPER|USER)_MTD_SAF(L1C|L2A)_.*)\.xml$", re.IGNORECASE)
ESA_SUBDATASET = re.compile(r"^SENTINEL2_(L1C|L2A):(.+):(10m|20m|60m|TCI):EPSG_(\d+)$")
THEIA_BAND = re.compile(r"^(?P<stem>.+)_(?P<kind>FRE|SRE)_(?P<band>B\d+A?)\.tif$", re.IGNORECASE)
THEIA_NAME = re.compile(r"SENTINEL2[A-D]_(?P<date>\d{8})-(?P<time>\d{6})-\d{3}_L2A_T(?P<tile>\w{5})_")
TILE_IN_PATH = re.compile(r"GRANULE/[^/]*_T(\d{2}[A-Z]{3})_")  # the tile of a granule's folder


@dataclass
class InputImage:
    """An input opened by open_input: `path` is what GDAL opens (open_raster) wherever the input is read.

    Attributes:
        path: a GDAL dataset name: the input itself, or a VRT written in the work folder.
        source: what the user gave.
        kind: "raster", "ESA L2A", "ESA L1C" or "THEIA L2A".
        bands: the band names or descriptions, in order ("" when a band has none).
        nodata: the nodata value of `path` (PRODUCT_NODATA for a product, the raster's own otherwise).
        offsets: per band, the offset added to the product's values (ESA: DN + offset), empty for a raster.
        metadata: what to carry to the outputs (product name, acquisition date, tile, offset, mask...);
            empty for a plain raster.
        workdir: the work folder made by open_input, removed by close() (None when it was given or not
            needed).
    """

    path: str
    source: str
    kind: str = "raster"
    bands: tuple[str, ...] = ()
    nodata: float | None = None
    offsets: tuple[float, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None

    def close(self) -> None:
        """Remove the work folder made by open_input (the VRTs); `path` is unusable afterwards."""
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> InputImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def add_product_options(parser: argparse.ArgumentParser, input_option: str, prefix: str,
                        default_bands: str) -> None:
    """The options that read an input as a product or choose its bands, as one group: `--<prefix>bands`,
    `--<prefix>mask`, `--epsg`, `--theia_reflectance` (the arguments of open_input).

    Args:
        parser: the command's parser.
        input_option: the option of the input they apply to, e.g. "--input".
        prefix: "" (sr.py --input) or "lr_" (extract_patches.py --lr).
        default_bands: what the help says --<prefix>bands defaults to for a product.
    """
    group = parser.add_argument_group(f"Sentinel-2 products and band selection ({input_option})")
    group.add_argument(f"--{prefix}bands", metavar="LIST",
                       help="bands in order: names (B4,B3,B2,B8) or, for a raster, band numbers (3,2,1) or "
                            f"descriptions (default: every band of a raster; for a product, {default_bands})")
    group.add_argument(f"--{prefix}mask", type=str.upper, choices=MASKS,
                       help="product pixels made nodata: SCL (ESA L2A scene classification: no data, "
                            "saturated, cloud shadows, clouds, cirrus) or CLM (THEIA cloud mask and edges)")
    group.add_argument("--epsg", type=int, help="the CRS of an ESA product that covers several")
    group.add_argument("--theia_reflectance", type=str.upper, choices=THEIA_REFLECTANCES, default="FRE",
                       help="THEIA bands: FRE (flat reflectance, default) or SRE (surface reflectance)")


def open_input(name: str, bands: str | Sequence[str] | None = None, mask: str | None = None,
               epsg: int | None = None, theia_reflectance: str = "FRE", workdir: str | None = None,
               default_bands: Sequence[str] | None = None) -> InputImage:
    """Open what the user gave as an input image: a GDAL raster or a Sentinel-2 product (module docstring).

    Args:
        name: a GDAL dataset name, an ESA .SAFE folder, .zip or MTD_MSIL*.xml, a THEIA folder or .zip.
        bands: the bands, in order: "B4,B3,B2,B8" (names, or descriptions of a raster's bands) or "3,2,1"
            (a raster's band numbers); None: every band of a raster, `default_bands` for a product.
        mask: None, "SCL" (ESA L2A scene classification: classes SCL_MASKED become nodata) or "CLM"
            (THEIA: cloud mask bits and edges become nodata).
        epsg: the CRS of an ESA product covering several (its 10 m subdatasets), e.g. 32631.
        theia_reflectance: "FRE" (flat, slope-corrected, default) or "SRE" (surface) THEIA bands.
        workdir: where the VRTs are written (kept); None: a temporary folder that InputImage.close()
            removes.
        default_bands: the bands of a product when `bands` is None, e.g. the model's; None:
            S2_DEFAULT_BANDS.

    Returns:
        the InputImage; close it (or use it as a context manager) when the input is no longer read.
    """
    wanted = _split_bands(bands)
    mask = None if mask is None or mask.strip().lower() in ("", "none") else mask.strip().upper()
    if mask is not None and mask not in MASKS:
        raise SR4RSError(f"unknown mask '{mask}' (choose one of {', '.join(MASKS)}: SCL for ESA L2A "
                         "products, CLM for THEIA products)")
    reflectance = theia_reflectance.strip().upper()
    if reflectance not in THEIA_REFLECTANCES:
        raise SR4RSError(f"unknown THEIA reflectance '{theia_reflectance}' (choose FRE or SRE)")
    product = _find_product(name)
    subdataset = ESA_SUBDATASET.match(name)
    if subdataset and subdataset[3] != "10m":
        raise SR4RSError(f"{name}: only the 10 m bands of a Sentinel-2 product can be read: give its "
                         f"{subdataset[1]}:...:10m:EPSG_{subdataset[4]} subdataset, or the product itself")
    if subdataset and epsg is None:
        epsg = int(subdataset[4])
    if product is None:
        if mask is not None or epsg is not None:
            given = " and ".join(o for o, v in (("a mask", mask), ("an EPSG code", epsg)) if v is not None)
            raise SR4RSError(f"{name}: {given} can only be given with a Sentinel-2 product (an ESA .SAFE "
                             "folder, .zip or MTD_MSIL*.xml, or a THEIA folder or .zip), not a raster")
        return _plain_raster(name, wanted, workdir)
    if not wanted and default_bands:
        unknown = [b for b in default_bands if normalize_band(b) not in S2_BANDS]
        if unknown:
            raise SR4RSError(f"{name}: the default bands {', '.join(default_bands)} (the model's) are not "
                             "all Sentinel-2 band names: choose the product's bands with --bands, e.g. "
                             "B4,B3,B2,B8")
    wanted = wanted or tuple(default_bands or S2_DEFAULT_BANDS)
    folder = _work_folder(workdir)
    try:
        kind, location = product
        if kind == "ESA":
            image = _esa_product(name, location, wanted, mask, epsg, folder)
        else:
            image = _theia_product(name, location, wanted, mask, reflectance, folder)
    except BaseException:
        if workdir is None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    image.workdir = folder if workdir is None else None
    return image


def _work_folder(workdir: str | None) -> str:
    """The folder where VRTs are written: `workdir` (made if missing) or a new temporary folder."""
    try:
        if workdir is None:
            return tempfile.mkdtemp(prefix="sr4rs-input-")
        os.makedirs(workdir, exist_ok=True)
        return workdir
    except OSError as err:
        raise SR4RSError(f"{workdir or tempfile.gettempdir()}: cannot make a folder for the input's VRT "
                         f"({err.strerror or err})") from None


def sentinel2_band_names(path: str) -> list[str] | None:
    """The band descriptions of a raster when they are all Sentinel-2 band names (e.g. an output of sr.py
    made from a product: B4, B3, B2, B8), else None: the default bands for reading its LR product (e.g.
    evaluate.py --lr).

    Args:
        path: a GDAL dataset name.
    """
    ds = open_raster(path)
    names = list(band_descriptions(ds))
    return names if all(normalize_band(n) in S2_BANDS for n in names) else None


def normalize_band(name: str) -> str:
    """A Sentinel-2 band name in one spelling: "B04", "b4" -> "B4", "B8a" -> "B8A"; other names stripped."""
    match = re.fullmatch(r"[Bb]0*(\d{1,2})([Aa]?)", name.strip())
    return f"B{match[1]}{match[2].upper()}" if match else name.strip()


def _split_bands(bands: str | Sequence[str] | None) -> tuple[str, ...]:
    """The --bands value as a tuple of non-empty items (empty: not given)."""
    if bands is None:
        return ()
    items = bands.split(",") if isinstance(bands, str) else list(bands)
    items = [str(item).strip() for item in items]
    if not all(items):
        raise SR4RSError(f"bad band list '{bands}': give comma-separated band names or numbers, e.g. "
                         "B4,B3,B2,B8 or 3,2,1")
    return tuple(items)


# ---------------------------------------------------------------------------------------------------------
# What the input is


def _find_product(name: str) -> tuple[str, str] | None:
    """("ESA", GDAL path of its MTD file) or ("THEIA", GDAL path of its folder), or None for a raster."""
    subdataset = ESA_SUBDATASET.match(name)
    if subdataset:
        return "ESA", subdataset[2]
    if not is_plain_path(name):
        return None
    base = os.path.basename(name.rstrip("/"))
    if os.path.isfile(name) and ESA_MTD.match(base):
        return "ESA", os.path.abspath(name)
    if os.path.isfile(name) and base.endswith("_MTD_ALL.xml"):
        return "THEIA", os.path.abspath(os.path.dirname(name))
    if os.path.isdir(name):
        found = _product_in_folder(os.path.abspath(name))
        if found is None:
            children = [os.path.join(name, c) for c in sorted(os.listdir(name))
                        if os.path.isdir(os.path.join(name, c))]
            inside = [f for f in (_product_in_folder(os.path.abspath(c)) for c in children) if f]
            if len(inside) == 1:
                return inside[0]
            if not inside and _gdal_opens(name):
                return None  # a raster made of a folder (e.g. an Arc/Info grid)
            raise SR4RSError(f"{name}: a folder, but not a Sentinel-2 product (no MTD_MSIL2A.xml, "
                             "MTD_MSIL1C.xml or THEIA *_FRE_B*.tif in it" +
                             (f"; it holds {len(inside)} products: give one)" if inside else ")"))
        return found
    if os.path.isfile(name) and base.lower().endswith(".zip"):
        found = _product_in_zip(os.path.abspath(name))
        if found is None and not _gdal_opens(name):
            raise SR4RSError(f"{name}: a zip file, but not a Sentinel-2 product (no MTD_MSIL2A.xml, "
                             "MTD_MSIL1C.xml or THEIA *_FRE_B*.tif in it); for a raster inside a zip, give "
                             f"/vsizip/{name}/<path of the raster in it>")
        return found
    return None


def _gdal_opens(name: str) -> bool:
    """Whether GDAL opens `name` as a raster (quietly)."""
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        ds = gdal.Open(name)
        return ds is not None and ds.RasterCount > 0
    except RuntimeError:
        return False
    finally:
        gdal.PopErrorHandler()


def _product_in_folder(folder: str) -> tuple[str, str] | None:
    """The product whose root is `folder` (ESA MTD file or THEIA bands at its top level), or None."""
    names = sorted(os.listdir(folder))
    mtd = [n for n in names if ESA_MTD.match(n)]
    if mtd:
        return "ESA", os.path.join(folder, mtd[0])
    if any(THEIA_BAND.match(n) for n in names):
        return "THEIA", folder
    return None


def _product_in_zip(path: str) -> tuple[str, str] | None:
    """The product in a zip (its root at the top level or one folder down), as /vsizip/ paths, or None."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.namelist()
    except (OSError, zipfile.BadZipFile) as err:
        raise SR4RSError(f"{path}: not a readable zip file ({err})") from None
    shallow = sorted(m for m in members if m.count("/") <= 1)
    mtd = [m for m in shallow if ESA_MTD.match(os.path.basename(m))]
    if mtd:
        return "ESA", f"/vsizip/{path}/{mtd[0]}"
    theia = [m for m in shallow if THEIA_BAND.match(os.path.basename(m))]
    if theia:
        folder = os.path.dirname(theia[0])
        return "THEIA", f"/vsizip/{path}/{folder}" if folder else f"/vsizip/{path}"
    return None


# ---------------------------------------------------------------------------------------------------------
# Plain rasters


def _plain_raster(name: str, wanted: tuple[str, ...], workdir: str | None) -> InputImage:
    """A GDAL raster: unchanged, or a VRT of the chosen bands (by number or description)."""
    ds = open_raster(name)
    descriptions = band_descriptions(ds)
    nodata = ds.GetRasterBand(1).GetNoDataValue()
    if not wanted:
        return InputImage(path=name, source=name, bands=descriptions, nodata=nodata)
    numbers = [_band_number(ds, name, item) for item in wanted]
    folder = _work_folder(workdir)
    try:
        stem = os.path.splitext(os.path.basename(name.rstrip("/")))[0] or "input"
        path = _unique(os.path.join(folder, f"{_safe(stem)}_bands{'-'.join(map(str, numbers))}.vrt"))
        message = f"{name}: cannot select bands {', '.join(wanted)}"
        with gdal_errors(message):
            # Opened by its absolute name, so that the VRT finds it whatever the working directory.
            source = open_raster(os.path.abspath(name)) if is_plain_path(name) else ds
            vrt = gdal.Translate(path, source, format="VRT", bandList=numbers)
        close_dataset(vrt, message)
    except BaseException:
        if workdir is None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    logger.info("%s: bands %s (%s)", name, ", ".join(map(str, numbers)),
                ", ".join(descriptions[n - 1] or "no description" for n in numbers))
    return InputImage(path=path, source=name, bands=tuple(descriptions[n - 1] for n in numbers),
                      nodata=nodata, workdir=folder if workdir is None else None)


def _band_number(ds: gdal.Dataset, name: str, item: str) -> int:
    """The number (from 1) of the band given by number or by description (Sentinel-2 spellings alike)."""
    count = ds.RasterCount
    if item.isdigit():
        number = int(item)
        if not 1 <= number <= count:
            raise SR4RSError(f"{name}: no band {number} (the image has {count} band(s), numbered from 1)")
        return number
    labels = []
    for b in range(1, count + 1):
        band = ds.GetRasterBand(b)
        names = {band.GetDescription().strip(), (band.GetMetadataItem("BANDNAME") or "").strip()}
        labels.append(names - {""})
    for same in (lambda a, b: a.casefold() == b.casefold(),
                 lambda a, b: normalize_band(a).casefold() == normalize_band(b).casefold()):
        hits = [b for b, names in enumerate(labels, start=1) if any(same(item, n) for n in names)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise SR4RSError(f"{name}: several bands are described as '{item}' (bands "
                             f"{', '.join(map(str, hits))}): give band numbers instead")
    known = [f"{b}: {' / '.join(sorted(n))}" for b, n in enumerate(labels, start=1) if n]
    raise SR4RSError(f"{name}: no band described as '{item}' (" +
                     (f"its bands: {'; '.join(known)}" if known else "its bands have no description") +
                     "); give band numbers, e.g. 3,2,1")


# ---------------------------------------------------------------------------------------------------------
# ESA products


def _read_xml(path: str) -> ET.Element:
    """The parsed XML file at a GDAL path (/vsizip/ ones too), tags without their namespace."""
    with gdal_errors(f"{path}: cannot read the product metadata"):
        fp = gdal.VSIFOpenL(path, "rb")
        if fp is None:
            raise SR4RSError(f"{path}: cannot read the product metadata")
        try:
            gdal.VSIFSeekL(fp, 0, 2)
            size = gdal.VSIFTellL(fp)
            gdal.VSIFSeekL(fp, 0, 0)
            data = gdal.VSIFReadL(1, size, fp)
        finally:
            gdal.VSIFCloseL(fp)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise SR4RSError(f"{path}: unreadable product metadata ({err})") from None
    for element in root.iter():
        if isinstance(element.tag, str) and "}" in element.tag:
            element.tag = element.tag.split("}", 1)[1]
    return root


def _text(root: ET.Element, *tags: str) -> str | None:
    """The text of the first element with one of the tags (in that order of preference), or None."""
    for tag in tags:
        element = root.find(f".//{tag}")
        if element is not None and element.text and element.text.strip():
            return element.text.strip()
    return None


@dataclass
class _EsaRadiometry:
    """What the metadata says of an ESA product's values: reflectance = (DN + offset) / quantification."""

    level: str
    baseline: str
    quantification: float
    offsets: dict[str, float]  # normalized band name -> offset
    offset_source: str  # "BOA_ADD_OFFSET", "RADIO_ADD_OFFSET", "none before baseline 04.00", ...
    nodata: float


def _esa_radiometry(root: ET.Element, level: str, mtd: str) -> _EsaRadiometry:
    """Quantification value, per-band offsets and nodata value from MTD_MSIL2A.xml / MTD_MSIL1C.xml."""
    baseline = _text(root, "PROCESSING_BASELINE") or "unknown"
    try:
        baseline_number = float(baseline)
    except ValueError:
        baseline_number = None
    if level == "L2A":
        quant_text = _text(root, "BOA_QUANTIFICATION_VALUE", "L2A_BOA_QUANTIFICATION_VALUE")
        offset_tag = "BOA_ADD_OFFSET"
    else:
        quant_text = _text(root, "QUANTIFICATION_VALUE", "L1C_TOA_QUANTIFICATION_VALUE")
        offset_tag = "RADIO_ADD_OFFSET"
    if quant_text is None:
        logger.warning("%s: no quantification value in the metadata: assuming %s", mtd, REFLECTANCE_SCALE)
    quantification = float(quant_text or REFLECTANCE_SCALE)
    ids = {e.get("bandId"): normalize_band(e.get("physicalBand", ""))
           for e in root.iter("Spectral_Information") if e.get("bandId") is not None}
    offsets: dict[str, float] = {}
    for element in root.iter(offset_tag):
        band_id = element.get("band_id")
        band = ids.get(band_id) or (S2_BANDS[int(band_id)] if band_id and band_id.isdigit()
                                    and int(band_id) < len(S2_BANDS) else None)
        if band and element.text:
            offsets[band] = float(element.text)
    source = offset_tag
    if not offsets:
        if baseline_number is not None and baseline_number >= BASELINE_WITH_OFFSET:
            logger.warning("%s: processing baseline %s but no %s in the metadata: assuming %s", mtd, baseline,
                           offset_tag, DEFAULT_OFFSET)
            offsets = dict.fromkeys(S2_BANDS, float(DEFAULT_OFFSET))
            source = f"{DEFAULT_OFFSET} assumed for baseline {baseline}"
        else:
            offsets = dict.fromkeys(S2_BANDS, 0.0)
            source = f"none before baseline 04.00 (baseline {baseline})"
    nodata = 0.0
    for special in root.iter("Special_Values"):
        if (_text(special, "SPECIAL_VALUE_TEXT") or "").upper() == "NODATA":
            nodata = float(_text(special, "SPECIAL_VALUE_INDEX") or 0)
    return _EsaRadiometry(level, baseline, quantification, offsets, source, nodata)


def _esa_product(name: str, mtd: str, wanted: tuple[str, ...], mask: str | None, epsg: int | None,
                 folder: str) -> InputImage:
    """The VRT of an ESA L2A/L1C product's 10 m bands (GDAL's SENTINEL2 driver)."""
    product = open_dataset(gdal.Open, mtd, "Sentinel-2 product")
    subdatasets = [v for k, v in product.GetMetadata("SUBDATASETS").items() if k.endswith("_NAME")]
    ten = {int(m[4]): v for v in subdatasets if (m := ESA_SUBDATASET.match(v)) and m[3] == "10m"}
    if not ten:
        raise SR4RSError(f"{name}: GDAL's SENTINEL2 driver finds no 10 m bands in this product")
    codes = ", ".join(str(code) for code in sorted(ten))
    if epsg is None and len(ten) > 1:
        raise SR4RSError(f"{name}: the product covers several CRS (EPSG {codes}): choose one with --epsg")
    if epsg is not None and epsg not in ten:
        raise SR4RSError(f"{name}: no 10 m bands in EPSG:{epsg} (the product has EPSG {codes})")
    epsg = epsg if epsg is not None else next(iter(ten))
    subdataset = ten[epsg]
    level = ESA_SUBDATASET.match(subdataset)[1]
    sub = open_dataset(gdal.Open, subdataset, "Sentinel-2 subdataset")
    available = {normalize_band(sub.GetRasterBand(b).GetMetadataItem("BANDNAME") or ""): b
                 for b in range(1, sub.RasterCount + 1)}
    files = [f for f in sub.GetFileList() or [] if f.lower().endswith(".jp2")]
    bands = [_check_s2_band(name, item, available, files) for item in wanted]
    root = _read_xml(mtd)
    radiometry = _esa_radiometry(root, level, mtd)
    if mask == "CLM":
        raise SR4RSError(f"{name}: the CLM mask is THEIA's; ESA L2A products have the SCL mask (--mask SCL)")
    if mask == "SCL" and level != "L2A":
        raise SR4RSError(f"{name}: an L1C product has no scene classification: --mask SCL needs an L2A "
                         "product")
    mask_sources = [_scl_source(name, mtd, root, files, sub)] if mask == "SCL" else []
    product_name = (_text(root, "PRODUCT_URI", "PRODUCT_URI_2A") or os.path.basename(os.path.dirname(mtd)))
    product_name = product_name.removesuffix(".SAFE")
    date = _text(root, "DATATAKE_SENSING_START", "PRODUCT_START_TIME", "SENSING_TIME") or ""
    tiles = sorted({t for f in files for t in TILE_IN_PATH.findall(f.replace("\\", "/"))})
    ratio = REFLECTANCE_SCALE / radiometry.quantification
    offsets = tuple(radiometry.offsets.get(band, 0.0) for band in bands)
    metadata = {
        "SOURCE_PRODUCT": product_name, "PRODUCT_TYPE": f"ESA {level}", "ACQUISITION_DATE": date,
        "TILE_ID": ",".join(tiles), "EPSG": str(epsg), "PROCESSING_BASELINE": radiometry.baseline,
        "QUANTIFICATION_VALUE": f"{radiometry.quantification:g}",
        "RADIOMETRIC_OFFSET": ",".join(f"{o:g}" for o in offsets),
        "RADIOMETRIC_OFFSET_SOURCE": radiometry.offset_source,
        "VALUES": f"reflectance x {REFLECTANCE_SCALE}", "MASK": mask or "none", "BANDS": ",".join(bands),
    }
    stem = _safe(f"{product_name}_{'-'.join(bands)}{'_' + mask if mask else ''}")
    layers = [_Layer(subdataset, available[band], radiometry.nodata, offset, ratio)
              for band, offset in zip(bands, offsets, strict=True)]
    path = _write_vrts(folder, stem, sub, bands, layers, mask_sources, metadata)
    logger.info("%s: ESA %s product %s (tile %s, %s, processing baseline %s, EPSG:%s), 10 m bands %s; values "
                "(DN + offset) x %g/%g = reflectance x %s with offset %s (%s); no data (DN %g)%s -> %s",
                name, level, product_name, ",".join(tiles) or "?", date[:10] or "date unknown",
                radiometry.baseline, epsg, ", ".join(bands), REFLECTANCE_SCALE, radiometry.quantification,
                REFLECTANCE_SCALE, metadata["RADIOMETRIC_OFFSET"], radiometry.offset_source,
                radiometry.nodata, _mask_text(mask), PRODUCT_NODATA)
    return InputImage(path=path, source=name, kind=f"ESA {level}", bands=tuple(bands), nodata=PRODUCT_NODATA,
                      offsets=offsets, metadata=metadata)


def _check_s2_band(name: str, item: str, available: dict[str, int], files: list[str]) -> str:
    """A requested band as a 10 m band name of the product (normalized), or a clear refusal."""
    band = normalize_band(item)
    ten = ", ".join(sorted(available, key=S2_BANDS.index))
    if band not in S2_BANDS:
        raise SR4RSError(f"{name}: unknown band '{item}' (a Sentinel-2 product's 10 m bands are {ten})")
    if band not in available:
        raise SR4RSError(f"{name}: {band} is not a 10 m band: only the 10 m bands ({ten}) can be read")
    code = band if band.endswith("A") else f"B{int(band[1:]):02d}"  # file names: B04, B8A
    if not any(re.search(rf"_{code}(_10m)?\.jp2$", f, re.IGNORECASE) for f in files):
        raise SR4RSError(f"{name}: the product has no {band} band (its {code} JPEG 2000 file is missing)")
    return band


def _scl_source(name: str, mtd: str, root: ET.Element, files: list[str], sub: gdal.Dataset) -> _MaskLayer:
    """The SCL file (20 m) of the granule read, as a mask layer on the 10 m grid."""
    granules = sorted({m[1] for f in files if (m := re.search(r"GRANULE/([^/]+)/", f.replace("\\", "/")))})
    entries = [e.text.strip() for e in root.iter()
               if isinstance(e.tag, str) and e.tag.startswith("IMAGE_FILE")  # IMAGE_FILE_2A in L2Ap products
               and e.text and re.search(r"_SCL_20m$", e.text.strip())]
    entries = [e for e in entries if any(f"GRANULE/{g}/" in e for g in granules)]
    if len(entries) != 1:
        raise SR4RSError(f"{name}: --mask SCL needs one SCL_20m file for the granule read, the metadata "
                         f"lists {len(entries)}")
    path = f"{os.path.dirname(mtd)}/{entries[0]}.jp2"
    if gdal.VSIStatL(path) is None:
        raise SR4RSError(f"{name}: the scene classification file {path} is missing (--mask SCL)")
    keep = ",".join(f"{c}:{0 if c in SCL_MASKED else 1}" for c in range(SCL_CLASSES))
    return _MaskLayer(path, keep, *_placement(path, sub))


# ---------------------------------------------------------------------------------------------------------
# THEIA products


def _theia_product(name: str, folder_path: str, wanted: tuple[str, ...], mask: str | None, reflectance: str,
                   folder: str) -> InputImage:
    """The VRT of a THEIA/MAJA L2A product's 10 m bands (already reflectance x 10000)."""
    names = _list_folder(folder_path)
    found: dict[str, str] = {}
    stem = None
    for n in names:
        match = THEIA_BAND.match(n)
        if match and match["kind"].upper() == reflectance:
            found[normalize_band(match["band"])] = f"{folder_path}/{n}"
            stem = match["stem"]
    if stem is None:
        raise SR4RSError(f"{name}: no THEIA {reflectance} band in this product (*_{reflectance}_B4.tif...)")
    ten = ", ".join(S2_10M_BANDS)
    bands = []
    for item in wanted:
        band = normalize_band(item)
        if band not in S2_BANDS:
            raise SR4RSError(f"{name}: unknown band '{item}' (a Sentinel-2 product's 10 m bands are {ten})")
        if band not in S2_10M_BANDS:
            raise SR4RSError(f"{name}: {band} is not a 10 m band: only the 10 m bands ({ten}) can be read")
        if band not in found:
            raise SR4RSError(f"{name}: the product has no {band} band ({stem}_{reflectance}_{band}.tif is "
                             "missing)")
        bands.append(band)
    if mask == "SCL":
        raise SR4RSError(f"{name}: the SCL mask is ESA's; THEIA products have the CLM mask (--mask CLM)")
    like = open_raster(found[bands[0]])
    mask_sources = []
    if mask == "CLM":
        masks = _list_folder(f"{folder_path}/MASKS")
        for kind in ("CLM", "EDG"):
            path = f"{folder_path}/MASKS/{stem}_{kind}_R1.tif"
            if f"{stem}_{kind}_R1.tif" not in masks:
                raise SR4RSError(f"{name}: the mask MASKS/{stem}_{kind}_R1.tif is missing (--mask CLM)")
            mask_sources.append(_MaskLayer(path, "0:1,1:0", *_placement(path, like)))
    about = THEIA_NAME.search(stem)
    date = (f"{about['date'][:4]}-{about['date'][4:6]}-{about['date'][6:]}T{about['time'][:2]}:"
            f"{about['time'][2:4]}:{about['time'][4:]}") if about else ""
    metadata = {
        "SOURCE_PRODUCT": stem, "PRODUCT_TYPE": "THEIA L2A", "ACQUISITION_DATE": date,
        "TILE_ID": about["tile"] if about else "", "THEIA_REFLECTANCE": reflectance,
        "RADIOMETRIC_OFFSET": ",".join("0" for _ in bands), "VALUES": f"reflectance x {REFLECTANCE_SCALE}",
        "MASK": mask or "none", "BANDS": ",".join(bands),
    }
    layers = [_Layer(found[band], 1, PRODUCT_NODATA, 0.0, 1.0) for band in bands]
    path = _write_vrts(folder, _safe(f"{stem}_{reflectance}_{'-'.join(bands)}{'_' + mask if mask else ''}"),
                       like, bands, layers, mask_sources, metadata)
    logger.info("%s: THEIA L2A product %s (tile %s, %s), %s 10 m bands %s (reflectance x %s, no offset); "
                "no data (-10000)%s -> %s", name, stem, metadata["TILE_ID"] or "?",
                date[:10] or "date unknown", reflectance, ", ".join(bands), REFLECTANCE_SCALE,
                _mask_text(mask), PRODUCT_NODATA)
    return InputImage(path=path, source=name, kind="THEIA L2A", bands=tuple(bands), nodata=PRODUCT_NODATA,
                      offsets=tuple(0.0 for _ in bands), metadata=metadata)


def _list_folder(path: str) -> list[str]:
    """The names in a folder given as a GDAL path (a /vsizip/ one too)."""
    with gdal_errors(f"{path}: cannot list the product"):
        return sorted(gdal.ReadDir(path) or [])


# ---------------------------------------------------------------------------------------------------------
# VRT writing


@dataclass(frozen=True)
class _Layer:
    """One output band: `(value + offset) * ratio` of band `band` of `source`, `nodata` there = no data."""

    source: str
    band: int
    nodata: float
    offset: float
    ratio: float


@dataclass(frozen=True)
class _MaskLayer:
    """A mask on the output grid: band 1 of `source` (whole: `src`) through a LUT (1: keep, 0: masked),
    nearest neighbour, placed at `dst` (xoff, yoff, xsize, ysize in output pixels)."""

    source: str
    lut: str
    src: tuple[float, float, float, float]
    dst: tuple[float, float, float, float]


def _placement(path: str, like: gdal.Dataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A (mask) raster's whole extent in its pixels, and where it lands on the grid of `like`
    (xoff, yoff, xsize, ysize), e.g. a 20 m SCL on the 10 m grid: twice its size."""
    ds = open_raster(path)
    gt, ref = ds.GetGeoTransform(can_return_null=True), like.GetGeoTransform()
    if gt is None:  # no georeferencing of its own: it covers the product's extent
        return (0, 0, ds.RasterXSize, ds.RasterYSize), (0, 0, like.RasterXSize, like.RasterYSize)
    if gt[2] or gt[4] or ref[2] or ref[4]:
        raise SR4RSError(f"{path}: not north-up, cannot be used as a mask")
    return ((0, 0, ds.RasterXSize, ds.RasterYSize),
            ((gt[0] - ref[0]) / ref[1], (gt[3] - ref[3]) / ref[5], ds.RasterXSize * gt[1] / ref[1],
             ds.RasterYSize * gt[5] / ref[5]))


def _rect(tag: str, rect: tuple[float, ...]) -> str:
    """A VRT SrcRect or DstRect element."""
    x, y, w, h = (f"{v:.17g}" for v in rect)
    return f'<{tag} xOff="{x}" yOff="{y}" xSize="{w}" ySize="{h}"/>'


def _write_vrts(folder: str, stem: str, like: gdal.Dataset, bands: list[str], layers: list[_Layer],
                masks: list[_MaskLayer], metadata: dict[str, str]) -> str:
    """Write the product's VRT (int16, nodata PRODUCT_NODATA) on the grid of `like`; with masks, over a
    first VRT `<stem>.masked.vrt` whose bands are `(value - nodata) x keep`: 0 where the product has no data
    or a mask says so, then read back with nodata 0. Returns the VRT's path."""
    width, height = like.RasterXSize, like.RasterYSize
    full = (0, 0, width, height)
    head = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">\n'
            f"  <SRS>{escape(like.GetProjection())}</SRS>\n"
            f"  <GeoTransform>{', '.join(f'{v:.17g}' for v in like.GetGeoTransform())}</GeoTransform>\n")
    path = _unique(os.path.join(folder, f"{stem}.vrt"))
    if masks:
        # (value - nodata) x keep_1 x keep_2...: 0 = no data or masked; the nodata value is then 0.
        masked = path.removesuffix(".vrt") + ".masked.vrt"
        body = []
        for i, layer in enumerate(layers, start=1):
            sources = [_source("ComplexSource", layer.source, layer.band, full, full,
                               f"<ScaleOffset>{-layer.nodata:.17g}</ScaleOffset><ScaleRatio>1</ScaleRatio>")]
            sources += [_source("ComplexSource", m.source, 1, m.src, m.dst, f"<LUT>{m.lut}</LUT>",
                                resampling="nearest") for m in masks]
            body.append(f'  <VRTRasterBand dataType="Int32" band="{i}" subClass="VRTDerivedRasterBand">\n'
                        "    <PixelFunctionType>mul</PixelFunctionType>\n"
                        "    <SourceTransferType>Float64</SourceTransferType>\n"
                        + "".join(sources) + "  </VRTRasterBand>\n")
        _write_text(masked, head + "".join(body) + "</VRTDataset>\n")
        layers = [_Layer(masked, i, 0.0, layer.nodata + layer.offset, layer.ratio)
                  for i, layer in enumerate(layers, start=1)]
    body = []
    for i, (band, layer) in enumerate(zip(bands, layers, strict=True), start=1):
        # The LUT (applied after the scaling) clamps to the int16 range, whatever type the reader asks
        # for (e.g. the saturated DN 65535 of ESA products -> 32767).
        scale = (f"<ScaleOffset>{layer.offset * layer.ratio:.17g}</ScaleOffset>"
                 f"<ScaleRatio>{layer.ratio:.17g}</ScaleRatio><NODATA>{layer.nodata:.17g}</NODATA>"
                 f"<LUT>{INT16_CLAMP}</LUT>")
        body.append(f'  <VRTRasterBand dataType="Int16" band="{i}">\n'
                    f"    <Description>{escape(band)}</Description>\n"
                    f"    <NoDataValue>{PRODUCT_NODATA}</NoDataValue>\n"
                    + _source("ComplexSource", layer.source, layer.band, full, full, scale)
                    + "  </VRTRasterBand>\n")
    items = "".join(f"    <MDI key={quoteattr(k)}>{escape(v)}</MDI>\n" for k, v in metadata.items())
    _write_text(path, head + f"  <Metadata>\n{items}  </Metadata>\n" + "".join(body) + "</VRTDataset>\n")
    with gdal_errors(f"{path}: the VRT written for the product cannot be read"):
        check = gdal.Open(path)
        check.GetRasterBand(1).Checksum(0, 0, 1, 1)  # the sources open (a 1-pixel read)
    return path


def _source(kind: str, filename: str, band: int, src: tuple, dst: tuple, extra: str,
            resampling: str | None = None) -> str:
    """The XML of a VRT source."""
    attribute = f" resampling={quoteattr(resampling)}" if resampling else ""
    return (f"    <{kind}{attribute}>\n"
            f'      <SourceFilename relativeToVRT="0">{escape(filename)}</SourceFilename>\n'
            f"      <SourceBand>{band}</SourceBand>\n"
            f"      {_rect('SrcRect', src)}\n"
            f"      {_rect('DstRect', dst)}\n"
            f"      {extra}\n"
            f"    </{kind}>\n")


def _write_text(path: str, text: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as err:
        raise SR4RSError(f"{path}: cannot write the input's VRT ({err.strerror or err})") from None


def _unique(path: str) -> str:
    """`path`, or `path` with a number before its extension when it exists (several inputs, one folder)."""
    stem, ext = os.path.splitext(path)
    n = 1
    while os.path.exists(path):
        n += 1
        path = f"{stem}_{n}{ext}"
    return path


def _safe(text: str) -> str:
    """A file name made of `text` (letters, digits, -, _, .)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:200]


def _mask_text(mask: str | None) -> str:
    """What a mask turns into nodata, for the log ("" without a mask)."""
    if mask == "SCL":
        return " and SCL classes " + ", ".join(f"{c} ({t})" for c, t in SCL_MASKED.items())
    if mask == "CLM":
        return " and clouds (CLM bits) and edges (EDG)"
    return ""
