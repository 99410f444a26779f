"""Tiny fake Sentinel-2 products for tests/test_products.py: an ESA L2A or L1C SAFE folder (the layout of
GDAL's autotest data, autotest/gdrivers/data/sentinel2: MTD_MSIL2A.xml or MTD_MSIL1C.xml,
GRANULE/*/MTD_TL.xml, JPEG 2000 band files written losslessly by GDAL's JP2OpenJPEG driver) and a
THEIA/MAJA L2A folder (GeoTIFF bands and masks), each optionally zipped."""
from __future__ import annotations

import os
import zipfile

import numpy as np
from osgeo import gdal, gdal_array, osr

# Band ids of the ESA metadata (Spectral_Information bandId), in order.
ESA_BAND_IDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
ESA_10M = ("B02", "B03", "B04", "B08")


def write_image(path: str, array: np.ndarray, origin: tuple[float, float], pixel: float, epsg: int,
                nodata: float | None = None) -> str:
    """A one-band north-up image: JPEG 2000 (lossless, JP2OpenJPEG) for a .jp2 name, else GeoTIFF."""
    gtype = gdal_array.NumericTypeCodeToGDALTypeCode(array.dtype)
    mem = gdal.GetDriverByName("MEM").Create("", array.shape[1], array.shape[0], 1, gtype)
    mem.SetGeoTransform((origin[0], pixel, 0.0, origin[1], 0.0, -pixel))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    mem.SetProjection(srs.ExportToWkt())
    mem.GetRasterBand(1).WriteArray(array)
    if nodata is not None:
        mem.GetRasterBand(1).SetNoDataValue(nodata)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if path.endswith(".jp2"):
        options = ["REVERSIBLE=YES", "QUALITY=100", "YCC=NO"]
        gdal.GetDriverByName("JP2OpenJPEG").CreateCopy(path, mem, options=options)
    else:
        gdal.GetDriverByName("GTiff").CreateCopy(path, mem)
    return path


def zip_folder(folder: str) -> str:
    """`<folder>.zip` holding the folder itself at its top level (as ESA and THEIA distribute them)."""
    parent = os.path.dirname(folder)
    path = folder.rstrip("/") + ".zip"
    with zipfile.ZipFile(path, "w") as zf:
        for root, _dirs, files in os.walk(folder):
            for name in files:
                full = os.path.join(root, name)
                zf.write(full, os.path.relpath(full, parent))
    return path


def _tile_xml(level: str, epsg: int, origin: tuple[float, float], rows: int, cols: int) -> str:
    sizes = "".join(f'<Size resolution="{r}"><NROWS>{rows * 10 // r}</NROWS>'
                    f"<NCOLS>{cols * 10 // r}</NCOLS></Size>" for r in (10, 20, 60))
    positions = "".join(f'<Geoposition resolution="{r}"><ULX>{origin[0]:g}</ULX><ULY>{origin[1]:g}</ULY>'
                        f"<XDIM>{r}</XDIM><YDIM>-{r}</YDIM></Geoposition>" for r in (10, 20, 60))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-{level}_Tile_ID xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-{level}_Tile_Metadata.xsd">
  <n1:General_Info><SENSING_TIME>2023-08-23T10:05:35.271Z</SENSING_TIME></n1:General_Info>
  <n1:Geometric_Info>
    <Tile_Geocoding metadataLevel="Brief">
      <HORIZONTAL_CS_NAME>WGS84 / UTM</HORIZONTAL_CS_NAME>
      <HORIZONTAL_CS_CODE>EPSG:{epsg}</HORIZONTAL_CS_CODE>
      {sizes}
      {positions}
    </Tile_Geocoding>
  </n1:Geometric_Info>
