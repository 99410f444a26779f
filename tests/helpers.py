"""Shared test helpers: synthetic GeoTIFFs and the paths of ../shared."""
from __future__ import annotations

import os

import numpy as np
import pytest
from osgeo import gdal, gdal_array, ogr, osr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("SR4RS_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
ORIGINAL_CODE = os.path.join(SHARED, "sr4rs-original", "code")
ORIGINAL_SHIM = os.path.join(SHARED, "sr4rs-original", "otbtf_shim")

needs_original = pytest.mark.skipif(
    not os.path.isdir(ORIGINAL_CODE),
    reason=f"the original SR4RS code is not at {ORIGINAL_CODE} (set SR4RS_SHARED to the shared folder)")


def write_raster(path: str, array: np.ndarray, origin: tuple[float, float] = (500000.0, 4800000.0),
                 pixel_size: float = 10.0, epsg: int = 32631, nodata: float | None = None,
                 options: tuple[str, ...] = ()) -> str:
    """Write an array [rows, cols, bands] (or [rows, cols]) as a north-up GeoTIFF in its own data type."""
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    rows, cols, bands = array.shape
    gtype = gdal_array.NumericTypeCodeToGDALTypeCode(array.dtype)
    ds = gdal.GetDriverByName("GTiff").Create(path, cols, rows, bands, gtype, list(options))
    ds.SetGeoTransform((origin[0], pixel_size, 0.0, origin[1], 0.0, -pixel_size))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds.SetProjection(srs.ExportToWkt())
    for b in range(bands):
        band = ds.GetRasterBand(b + 1)
        band.WriteArray(array[:, :, b])
        if nodata is not None:
            band.SetNoDataValue(nodata)
    ds = None
    return path


def write_random_vgg19(path: str, seed: int = 0, skip: tuple[str, ...] = ()) -> str:
    """A vgg19.npy with random weights of the real conv layer shapes (He-scaled so activations stay
    finite), as the pickled dict the real file is; layers in `skip` are left out."""
    from vgg import layer_shapes

    rng = np.random.default_rng(seed)
    data = {}
    for name, shape in layer_shapes().items():
        if name in skip:
            continue
        fan_in = shape[0] * shape[1] * shape[2]
        kernel = (rng.standard_normal(shape, dtype=np.float32) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        data[name] = [kernel, rng.standard_normal(shape[-1:], dtype=np.float32) * 0.1]
    np.save(path, data, allow_pickle=True)
    return path


def write_points(path: str, xy, epsg: int = 32631, geom_type: int = ogr.wkbPoint,
                 fields: dict | None = None) -> str:
    """A GeoPackage layer "points" of points (or other WKT geometries when xy holds strings), with an
    integer field "label" (100 + index unless `fields` maps an index to a value). No R-tree index: in a
    process where TensorFlow is loaded, GDAL gets an SQLite without the rtree module."""
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(path)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    layer = ds.CreateLayer("points", srs, geom_type, options=["SPATIAL_INDEX=NO"])
    layer.CreateField(ogr.FieldDefn("label", ogr.OFTInteger))
    for i, p in enumerate(xy):
        feat = ogr.Feature(layer.GetLayerDefn())
        feat.SetField("label", (fields or {}).get(i, 100 + i))
        if isinstance(p, str):
            geom = ogr.CreateGeometryFromWkt(p)
        else:
            geom = ogr.Geometry(ogr.wkbPoint)
            geom.AddPoint_2D(float(p[0]), float(p[1]))
        feat.SetGeometry(geom)
        layer.CreateFeature(feat)
    ds = None
    return path
