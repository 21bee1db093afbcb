"""Which cells a similarity search may return: an H3 cell's descendants, a bounding box, a polygon, a maximum
distance from a point, or all of these at once (AND). Evaluated on uint64 cell ids in numpy, so the same filter
serves an exact scan and the candidates of an approximate index.

Coordinates are degrees in (lat, lng) order; a bbox is text ``west,south,east,north`` as everywhere in botaclip
(:func:`botaclip.geo.parse_bbox`). Distances are great-circle kilometres between cell centres.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from botaclip.errors import BotaclipError, InvalidInputError, MissingFileError, param
from botaclip.geo import BBOX_ORDER, is_bbox_text, parse_bbox, union_of_polygons
from botaclip.store import h3vec

if TYPE_CHECKING:
    from botaclip.store.store import Store

EARTH_RADIUS_KM = 6371.0088


@dataclass
class Region:
    """A filter on cells; every field left None lets everything through."""

    cell_range: tuple[int, int] | None = None  # descendants of a coarse cell: lo <= h3 <= hi
    bbox: tuple[float, float, float, float] | None = None  # west, south, east, north (centre inside)
    cells: np.ndarray | None = None  # sorted uint64: cells whose centre is inside a polygon
    near: tuple[float, float] | None = None  # (lat, lng) degrees, with max_km
    max_km: float | None = None

    @property
    def everything(self) -> bool:
        return self.cell_range is None and self.bbox is None and self.cells is None and self.max_km is None

    def mask(self, h3: np.ndarray) -> np.ndarray | None:
        """bool[n] of the cells `h3` (uint64) inside the region, or None when the region is everything."""
        if self.everything:
            return None
        keep = np.ones(len(h3), dtype=bool)
        if self.cell_range is not None:
            keep &= (h3 >= np.uint64(self.cell_range[0])) & (h3 <= np.uint64(self.cell_range[1]))
        if self.cells is not None:
            pos = np.clip(np.searchsorted(self.cells, h3), 0, max(len(self.cells) - 1, 0))
            keep &= (self.cells[pos] == h3) if len(self.cells) else False
        if self.bbox is None and self.max_km is None:
            return keep
        idx = np.flatnonzero(keep)
        lat, lng = h3vec.cell_to_latlng(h3[idx])
        ok = np.ones(len(idx), dtype=bool)
        if self.bbox is not None:
            w, s, e, n = self.bbox
            ok &= (lat >= s) & (lat <= n) & (lng >= w) & (lng <= e)
        if self.max_km is not None:
            ok &= distance_km(self.near, lat, lng) <= self.max_km
        keep[idx[~ok]] = False
        return keep


def distance_km(origin: tuple[float, float], lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
    """Great-circle (haversine) distance in km from `origin` = (lat, lng) to each (lat, lng), all in degrees."""
    la0, lo0 = np.radians(origin[0]), np.radians(origin[1])
    la, lo = np.radians(lat), np.radians(lng)
    a = np.sin((la - la0) / 2) ** 2 + np.cos(la0) * np.cos(la) * np.sin((lo - lo0) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def parse_within(store: "Store", within: str | None) -> Region:
    """The region of `within`: an H3 cell (hex) at the store resolution or coarser, a bounding box
    "west,south,east,north" in degrees (cells whose centre is inside), or a vector file (GeoJSON, GeoPackage, ...)
    of polygons in any CRS (cells whose centre is inside); None: everywhere."""
    if not within:
        return Region()
    if os.path.exists(within):
        return Region(cells=polygon_cells(store, within, "within"))
    if is_bbox_text(within):
        return Region(bbox=parse_bbox(within, "within"))
    try:
        cell = int(within.strip(), 16)
    except ValueError:
        raise InvalidInputError(f"{param('within')} {within!r} is not a file, a bbox {BBOX_ORDER!r} "
                                "or an H3 cell") from None
    if not h3vec.is_valid_cell(np.array([cell], np.uint64))[0]:
        raise InvalidInputError(f"{param('within')} {within!r} is not a valid H3 cell")
    res = int(h3vec.get_resolution(np.array([cell], np.uint64))[0])
    if res > store.resolution:
        raise InvalidInputError(f"{param('within')} cell {within} (resolution {res}) is finer than the store's "
                                f"{store.resolution}")
    return Region(cell_range=h3vec.children_range(cell, store.resolution))


def polygon_cells(store: "Store", path: str, option: str) -> np.ndarray:
    """Sorted uint64 cells at the store resolution whose centre lies inside the polygons of vector file `path`
    (any CRS GDAL reads; points and lines are ignored). `option` names the CLI option in errors."""
    import geopandas as gpd
    import h3
    import shapely

    if not os.path.isfile(path):
        raise MissingFileError(f"{param(option)} {path}: no such file")
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BotaclipError(f"cannot read polygon file {path} ({param(option)}): {first}") from None
    if gdf.crs is None:
        raise InvalidInputError(f"polygon file {path} has no CRS; give it one (e.g. with ogr2ogr -a_srs)")
    geom, _ = union_of_polygons(gdf.to_crs(4326).geometry.values, f"polygon file {path}")
    cells: list[int] = []
    for poly in getattr(geom, "geoms", [geom]):
        if not isinstance(poly, shapely.Polygon):
            continue
        shape = h3.LatLngPoly([(y, x) for x, y in poly.exterior.coords],
                              *[[(y, x) for x, y in r.coords] for r in poly.interiors])
        cells += [h3.str_to_int(c) for c in h3.h3shape_to_cells(shape, store.resolution)]
    if not cells:
        raise InvalidInputError(f"the polygons of {path} ({param(option)}) cover no cell centre at the store "
                                f"resolution {store.resolution}")
    return np.unique(np.array(cells, dtype=np.uint64))


def cells_of_file(store: "Store", path: str) -> np.ndarray:
    """Distinct uint64 cells (store resolution) of a table of points or cells: CSV (lat/lng or h3 columns), Parquet
    or GeoParquet, or any vector file of points (GeoPackage, GeoJSON; any CRS), e.g. vegetation plots."""
    import geopandas as gpd
    import pandas as pd

    from botaclip.store.io import table_to_cells

    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix in (".csv", ".txt", ".tsv"):
            df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        elif suffix in (".parquet", ".pq", ".geoparquet"):
            try:
                df = gpd.read_parquet(path)
            except ValueError:  # plain Parquet, no geometry
                df = pd.read_parquet(path)
        else:
            df = gpd.read_file(path)
    except Exception as exc:  # pandas / pyogrio / pyarrow raise many types for unreadable files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BotaclipError(f"cannot read the example cells file {path} ({param('cells')}): {first}") from None
    if len(df) == 0:
        raise InvalidInputError(f"{path} ({param('cells')}) holds no rows")
    cells, _ = table_to_cells(store, df, source=path)
    return np.unique(cells)
