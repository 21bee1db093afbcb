"""Regions of interest and the H3 cells they cover, streamed partition by partition.

A region is a bounding box (``west,south,east,north``, WGS84 degrees: see :func:`botaclip.geo.parse_bbox`), a polygon file (GeoJSON,
GeoPackage, GeoParquet; any CRS) or a file of H3 cells (text, one per line, hex or integer; or Parquet with an
``h3``/``cell`` column). A cell belongs to a polygon region when its centre lies inside it (H3's own rule).

Cells are enumerated per coarse parent cell ("partition"), never all at once, so that a region of any size runs in
bounded memory: the parents overlapping the region are listed first, then each parent's children at the target
resolution are tested against the region.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import h3
import numpy as np
import shapely
from h3.api import numpy_int as h3np

from botaclip.errors import BotaclipError, InvalidInputError, param
from botaclip.geo import BBOX_ORDER, is_bbox_text, parse_bbox, union_of_polygons

MAX_RES = 15


@dataclass(frozen=True)
class Region:
    """A region of interest: a WGS84 geometry (x = longitude, y = latitude) or an explicit set of H3 cells."""

    description: str
    geometry: shapely.Geometry | None = None
    cells: np.ndarray | None = None  # uint64, for cell-list regions
    notes: tuple[str, ...] = ()  # what was repaired while reading it (said once by the job)

    @property
    def is_cell_list(self) -> bool:
        return self.cells is not None


def check_resolution(resolution: int, what: str = "H3 resolution") -> int:
    """Validate an H3 resolution (0-15)."""
    try:
        res = int(resolution)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{what} {resolution!r} is not an integer; give a value from 0 to 15") from None
    if res != resolution or not 0 <= res <= MAX_RES:
        raise InvalidInputError(f"{what} {resolution!r} is invalid; H3 resolutions run from 0 to 15")
    return res


def parse_region(spec: str) -> Region:
    """Parse ``--region``: a bbox ``west,south,east,north`` (degrees), a polygon file or an H3 cell file."""
    spec = str(spec).strip()
    if not spec:
        raise InvalidInputError(f"{param('region')} is empty; give a bbox {BBOX_ORDER}, a polygon file or a cell file")
    if is_bbox_text(spec):
        return _bbox_region(spec)
    if not os.path.exists(spec):
        raise InvalidInputError(
            f"{param('region')} {spec!r} is neither a file nor a bbox {BBOX_ORDER} (WGS84 degrees)"
        )
    lower = spec.lower()
    if lower.endswith((".txt", ".csv", ".h3", ".cells")):
        return Region(f"cells from {spec}", cells=_read_cell_text(spec))
    if lower.endswith((".parquet", ".geoparquet", ".pq")):
        if _is_geoparquet(spec):
            return _polygon_file_region(spec)
        return Region(f"cells from {spec}", cells=_read_cell_parquet(spec))
    return _polygon_file_region(spec)


def _bbox_region(spec: str) -> Region:
    west, south, east, north = parse_bbox(spec, "region")
    return Region(f"bbox {spec}", geometry=shapely.box(west, south, east, north))


def _is_geoparquet(path: str) -> bool:
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception as exc:  # noqa: BLE001 - any pyarrow failure means "not a Parquet file we can read"
        raise BotaclipError(f"cannot read region file {path} as Parquet: {exc}") from None
    return b"geo" in meta


def _polygon_file_region(path: str) -> Region:
    import geopandas as gpd

    try:
        if path.lower().endswith((".parquet", ".geoparquet", ".pq")):
            gdf = gpd.read_parquet(path)
        else:
            gdf = gpd.read_file(path)
    except Exception as exc:  # noqa: BLE001 - pyogrio/pyarrow raise many types
        raise BotaclipError(f"cannot read region file {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    if len(gdf) == 0:
        raise InvalidInputError(f"region file {path} holds no features")
    if gdf.crs is None:
        if path.lower().endswith((".geojson", ".json")):
            gdf = gdf.set_crs("EPSG:4326")  # GeoJSON is WGS84 by definition (RFC 7946)
        else:
            raise InvalidInputError(f"region file {path} has no CRS; set one (e.g. with ogr2ogr -a_srs)")
    gdf = gdf.to_crs("EPSG:4326")
    geom, notes = union_of_polygons(gdf.geometry.values, f"region file {path}")
    polys = shapely.get_parts(geom)
    polys = [p for p in polys if isinstance(p, (shapely.Polygon, shapely.MultiPolygon))]
    if not polys:
        raise InvalidInputError(f"region file {path} holds no polygons (points and lines do not cover cells)")
    return Region(f"polygons from {path}", geometry=shapely.union_all(polys), notes=tuple(notes))


def _parse_cell(token: str, path: str) -> int:
    token = token.strip().strip('"').strip("'")
    try:
        # H3 hex strings are 15 characters; decimal integers of valid cells are 18-19 digits.
        value = int(token) if token.isdigit() and len(token) > 15 else int(token, 16)
    except (ValueError, TypeError):
        raise InvalidInputError(f"{path}: {token!r} is not an H3 cell (hex string or integer)") from None
    if not 0 < value < 2**64 or not h3np.is_valid_cell(value):
        raise InvalidInputError(f"{path}: {token!r} is not a valid H3 cell")
    return value


def _read_cell_text(path: str) -> np.ndarray:
    values = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            token = line.split(",")[0].strip()
            if not token or token.startswith("#") or token.lower() in ("h3", "cell", "cells"):
                continue
            values.append(_parse_cell(token, path))
    if not values:
        raise InvalidInputError(f"cell file {path} holds no H3 cells")
    return np.unique(np.array(values, dtype="uint64"))


def _read_cell_parquet(path: str) -> np.ndarray:
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    column = next((c for c in ("h3", "cell", "h3_cell", "cell_id") if c in names), None)
    if column is None:
        raise InvalidInputError(f"{path} has no H3 column; name it h3 or cell (columns: {', '.join(names[:8])})")
    col = pq.read_table(path, columns=[column]).column(column).to_pylist()
    values = [v if isinstance(v, int) and 0 < v < 2**64 and h3np.is_valid_cell(v) else _parse_cell(str(v), path) for v in col]
    if not values:
        raise InvalidInputError(f"cell file {path} holds no H3 cells")
    return np.unique(np.array(values, dtype="uint64"))


# -- enumeration ---------------------------------------------------------------------------------------------------


def cell_centres(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres of H3 cells (uint64) as (lat, lng) arrays in degrees."""
    out = np.empty((len(cells), 2), dtype="float64")
    for i, c in enumerate(cells.tolist()):
        out[i] = h3np.cell_to_latlng(c)
    return out[:, 0], out[:, 1]


