"""Opening and validating the rasters chips are read from.

A :class:`RasterSource` is everything the chip reader needs to know about one raster, checked once at the start
of a job so that bad input fails before any work: the file exists and GDAL reads it, it has a CRS, an unrotated
geotransform, and as many data bands as there are wavelengths.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import rasterio
import shapely
from pyproj import CRS, Transformer
from rasterio.enums import ColorInterp

from botaclip.errors import BotaclipError, InvalidInputError, MissingFileError, param
from botaclip.imagery.bands import BandSpec
from botaclip.imagery.remote import (
    check_cloud_optimised,
    describe_error,
    gdal_env,
    gdal_path,
    is_virtual,
    probe,
    remote_url,
    warn_not_cog,
)


def metres_per_degree(lat_deg: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Length in metres of one degree of longitude and of latitude at latitude ``lat_deg`` (WGS84 ellipsoid).

    Returns ``(m_per_deg_lng, m_per_deg_lat)``.
    """
    phi = np.radians(np.asarray(lat_deg, dtype="float64"))
    m_lat = 111132.92 - 559.82 * np.cos(2 * phi) + 1.175 * np.cos(4 * phi) - 0.0023 * np.cos(6 * phi)
    m_lng = 111412.84 * np.cos(phi) - 93.5 * np.cos(3 * phi) + 0.118 * np.cos(5 * phi)
    return m_lng, m_lat


@dataclass(frozen=True)
class RasterSource:
    """One validated raster.

    Attributes:
        path: the path GDAL opens (an http(s) URL becomes ``/vsicurl/URL``).
        crs: its coordinate reference system.
        transform: its affine geotransform (pixel corner -> CRS coordinates), without rotation.
        width, height: size in pixels.
        bands: 1-based indexes of the data bands read (alpha bands excluded; they act as masks).
        geographic: True for a geographic CRS (coordinates in degrees).
        metres_per_unit: for a projected CRS, metres per CRS unit (1.0 for metre-based CRSs).
        pixel_size_m: the larger pixel side in metres (at the raster's centre latitude when geographic).
        footprint: the raster's extent as a WGS84 polygon (lng, lat), densified so that curved edges survive.
        size_bytes, mtime_ns: file size and modification time, for provenance and cache keys (for a URL: as the
            server reports them, 0 when it does not).
        etag: the server's ETag of a remote raster (None for local files or when not sent).
    """

    path: str
    crs: CRS
    transform: rasterio.Affine
    width: int
    height: int
    bands: tuple[int, ...]
    geographic: bool
    metres_per_unit: float
    pixel_size_m: float
    footprint: shapely.Polygon
    size_bytes: int
    mtime_ns: int
    etag: str | None = None

    @property
    def url(self) -> str | None:
        """The http(s) URL of a remote raster, else None."""
        return remote_url(self.path)

    @property
    def label(self) -> str:
        """How messages name the raster: its URL or its path."""
        return self.url or self.path

    def describe(self) -> dict:
        """A JSON-friendly description for provenance (a remote raster: its URL and the server's ETag)."""
        extra = {"url": self.url, "etag": self.etag} if self.url else {}
        return {
            "path": self.path if is_virtual(self.path) else os.path.abspath(self.path),
            **extra,
            "size_bytes": self.size_bytes,
            "mtime_ns": self.mtime_ns,
            "crs": self.crs.to_string(),
            "width": self.width,
            "height": self.height,
            "bands": list(self.bands),
        }


def open_source(path: str, spec: BandSpec) -> RasterSource:
    """Open ``path`` (a file, an http(s) URL, a ``/vsicurl/`` or other GDAL virtual path) with GDAL, check it
    against ``spec`` and describe it. Raises :class:`BotaclipError`."""
    path = gdal_path(str(path))
    url = remote_url(path)
    info = probe(url) if url is not None else None  # a 404, a failing server, no Range support: one line now
    if url is None:
        _check_local(path)
    crs, transform, width, height, count, colorinterp = _read_header(path, url)
    data_bands = tuple(i for i, ci in enumerate(colorinterp, start=1) if ci != ColorInterp.alpha)
    if len(data_bands) != spec.count:
        # An alpha-flagged band may still be data (a 4-band RGBN written as RGBA): count all bands then.
        data_bands = tuple(range(1, count + 1))
    if len(data_bands) != spec.count:
        raise InvalidInputError(
            f"{url or path} has {len(data_bands)} band(s) but {spec.count} wavelengths were given ({spec.describe()}); "
            f"choose the matching {param('bands')} preset or give one {param('wavelengths')} value per band"
        )
    pcrs = CRS.from_user_input(crs.to_wkt())
    geographic = pcrs.is_geographic
    if geographic:
        metres_per_unit = 1.0
    else:
        units = pcrs.axis_info[0].unit_conversion_factor if pcrs.axis_info else 1.0
        metres_per_unit = float(units or 1.0)
    footprint = _footprint_wgs84(pcrs, transform, width, height, path)
    if geographic:
        m_lng, m_lat = metres_per_degree(footprint.centroid.y)
        pixel_size_m = max(abs(transform.a) * float(m_lng), abs(transform.e) * float(m_lat))
    else:
        pixel_size_m = max(abs(transform.a), abs(transform.e)) * metres_per_unit
    st = os.stat(path) if info is None and os.path.exists(path) else None
    return RasterSource(
        path=path,
        crs=pcrs,
        transform=transform,
        width=width,
        height=height,
        bands=data_bands,
        geographic=geographic,
        metres_per_unit=metres_per_unit,
        pixel_size_m=pixel_size_m,
        footprint=footprint,
        size_bytes=info.size_bytes if info else (st.st_size if st else 0),
        mtime_ns=info.mtime_ns if info else (st.st_mtime_ns if st else 0),
        etag=info.etag if info else None,
    )


