"""Nearest cells by cosine similarity of their embeddings, in SQL (`array_cosine_similarity`).

Brute force (exact) is the default. `centered=True` ranks by centred cosine, cos(x - m, q - m) with m the feature
set's mean vector (from the catalog's geometry statistics): over a nearly collinear set (a random-init backbone,
mean pairwise cosine 0.9987) raw cosine is about 1 for every cell and centred cosine shows the structure. `method="hnsw"` builds an HNSW index with DuckDB's vss extension (from the
optional `botaclip[ann]` extra, which pins the duckdb version that `duckdb-extension-vss` ships for); it is
approximate and is refused with a clear error where vss cannot be loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pyarrow as pa

from botaclip.errors import BotaclipError, InvalidInputError, MissingDependencyError, param
from botaclip.geo import BBOX_ORDER, is_bbox_text, parse_bbox, union_of_polygons
from botaclip.store import h3vec
from botaclip.store.catalog import quote_ident, sql_string_literal

if TYPE_CHECKING:
    from botaclip.store.store import Store

METHODS = ("brute", "hnsw")


def load_vss(con: duckdb.DuckDBPyConnection) -> bool:
    """Load DuckDB's vss extension (locally installed, or from the `duckdb-extension-vss` package); no download."""
    try:
        con.execute("LOAD vss")
        return True
    except duckdb.Error:
        pass
    try:
        import duckdb_extension_vss  # the botaclip[ann] extra
    except ImportError:
        return False
    path = Path(duckdb_extension_vss.__file__).parent / "extensions" / f"v{duckdb.__version__}" / "vss.duckdb_extension"
    if not path.is_file():
        return False
    try:
        con.execute(f"LOAD {sql_string_literal(str(path))}")  # LOAD takes no parameters; path is ours
        return True
    except duckdb.Error:
        return False


def parse_region(store: "Store", within: str | None, con: duckdb.DuckDBPyConnection) -> tuple[str, list]:
    """SQL predicate (with parameters) restricting cells to a region.

    `within` is an H3 cell (hex) at the store resolution or coarser, a bounding box "west,south,east,north" in
    degrees (cells whose centre is inside; the one bbox order of :func:`botaclip.geo.parse_bbox`), or a vector file (GeoJSON, GeoPackage, ...) of polygons in any CRS.
    """
    if not within:
        return "TRUE", []
    if os.path.exists(within):
        import geopandas as gpd

        try:
            gdf = gpd.read_file(within)
        except Exception as exc:  # pyogrio raises several types for unreadable files
            raise BotaclipError(f"cannot read region file {within}: {exc}") from None
        if gdf.crs is None:
            raise InvalidInputError(f"region file {within} has no CRS; give it one (e.g. with ogr2ogr -a_srs)")
        geom, _ = union_of_polygons(gdf.to_crs(4326).geometry.values, f"region file {within}")
        return _polygon_predicate(store, con, geom)
    if is_bbox_text(within):
        w, s, e, n = parse_bbox(within, "within")
        return ("h3_cell_to_lat(h3) BETWEEN ? AND ? AND h3_cell_to_lng(h3) BETWEEN ? AND ?", [s, n, w, e])
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
    lo, hi = h3vec.children_range(cell, store.resolution)
    return "h3 BETWEEN ? AND ?", [lo, hi]


def _polygon_predicate(store: "Store", con: duckdb.DuckDBPyConnection, geom) -> tuple[str, list]:
    import h3
    import shapely

    cells: list[int] = []
    for poly in getattr(geom, "geoms", [geom]):
        if not isinstance(poly, shapely.Polygon):
            continue
        shape = h3.LatLngPoly([(y, x) for x, y in poly.exterior.coords],
                              *[[(y, x) for x, y in r.coords] for r in poly.interiors])
        cells += [h3.str_to_int(c) for c in h3.h3shape_to_cells(shape, store.resolution)]
    if not cells:
        raise InvalidInputError(f"the {param('within')} region holds no polygon covering any cell centre")
    con.register("_similar_region", pa.table({"h3": pa.array(np.unique(cells), pa.uint64())}))
    return "h3 IN (SELECT h3 FROM _similar_region)", []