</n1:Level-{level}_Tile_ID>
"""


def write_esa_product(parent: str, level: str = "L2A", baseline: str = "05.09",
                      bands: dict[str, np.ndarray] | None = None, scl: np.ndarray | None = None,
                      tiles: tuple[tuple[str, int, tuple[float, float]], ...] = (("31TCJ", 32631,
                                                                                    (300000.0, 4900020.0)),),
                      offset: int | None = None, shape: tuple[int, int] = (6, 8),
                      seed: int = 0) -> tuple[str, dict[str, np.ndarray]]:
    """An ESA Sentinel-2 SAFE product (compact naming, processing baseline >= 02.06) with one granule per
    tile, its 10 m bands as uint16 JPEG 2000 files and, for L2A, the 20 m scene classification (SCL).

    Args:
        parent: the folder in which the .SAFE folder is made.
        level: "L2A" or "L1C".
        baseline: the processing baseline, e.g. "05.09" (offsets written from 04.00 on) or "03.01".
        bands: 10 m band name (B02, B03, B04, B08) -> uint16 array [rows, cols]; the default is random
            values in 1..9999 with a few 0 (no data); a band left out is listed in the metadata but its
            file is missing when the name maps to None.
        scl: the 20 m scene classification [rows / 2, cols / 2] (uint8), L2A only (default: all 4).
        tiles: (tile id, EPSG code, upper-left corner) of each granule.
        offset: the BOA_ADD_OFFSET / RADIO_ADD_OFFSET written for every band (default: -1000 from baseline
            04.00 on, none before).
        shape: (rows, cols) of the 10 m bands.
        seed: random values.

    Returns:
        the .SAFE folder and the 10 m bands written (name -> array).
    """
    rows, cols = shape
    rng = np.random.default_rng(seed)
    if bands is None:
        bands = {}
        for name in ESA_10M:
            values = rng.integers(1, 10000, size=shape).astype(np.uint16)
            values[0, 0] = 0
            bands[name] = values
    if offset is None and float(baseline) >= 4:
        offset = -1000
    date = "20230823T095559"
    l2a = level == "L2A"
    name = f"S2B_MSI{level}_{date}_N{baseline.replace('.', '')}_R122_T{tiles[0][0]}_20230823T124759.SAFE"
    safe = os.path.join(parent, name)
    granules = []
    for tile, epsg, origin in tiles:
        granule = f"{level}_T{tile}_A033753_{date}"
        gdir = os.path.join(safe, "GRANULE", granule)
        os.makedirs(gdir, exist_ok=True)
        with open(os.path.join(gdir, "MTD_TL.xml"), "w") as f:
            f.write(_tile_xml("2A" if l2a else "1C", epsg, origin, rows, cols))
        files = []
        for band in ("B02", "B03", "B04", "B08"):
            stem = (f"GRANULE/{granule}/IMG_DATA/R10m/T{tile}_{date}_{band}_10m" if l2a
                    else f"GRANULE/{granule}/IMG_DATA/T{tile}_{date}_{band}")
            files.append(stem)
            if bands.get(band) is not None:
                write_image(os.path.join(safe, stem + ".jp2"), bands[band], origin, 10.0, epsg)
                if tile != tiles[0][0]:
                    # GDAL 3.6 names the band files of every granule of a compact product after the
                    # product's first tile (real compact products have a single tile).
                    write_image(os.path.join(safe, stem.replace(f"/T{tile}_", f"/T{tiles[0][0]}_") + ".jp2"),
                                bands[band], origin, 10.0, epsg)
        if l2a:
            stem = f"GRANULE/{granule}/IMG_DATA/R20m/T{tile}_{date}_SCL_20m"
            files.append(stem)
            classes = np.full((rows // 2, cols // 2), 4, np.uint8) if scl is None else scl
            write_image(os.path.join(safe, stem + ".jp2"), classes, origin, 20.0, epsg)
        tag = "IMAGE_FILE"
        granules.append(f'<Granule datastripIdentifier="S2B_OPER_MSI_{level}_DS_2BPS" '
                        f'granuleIdentifier="S2B_OPER_MSI_{level}_TL_2BPS_A033753_T{tile}_N{baseline}" '
                        f'imageFormat="JPEG2000">'
                        + "".join(f"<{tag}>{stem}</{tag}>" for stem in files) + "</Granule>")
    offsets = ""
    if offset is not None:
        element = "BOA_ADD_OFFSET" if l2a else "RADIO_ADD_OFFSET"
        items = "".join(f'<{element} band_id="{i}">{offset}</{element}>' for i in range(13))
        offsets = (f"<BOA_ADD_OFFSET_VALUES_LIST>{items}</BOA_ADD_OFFSET_VALUES_LIST>" if l2a
                   else f"<Radiometric_Offset_List>{items}</Radiometric_Offset_List>")
    quantification = ("<QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit=\"none\">10000"
                      "</BOA_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>" if l2a
                      else '<QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>')
    spectral = "".join(f'<Spectral_Information bandId="{i}" physicalBand="{b}"><RESOLUTION>10</RESOLUTION>'
                       "</Spectral_Information>" for i, b in enumerate(ESA_BAND_IDS))
    product = "Level-2A" if l2a else "Level-1C"
    mtd = f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:{product}_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_{product}.xsd">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>2023-08-23T09:55:59.024Z</PRODUCT_START_TIME>
      <PRODUCT_STOP_TIME>2023-08-23T09:55:59.024Z</PRODUCT_STOP_TIME>
      <PRODUCT_URI>{name}</PRODUCT_URI>
      <PROCESSING_LEVEL>{product}</PROCESSING_LEVEL>
      <PRODUCT_TYPE>S2MSI{level[1:]}</PRODUCT_TYPE>
      <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
      <Datatake datatakeIdentifier="GS2B_{date}_033753_N{baseline}">
        <SPACECRAFT_NAME>Sentinel-2B</SPACECRAFT_NAME>
        <DATATAKE_SENSING_START>2023-08-23T09:55:59.024Z</DATATAKE_SENSING_START>
      </Datatake>
      <Query_Options completeSingleTile="true"><PRODUCT_FORMAT>SAFE_COMPACT</PRODUCT_FORMAT></Query_Options>
      <Product_Organisation><Granule_List>{"".join(granules)}</Granule_List></Product_Organisation>
    </Product_Info>
    <Product_Image_Characteristics>
      <Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX>
      </Special_Values>
      <Special_Values><SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT>
        <SPECIAL_VALUE_INDEX>65535</SPECIAL_VALUE_INDEX></Special_Values>
      {quantification}
      {offsets}
      <Spectral_Information_List>{spectral}</Spectral_Information_List>
    </Product_Image_Characteristics>
  </n1:General_Info>
</n1:{product}_User_Product>
"""
    with open(os.path.join(safe, f"MTD_MSI{level}.xml"), "w") as f:
        f.write(mtd)
    return safe, bands