def _check_local(path: str) -> None:
    if not os.path.exists(path) and not path.startswith("/vsi"):
        raise MissingFileError(f"imagery file not found: {path}")
    if os.path.isdir(path):
        raise InvalidInputError(f"imagery path {path} is a directory; give raster files (or a VRT built over them)")
    if not path.startswith("/vsi") and not os.access(path, os.R_OK):
        raise BotaclipError(f"imagery file {path} is not readable (permission denied)")


def _read_header(path: str, url: str | None) -> tuple:
    """(crs, transform, width, height, count, colorinterp) of the raster, checked; a remote raster that is not
    cloud-optimised is read (with a warning)."""
    try:
        with gdal_env([path]), rasterio.open(path) as ds:
            crs, transform = ds.crs, ds.transform
            width, height, count = ds.width, ds.height, ds.count
            colorinterp = ds.colorinterp
            slow = check_cloud_optimised(ds, path) if url is not None else None
    except rasterio.errors.RasterioIOError as exc:
        if url is not None:
            raise BotaclipError(f"{describe_error(path, exc)}; is it a raster GDAL reads (GeoTIFF/COG)?") from None
        detail = str(exc).splitlines()[0] if str(exc) else "unknown format"
        raise InvalidInputError(
            f"{path} is not a raster GDAL can read ({detail}); give a GeoTIFF, COG, VRT, JPEG2000 or other GDAL raster"
        ) from None
    if slow:
        warn_not_cog(url, slow)
    where = url or path
    if crs is None:
        raise InvalidInputError(
            f"{where} has no coordinate reference system; assign one, e.g. `gdal_edit.py -a_srs EPSG:2154 {path}`"
        )
    if transform.b != 0 or transform.d != 0:
        raise InvalidInputError(f"{where} has a rotated geotransform; warp it north-up first (gdalwarp)")
    if transform.a <= 0 or transform.e == 0 or transform.is_identity:
        raise InvalidInputError(f"{where} has no usable geotransform (pixel size {transform.a}, {transform.e})")
    return crs, transform, width, height, count, colorinterp


def _footprint_wgs84(crs: CRS, transform, width: int, height: int, path: str, per_edge: int = 16) -> shapely.Polygon:
    # Densify the pixel-grid border so that a projected rectangle keeps its curved shape in lng/lat.
    t = np.linspace(0.0, 1.0, per_edge + 1)[:-1]
    cols = np.concatenate([t * width, np.full_like(t, width), (1 - t) * width, np.zeros_like(t)])
    rows = np.concatenate([np.zeros_like(t), t * height, np.full_like(t, height), (1 - t) * height])
    xs = transform.c + cols * transform.a
    ys = transform.f + rows * transform.e
    to_wgs84 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lng, lat = to_wgs84.transform(xs, ys)
    if not (np.all(np.isfinite(lng)) and np.all(np.isfinite(lat))):
        raise InvalidInputError(f"{path}: its extent cannot be converted to longitude/latitude (check its CRS)")
    poly = shapely.Polygon(np.column_stack([lng, lat]))
    return poly if poly.is_valid else shapely.make_valid(poly).convex_hull


def half_extent_units(source: RasterSource, chip_m: float, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half the chip side in the raster's CRS units along x and y, at latitudes ``lat`` (degrees).

    Projected rasters: metres in their CRS (``chip_m / 2`` divided by the CRS unit). Geographic rasters: metres
    converted to degrees of longitude and latitude at each chip's latitude.
    """
    half = chip_m / 2.0
    lat = np.asarray(lat, dtype="float64")
    if source.geographic:
        m_lng, m_lat = metres_per_degree(lat)
        return half / np.maximum(m_lng, 1e-9), half / m_lat
    h = np.full(lat.shape, half / source.metres_per_unit)
    return h, h.copy()


def min_pixel_count(source: RasterSource, chip_m: float) -> float:
    """How many raster pixels the chip spans along its shorter side (< 1 means the chip is below one pixel)."""
    return chip_m / source.pixel_size_m if source.pixel_size_m > 0 else math.inf