def region_partitions(
    region: Region,
    footprint: shapely.Geometry,
    resolution: int,
    partition_resolution: int,
) -> tuple[list[int], "PartitionCells"]:
    """Plan the cells of ``region`` at ``resolution`` that fall in the imagery ``footprint`` (WGS84), grouped by
    their parent at ``partition_resolution``.

    Returns the sorted parent cells (uint64 as int) and a :class:`PartitionCells` that yields the sorted cells of
    any parent on demand. Raises :class:`BotaclipError` when the region does not intersect the imagery. Cell-list
    regions keep every listed cell (cells outside the imagery are reported by the reader, not dropped here).
    """
    resolution = check_resolution(resolution)
    partition_resolution = min(check_resolution(partition_resolution, "partition resolution"), resolution)
    if region.is_cell_list:
        cells = region.cells
        res = {h3np.get_resolution(c) for c in cells.tolist()}
        if len(res) > 1 or max(res) > resolution:
            raise InvalidInputError(
                f"{region.description}: cells must all share one resolution, {resolution} or coarser "
                f"(found {sorted(res)}); pass {param('resolution')} to match"
            )
        if max(res) < resolution:
            # Coarser cells stand for all their children at the target resolution.
            cells = np.unique(np.concatenate([h3np.cell_to_children(int(c), resolution) for c in cells.tolist()]))
        lat, lng = cell_centres(cells)
        if not shapely.contains_xy(footprint, lng, lat).any():
            raise InvalidInputError(f"{region.description}: no cell centre lies inside the imagery footprint")
        parents = np.array([h3np.cell_to_parent(int(c), partition_resolution) for c in cells.tolist()], dtype="uint64")
        order = np.lexsort((cells, parents))
        cells, parents = cells[order], parents[order]
        return sorted(set(parents.tolist())), _ListedCells(cells, parents)

    area = shapely.intersection(region.geometry, footprint)
    if area.is_empty or area.area == 0:
        raise InvalidInputError(
            f"{region.description} does not intersect the imagery (imagery covers lng {_fmt_bounds(footprint)})"
        )
    shape = h3.geo_to_h3shape(area.__geo_interface__) if not isinstance(area, shapely.GeometryCollection) else None
    if shape is None:
        polys = [p for p in shapely.get_parts(area) if isinstance(p, shapely.Polygon)]
        shape = h3.geo_to_h3shape(shapely.MultiPolygon(polys).__geo_interface__)
    parents = set(h3.h3shape_to_cells_experimental(shape, partition_resolution, contain="overlap"))
    # Children of a parent stray slightly outside its hexagon: include the neighbours of every touched parent.
    ring = set()
    for p in parents:
        ring.update(h3.grid_disk(p, 1))
    parent_ints = sorted(h3.str_to_int(p) for p in parents | ring)
    return parent_ints, _PolygonCells(area, resolution)


def _fmt_bounds(geom: shapely.Geometry) -> str:
    minx, miny, maxx, maxy = geom.bounds
    return f"{minx:.5f}..{maxx:.5f}, lat {miny:.5f}..{maxy:.5f}"


class PartitionCells:
    """Yields the sorted cells (uint64) of one partition parent."""

    def __call__(self, parent: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class _ListedCells(PartitionCells):
    def __init__(self, cells: np.ndarray, parents: np.ndarray) -> None:
        self._cells, self._parents = cells, parents

    def __call__(self, parent: int) -> np.ndarray:
        lo = np.searchsorted(self._parents, np.uint64(parent), side="left")
        hi = np.searchsorted(self._parents, np.uint64(parent), side="right")
        return self._cells[lo:hi]


class _PolygonCells(PartitionCells):
    def __init__(self, area: shapely.Geometry, resolution: int) -> None:
        self._area = area
        shapely.prepare(self._area)
        self._res = resolution

    def __call__(self, parent: int) -> np.ndarray:
        children = np.asarray(h3np.cell_to_children(int(parent), self._res), dtype="uint64")
        lat, lng = cell_centres(children)
        inside = shapely.contains_xy(self._area, lng, lat)
        return np.sort(children[inside])


def iter_region_cells(
    region: Region, footprint: shapely.Geometry, resolution: int, partition_resolution: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(parent, cells)`` for every non-empty partition of ``region`` (see :func:`region_partitions`)."""
    parents, cells_of = region_partitions(region, footprint, resolution, partition_resolution)
    for parent in parents:
        cells = cells_of(parent)
        if cells.size:
            yield parent, cells