class SimilaritySearch:
    """Top-k cosine search over one embedding feature set; build once, query many times."""

    def __init__(self, store: "Store", name: str, *, method: str = "brute", within: str | None = None,
                 in_memory: bool = False, centered: bool = False) -> None:
        """`in_memory` (brute force) copies the region's embeddings into a DuckDB in-memory table first: slower to
        open, much faster per query when you run many (the HNSW method always does). `centered`: rank by centred
        cosine (brute force only)."""
        if method not in METHODS:
            raise InvalidInputError(f"unknown similarity method {method!r}; use one of {', '.join(METHODS)}")
        if centered and method != "brute":
            raise InvalidInputError(f"centred cosine is exact search only: use {param('method')} brute with {param('centered')}")
        self.store = store
        self.spec = store.spec(name)
        if not self.spec.is_embedding:
            raise InvalidInputError(f"feature set {name!r} holds columns, not embeddings; similarity needs embeddings")
        self.name = name
        self.method = method
        self.center = _mean_vector(store, name) if centered else None
        self.con = store.connect()
        self.where, self.params = parse_region(store, within, self.con)
        self.source = quote_ident(name)
        if method == "brute" and in_memory:
            self.con.execute(f"CREATE TABLE memory.main._similar_mem AS SELECT h3, embedding FROM {self.source} "
                             f"WHERE {self.where}", self.params)
            self.source, self.where, self.params = "memory.main._similar_mem", "TRUE", []
        if method == "hnsw":
            if not load_vss(self.con):
                self.con.close()
                raise MissingDependencyError("the HNSW method needs DuckDB's vss extension, which is not available here; "
                                             f"install the `botaclip[ann]` extra (pins a duckdb with vss) or use {param('method')} brute")
            self.con.execute("SET hnsw_enable_experimental_persistence = false")
            self.con.execute(f"CREATE TABLE memory.main._similar_hnsw AS SELECT h3, embedding FROM {self.source} "
                             f"WHERE {self.where}", self.params)
            self.con.execute("CREATE INDEX _similar_hnsw_idx ON memory.main._similar_hnsw USING HNSW (embedding) "
                             "WITH (metric = 'cosine')")

    def query_vector(self, vector: np.ndarray, k: int = 10, exclude: int | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """(h3 uint64[k], cosine similarity float32[k]) of the k most similar cells, best first."""
        if k < 1:
            raise InvalidInputError(f"k must be >= 1, got {k}")
        q = np.asarray(vector, dtype=np.float32).ravel()
        if q.shape != (self.spec.dim,):
            raise InvalidInputError(f"query vector has {q.size} values, feature set has dim {self.spec.dim}")
        arr = f"CAST(? AS FLOAT[{self.spec.dim}])"
        extra = 1 if exclude is not None else 0
        if self.center is not None:
            # cos(x - m, q - m) = ((x - m) . q') / (|x - m| |q'|), q' = q - m, |x - m|^2 = x.x - 2 x.m + m.m:
            # inner products of the stored column with constants, so no per-row array arithmetic. In float64:
            # for a nearly collinear set |x - m|^2 is ~1e-3 of x.x, which float32 would cancel away.
            m = self.center
            qc = q.astype(np.float64) - m
            norm_q = float(np.linalg.norm(qc)) or 1.0
            dbl = f"CAST(? AS DOUBLE[{self.spec.dim}])"
            x = f"CAST(embedding AS DOUBLE[{self.spec.dim}])"
            rows = self.con.execute(
                f"SELECT h3, CAST((array_inner_product({x}, {dbl}) - ?) / (sqrt(greatest("
                f"array_inner_product({x}, {x}) - 2 * array_inner_product({x}, {dbl}) + ?, 1e-30)) * ?) AS FLOAT) "
                f"AS s FROM {self.source} WHERE {self.where} ORDER BY s DESC, h3 LIMIT ?",
                [qc.tolist(), float(m @ qc), m.tolist(), float(m @ m), norm_q, *self.params, k + extra],
            ).fetchall()
        elif self.method == "hnsw":
            # Exactly the pattern the HNSW optimiser rewrites: ORDER BY distance(col, constant) LIMIT n.
            rows = self.con.execute(
                f"SELECT h3, 1 - array_cosine_distance(embedding, {arr}) AS s FROM memory.main._similar_hnsw "
                f"ORDER BY array_cosine_distance(embedding, {arr}) LIMIT ?", [q.tolist(), q.tolist(), k + extra]
            ).fetchall()
        else:
            rows = self.con.execute(
                f"SELECT h3, array_cosine_similarity(embedding, {arr}) AS s FROM {self.source} "
                f"WHERE {self.where} ORDER BY s DESC, h3 LIMIT ?", [q.tolist(), *self.params, k + extra]
            ).fetchall()
        rows = [r for r in rows if exclude is None or r[0] != exclude][:k]
        return (np.array([r[0] for r in rows], dtype=np.uint64),
                np.array([r[1] for r in rows], dtype=np.float32))

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "SimilaritySearch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def query_cell(store: "Store", cell=None, point: tuple[float, float] | None = None) -> int:
    """The cell to search from: `cell` (int or hex) or the cell containing `point` = (lat, lng) in degrees."""
    if (cell is None) == (point is None):
        raise InvalidInputError(f"give exactly one of a cell ({param('cell')}) or a point ({param('point')} LAT,LNG)")
    if point is not None:
        lat, lng = point
        cells, ok = h3vec.latlng_to_cell(np.array([lat]), np.array([lng]), store.resolution)
        if not ok[0] or not (-90 <= lat <= 90):
            raise InvalidInputError(f"point {lat},{lng} is not a valid latitude,longitude in degrees")
        return int(cells[0])
    try:
        c = int(cell, 16) if isinstance(cell, str) else int(cell)
    except ValueError:
        raise InvalidInputError(f"cell {cell!r} is not an H3 cell id (hex like 8a1f9e5153affff)") from None
    arr = np.array([c], np.uint64)
    if not h3vec.is_valid_cell(arr)[0] or h3vec.get_resolution(arr)[0] != store.resolution:
        raise InvalidInputError(f"cell {cell} is not a valid H3 cell at the store resolution {store.resolution}")
    return c


def _mean_vector(store: "Store", name: str) -> np.ndarray:
    """The set's mean vector (float64 [D]): from the catalog's geometry statistics, else one pass over its files."""
    geometry = store.geometry(name)
    if geometry is not None:
        return np.asarray(geometry["mean"], dtype=np.float64)
    total, rows = np.zeros(store.spec(name).dim), 0
    for _, _, X in store.iter_partitions(name):
        total += X.astype(np.float64).sum(axis=0)
        rows += len(X)
    if rows == 0:
        raise InvalidInputError(f"feature set {name!r} is empty")
    return total / rows


def similar(store: "Store", name: str, *, cell=None, point: tuple[float, float] | None = None, k: int = 10,
            within: str | None = None, method: str = "brute", centered: bool = False) -> pa.Table:
    """The k cells most similar to a cell (or to the cell containing a point), excluding the query cell.

    Returns a table (rank, h3, h3_string, similarity, lat, lng) where lat/lng are the cell centres in degrees;
    with ``centered``, similarity is the centred cosine (see the module docstring).
    """
    c = query_cell(store, cell, point)
    fm = store.features_numpy(name, cells=np.array([c], np.uint64))
    if not fm.found[0]:
        raise InvalidInputError(f"cell {c:x} is not in feature set {name!r}; pick a cell that was indexed")
    with SimilaritySearch(store, name, method=method, within=within, centered=centered) as search:
        h, s = search.query_vector(fm.X[0], k=k, exclude=c)
    lat, lng = h3vec.cell_to_latlng(h) if len(h) else (np.zeros(0), np.zeros(0))
    return pa.table({"rank": pa.array(np.arange(1, len(h) + 1), pa.int32()), "h3": pa.array(h, pa.uint64()),
                     "h3_string": pa.array([format(int(x), "x") for x in h], pa.string()),
                     "similarity": pa.array(s, pa.float32()), "lat": lat, "lng": lng})