def write_theia_product(parent: str, shape: tuple[int, int] = (6, 8), clm: np.ndarray | None = None,
                        edg: np.ndarray | None = None, missing: tuple[str, ...] = (), epsg: int = 32631,
                        origin: tuple[float, float] = (300000.0, 4900020.0),
                        seed: int = 1) -> tuple[str, dict[str, np.ndarray]]:
    """A THEIA/MAJA L2A folder (MUSCATE naming): FRE and SRE bands B2, B3, B4, B8 (int16 GeoTIFF,
    reflectance x 10000, nodata -10000), MASKS/*_CLM_R1.tif and *_EDG_R1.tif.

    Args:
        parent: the folder in which the product folder is made.
        shape: (rows, cols) of the 10 m bands.
        clm: the cloud mask bits (uint8, default none set); edg: the edge mask (uint8, default none set).
        missing: band names (e.g. "B8") whose files are not written.
        epsg, origin: the grid.
        seed: random values.

    Returns:
        the product folder and the bands written ("FRE_B4" -> array, ...).
    """
    name = "SENTINEL2A_20180622-105651-457_L2A_T31TCJ_C_V2-2"
    folder = os.path.join(parent, name)
    rng = np.random.default_rng(seed)
    written = {}
    for kind in ("FRE", "SRE"):
        for band in ("B2", "B3", "B4", "B8"):
            if band in missing:
                continue
            values = rng.integers(-500, 9000, size=shape).astype(np.int16)
            values[-1, -1] = -10000
            written[f"{kind}_{band}"] = values
            write_image(os.path.join(folder, f"{name}_{kind}_{band}.tif"), values, origin, 10.0, epsg, -10000)
    zeros = np.zeros(shape, np.uint8)
    write_image(os.path.join(folder, "MASKS", f"{name}_CLM_R1.tif"), zeros if clm is None else clm, origin,
                10.0, epsg)
    write_image(os.path.join(folder, "MASKS", f"{name}_EDG_R1.tif"), zeros if edg is None else edg, origin,
                10.0, epsg)
    with open(os.path.join(folder, f"{name}_MTD_ALL.xml"), "w") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<Muscate_Metadata_Document>'
                "<Product_Characteristics><ACQUISITION_DATE>2018-06-22T10:56:51.457Z</ACQUISITION_DATE>"
                "</Product_Characteristics></Muscate_Metadata_Document>\n")
    return folder, written
