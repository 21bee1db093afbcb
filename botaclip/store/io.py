"""Other ways in and out of a store: import a table of points or cells, summarise covariate rasters per cell,
export a feature set as GeoParquet or GeoPackage.

Coordinates are degrees (lat, lng) once inside; any CRS is accepted at the boundary and transformed with pyproj.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from botaclip.errors import BotaclipError, InvalidInputError, MissingFileError, param, root_cause
from botaclip.store import h3vec
from botaclip.store.outputs import check_output_path
from botaclip.store.raster_grid import apply_affine
from botaclip.store.schema import check_identifier
from botaclip.store.table_embeddings import expand_vectors, is_polygon_table, pick_vector_column, polygon_cells

if TYPE_CHECKING:
    from botaclip.store.store import Store

LAT_NAMES = ("lat", "latitude", "decimallatitude", "y")
LNG_NAMES = ("lng", "lon", "long", "longitude", "decimallongitude", "x")
H3_NAMES = ("h3", "h3_cell", "cell", "h3_index")


def sanitize_column(name: str) -> str:
    """A column name usable as a SQL identifier: lower case, [a-z0-9_], not starting with a digit."""
    out = re.sub(r"[^a-z0-9_]", "_", str(name).strip().lower())
    if not out or out[0].isdigit():
        out = "c_" + out
    return out[:63]


# ---- import -------------------------------------------------------------------------------------------------

def _read_table(path: Path):
    """pandas DataFrame (or GeoDataFrame) from CSV, Parquet, GeoParquet or any vector file GDAL reads."""
    import geopandas as gpd
    import pandas as pd

    if not path.is_file():
        raise MissingFileError(f"no such file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt", ".tsv"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        if suffix in (".parquet", ".geoparquet", ".pq"):
            geo = b"geo" in (pq.read_schema(path).metadata or {})
            return gpd.read_parquet(path) if geo else pd.read_parquet(path)
        return gpd.read_file(path)
    except BotaclipError:
        raise
    except Exception as exc:  # pandas / pyogrio / pyarrow raise many types for unreadable files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BotaclipError(f"cannot read {path}: {first}") from None


def _pick(cols: list[str], wanted: str | None, candidates: tuple[str, ...], what: str) -> str | None:
    if wanted:
        if wanted not in cols:
            raise InvalidInputError(f"column {wanted!r} ({what}) not found; columns are {cols}")
        return wanted
    lower = {c.lower(): c for c in cols}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    return None


def table_to_cells(store: "Store", df, *, lat_col: str | None = None, lng_col: str | None = None,
                   h3_col: str | None = None, crs: str | None = None, source: str = "table"
                   ) -> tuple[np.ndarray, list[str]]:
    """Cell (at the store resolution) of each row, and the columns used as keys/coordinates."""
    import geopandas as gpd
    from pyproj import CRS, Transformer

    cols = [c for c in df.columns if c != getattr(df, "_geometry_column_name", None)]
    hcol = _pick(cols, h3_col, H3_NAMES, "H3 cell") if not (lat_col or lng_col) else None
    if hcol is not None:
        vals = df[hcol].to_numpy()
        try:
            cells = h3vec.as_cells(vals)
        except (ValueError, TypeError):
            raise InvalidInputError(f"column {hcol!r} of {source} does not hold H3 cell ids") from None
        valid = h3vec.is_valid_cell(cells)
        if not valid.all():
            raise InvalidInputError(f"{int((~valid).sum())} values of column {hcol!r} in {source} are not valid H3 cells "
                                    f"(first: {vals[~valid][0]})")
        res = h3vec.get_resolution(cells)
        if (res < store.resolution).any():
            raise InvalidInputError(f"cells in {source} are coarser (resolution {int(res.min())}) than the store's "
                                    f"{store.resolution}; they cannot be split into store cells")
        return h3vec.cell_to_parent(cells, store.resolution), [hcol]
    if isinstance(df, gpd.GeoDataFrame) and not (lat_col or lng_col):
        if df.crs is None and crs is None:
            raise InvalidInputError(f"{source} has no CRS; pass {param('crs')} (e.g. EPSG:2154)")
        gdf = df.set_crs(crs, allow_override=True) if crs else df
        geom = gdf.geometry
        if not (geom.geom_type == "Point").all():
            raise InvalidInputError(f"{source} holds non-point geometries; import points, or cells with an h3 column")
        pts = geom.to_crs(4326)
        lat, lng = pts.y.to_numpy(), pts.x.to_numpy()
        used: list[str] = []
    else:
        la = _pick(cols, lat_col, LAT_NAMES, "latitude / y")
        lo = _pick(cols, lng_col, LNG_NAMES, "longitude / x")
        if la is None or lo is None:
            raise InvalidInputError(f"{source} has no H3 column and no coordinate columns; name them with "
                                    f"{param('h3_col')} or {param('lat_col')}/{param('lng_col')} (columns found: " + ", ".join(map(str, cols)) + ")")
        y = df[la].to_numpy(dtype=np.float64)
        x = df[lo].to_numpy(dtype=np.float64)
        if crs:
            try:
                tr = Transformer.from_crs(CRS.from_user_input(crs), 4326, always_xy=True)
            except Exception:
                raise InvalidInputError(f"unknown CRS {crs!r}; use e.g. EPSG:2154") from None
            lng, lat = tr.transform(x, y)
        else:
            lat, lng = y, x
        used = [la, lo]
    lat, lng = np.asarray(lat, np.float64), np.asarray(lng, np.float64)
    bad = ~np.isfinite(lat) | ~np.isfinite(lng) | (np.abs(lat) > 90) | (np.abs(lng) > 180)
    if bad.any():
        raise InvalidInputError(f"{int(bad.sum())} rows of {source} have missing or out-of-range coordinates; if they "
                                f"are projected, pass {param('crs')}")
    cells, _ = h3vec.latlng_to_cell(lat, lng, store.resolution)
    return cells, used


def aggregate_per_cell(cells: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unique cells, NaN-ignoring mean of each column per cell, rows per cell)."""
    uniq, inv = np.unique(cells, return_inverse=True)
    count = np.bincount(inv, minlength=len(uniq))
    means = np.empty((len(uniq), values.shape[1]), dtype=np.float64)
    for j in range(values.shape[1]):
        v = values[:, j]
        ok = np.isfinite(v)
        s = np.bincount(inv[ok], weights=v[ok], minlength=len(uniq))
        n = np.bincount(inv[ok], minlength=len(uniq))
        with np.errstate(invalid="ignore", divide="ignore"):
            means[:, j] = np.where(n > 0, s / np.maximum(n, 1), np.nan)
    return uniq, means, count


@dataclass(frozen=True)
class RowPlacement:
    """How :func:`import_table` places rows on cells: latitude/longitude (or x/y) columns and their CRS, or an H3
    column; None everywhere: found from the column names (and a GeoDataFrame's geometry)."""

    lat_col: str | None = None
    lng_col: str | None = None
    h3_col: str | None = None
    crs: str | None = None


def import_table(store: "Store", name: str, path: str, *, columns: list[str] | None = None,
                 as_embedding: bool = False, kind: str = "imported", overwrite: bool = False,
                 provenance: dict | None = None, **placement) -> dict:
    """Import a table of points (CSV/Parquet/GeoParquet/GeoPackage, any CRS) or of H3 cells with numeric columns
    as feature set `name`, averaged per cell (plus `n_obs`, the rows per cell). With `as_embedding`, the columns
    (in order) form one unit-normalised embedding, for other models' embeddings (AlphaEarth, TESSERA, ...), or
    a list/array column holds one vector per row (GeoParquet embedding tables: Major TOM, Clay, Earth Index).
    Polygon rows (chips, grid cells) go to every cell whose centre they contain (a polygon holding no cell centre:
    the cell of its representative point). `placement`: the fields of :class:`RowPlacement` (lat_col, lng_col, h3_col, crs) as keywords."""
    where = RowPlacement(**placement)
    check_identifier(name)
    p = Path(path)
    df = _read_table(p)
    if len(df) == 0:
        raise InvalidInputError(f"{p} holds no rows")
    rows = None
    if is_polygon_table(df) and not (where.lat_col or where.lng_col or where.h3_col):
        cells, rows = polygon_cells(store, df, where.crs, str(p))  # a polygon gives every cell centre it holds
        used: list[str] = []
    else:
        cells, used = table_to_cells(store, df, lat_col=where.lat_col, lng_col=where.lng_col, h3_col=where.h3_col,
                                     crs=where.crs, source=str(p))
    value_cols, values, names = _table_values(df, p, used, columns, as_embedding)
    uniq, means, count = aggregate_per_cell(cells, values if rows is None else values[rows])
    prov = {"source": str(p.resolve()), "aggregation": "mean per cell", "source_columns": [str(c) for c in value_cols],
            "crs": str(where.crs or getattr(getattr(df, "crs", None), "srs", None) or "EPSG:4326"),
            **(provenance or {})}
    if rows is not None:
        prov["aggregation"] = "mean per cell of the rows whose polygon contains the cell centre"
    if as_embedding:
        if not np.isfinite(means).all():
            raise InvalidInputError(f"{p}: embedding columns have missing values; drop those rows first")
        with store.writer(name, kind=kind, dim=len(names), provenance=prov, overwrite=overwrite, atomic=True) as w:
            w.write(uniq, embedding=means.astype(np.float32), **({"n_obs": count} if "n_obs" in w.spec.extras else {}))
    else:
        with store.writer(name, kind=kind, columns=names, provenance=prov, overwrite=overwrite, atomic=True) as w:
            extra = {"n_obs": count} if "n_obs" in w.spec.extras else {}
            w.write(uniq, columns={n: means[:, j] for j, n in enumerate(names)}, **extra)
    return {"rows_read": int(len(df)), "cells": int(len(uniq)), "columns": names if not as_embedding else None,
            "dim": len(names) if as_embedding else None}


def _table_values(df, p: Path, used: list[str], columns: list[str] | None, as_embedding: bool
                  ) -> tuple[list[str], np.ndarray, list[str]]:
    """(source columns, float64 values [N, F], SQL-safe names): numeric columns, or with ``as_embedding`` a
    list/array column holding one vector per row (as Major TOM, Clay and Earth Index publish)."""
    vec = pick_vector_column(df, p, columns) if as_embedding else None
    if vec is not None:
        values = expand_vectors(df[vec], p)
        return [vec], values, [f"e{i}" for i in range(values.shape[1])]
    value_cols = _value_columns(df, p, used, columns, as_embedding)
    names = [sanitize_column(c) for c in value_cols]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"columns {value_cols} collide once made SQL-safe ({names}); rename them")
    return value_cols, df[value_cols].to_numpy(dtype=np.float64), names


def _value_columns(df, p: Path, used: list[str], columns: list[str] | None, as_embedding: bool) -> list[str]:
    """The columns to import: those named, or every numeric one besides the keys/coordinates and geometry."""
    geom_col = getattr(df, "_geometry_column_name", None)
    if columns:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise InvalidInputError(f"columns {missing} not in {p}; columns are {list(df.columns)}")
        value_cols = list(columns)
    else:
        candidates = [c for c in df.columns if c not in used and c != geom_col]
        value_cols = [c for c in candidates if df[c].dtype.kind in "biuf"]
        if as_embedding and len(value_cols) < len(candidates):
            # Dropping a text column would silently change the embedding's dimension.
            text = [c for c in candidates if c not in value_cols]
            raise InvalidInputError(f"columns {text} of {p} are not numeric, so they cannot be embedding dimensions; "
                                    f"name the embedding columns with {param('columns')}")
    if not value_cols:
        raise InvalidInputError(f"{p} has no numeric columns to import besides the coordinates/cells")
    for c in value_cols:
        if df[c].dtype.kind not in "biuf":  # text, even text that looks like numbers, is not imported as values
            bad = df[c][df[c].notna()]
            first = f" (first value: {bad.iloc[0]!r})" if len(bad) else ""
            raise InvalidInputError(f"column {c!r} of {p} holds text{first}, not numbers; fix the file or leave the "
                                    f"column out of {param('columns')}")
    return value_cols


# ---- rasters ------------------------------------------------------------------------------------------------

def _raster_cells(store: "Store", ds, band: int, stat: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cells, summary, pixel count) of every cell that holds a valid pixel centre: streamed chunk by chunk
    (:mod:`botaclip.store.raster_grid`), each chunk's cells summarised as soon as its window is read, so memory
    holds one window and the per-cell results, never every pixel (a median needs all of a cell's values, and a
    chunk holds all of them)."""
    from botaclip.store import raster_grid as rg

    grid = rg.RasterGrid.of(ds)
    chunk_res = rg.chunk_resolution(store.resolution, store.partition_resolution, grid.pixel_area_m2())
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    with rg.bounded_gdal_cache():
        for chunk in rg.footprint_chunks(grid, chunk_res, store.resolution):
            window = grid.window_of(int(chunk))
            if window is None:
                continue
            # float64 first: integer rasters (uint8 classes, int16 DEMs) cannot hold the NaN that marks nodata.
            vals = ds.read(band, window=window, masked=True).astype(np.float64).filled(np.nan).ravel()
            cells = grid.window_cells(window, store.resolution)
            keep = rg.in_chunk(cells, int(chunk), chunk_res) & np.isfinite(vals)
            if keep.any():
                out.append(_summarise(cells[keep], vals[keep], stat))
    if not out:
        return np.zeros(0, np.uint64), np.zeros(0), np.zeros(0, np.int64)
    return tuple(np.concatenate([o[i] for o in out]) for i in range(3))


def _summarise(cells: np.ndarray, vals: np.ndarray, stat: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if stat == "mean":
        uniq, means, count = aggregate_per_cell(cells, vals[:, None])
        return uniq, means[:, 0], count
    order = np.lexsort((vals, cells))
    c, v = cells[order], vals[order]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    counts = np.diff(np.r_[starts, len(c)])
    med = (v[starts + (counts - 1) // 2] + v[starts + counts // 2]) / 2
    return c[starts], med, counts


def _centre_sample(store: "Store", ds, band: int, cells: np.ndarray) -> np.ndarray:
    """Raster value at each cell centre (NaN outside the raster or on nodata)."""
    from pyproj import Transformer

    lat, lng = h3vec.cell_to_latlng(cells)
    x, y = Transformer.from_crs(4326, ds.crs, always_xy=True).transform(lng, lat)
    cols, rows = apply_affine(~ds.transform, np.asarray(x), np.asarray(y))
    rows, cols = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    inside = (rows >= 0) & (rows < ds.height) & (cols >= 0) & (cols < ds.width)
    out = np.full(len(cells), np.nan)
    if inside.any():
        data = ds.read(band, masked=True)
        vals = data[rows[inside], cols[inside]]
        out[inside] = np.ma.filled(vals.astype(np.float64), np.nan)
    return out


def _footprint_cells(store: "Store", ds) -> np.ndarray:
    """Cells whose centre lies inside the raster's footprint (for rasters coarser than the cells)."""
    import h3
    from rasterio.warp import transform_bounds

    w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)
    poly = h3.LatLngPoly([(s, w), (s, e), (n, e), (n, w)])
    return np.array(sorted(h3.str_to_int(c) for c in h3.h3shape_to_cells(poly, store.resolution)), dtype=np.uint64)


def _band_summary(store: "Store", ds, band: int, stat: str, target: np.ndarray | None):
    """(cells, summary, pixel count) of one band: the pixels whose centre is in each cell, then a centre sample
    for the wanted cells (``target``, else the footprint when pixels are about as coarse as cells) left out."""
    uniq, summary, count = _raster_cells(store, ds, band, stat)
    want = target
    if want is None:
        want = uniq
        if len(uniq) == 0 or count.mean() < 2:  # pixels about as coarse as cells: whole footprint
            want = np.union1d(uniq, _footprint_cells(store, ds))
    missing = np.setdiff1d(want, uniq)
    if not len(missing):
        return uniq, summary, count
    sampled = _centre_sample(store, ds, band, missing)
    ok = np.isfinite(sampled)
    return (np.r_[uniq, missing[ok]], np.r_[summary, sampled[ok]],
            np.r_[count, np.ones(int(ok.sum()), np.int64)])


def _align_columns(per_col: dict, cells_all: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Each column's values on ``cells_all`` (NaN where it has none), and the first column's pixel counts."""
    columns, n_obs = {}, None
    for col, (c, v, n) in per_col.items():
        order = np.argsort(c)
        c, v, n = c[order], v[order], n[order]
        pos = np.clip(np.searchsorted(c, cells_all), 0, max(len(c) - 1, 0))
        hit = (c[pos] == cells_all) if len(c) else np.zeros(len(cells_all), bool)
        columns[col] = np.where(hit, v[pos] if len(c) else np.nan, np.nan)
        if n_obs is None:
            n_obs = np.where(hit, n[pos] if len(c) else 0, 0)
    return columns, n_obs


def add_raster(store: "Store", name: str, rasters: list[str], *, stat: str = "mean", like: str | None = None,
               overwrite: bool = False) -> dict:
    """Summarise covariate rasters per cell into a covariates feature set `name` (one column per band, named
    after the file, `_b<i>` appended for multi-band files).

    A cell gets the mean (or median) of all valid pixels whose centre falls in the hexagon; a cell that holds no
    pixel centre (raster coarser than the cells) gets the value at its centre. Cells: those of feature set
    `like` if given, else every cell with a pixel centre (plus, for coarse rasters, every cell whose centre is in
    the raster footprint). `n_obs` is the number of pixels summarised for the first band (1 = centre sample).
    Rasters may be http(s) URLs or ``/vsicurl/`` paths of COGs (read with range requests).
    """
    from botaclip.imagery.remote import gdal_env, is_virtual

    check_identifier(name)
    if stat not in ("mean", "median"):
        raise InvalidInputError(f"unknown {param('stat')} {stat!r}; use mean or median")
    if not rasters:
        raise InvalidInputError("give at least one raster")
    if like is not None:
        store.spec(like)  # "no feature set ..." rather than "holds no cells" for a typo
    target = store.existing_cells(like) if like else None
    if like is not None and len(target) == 0:
        raise InvalidInputError(f"feature set {like!r} holds no cells")
    per_col: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    sources = []
    with gdal_env(rasters):  # URLs and /vsicurl/ paths: range requests, retries, caches (this thread only)
        for path in rasters:
            _summarise_raster(store, path, stat, target, per_col)
            sources.append(str(path) if is_virtual(str(path)) else str(Path(path).resolve()))
    cells_all = target if target is not None else np.unique(np.concatenate([v[0] for v in per_col.values()]))
    cells_all = np.asarray(cells_all, dtype=np.uint64)
    columns, n_obs = _align_columns(per_col, cells_all)
    keep = np.zeros(len(cells_all), bool)
    for v in columns.values():
        keep |= np.isfinite(v)
    if not keep.any():
        raise InvalidInputError(_no_cells_reason(store, rasters, like, any_pixel=any(len(v[0]) for v in per_col.values())))
    prov = {"sources": sources, "statistic": stat, "rule": "pixel centres in hexagon, else centre sample"}
    with store.writer(name, kind="covariates", columns=list(columns), provenance=prov, overwrite=overwrite,
                      atomic=True) as w:
        w.write(cells_all[keep], columns={k: v[keep] for k, v in columns.items()}, n_obs=n_obs[keep])
    return {"cells": int(keep.sum()), "columns": list(columns)}


def _summarise_raster(store: "Store", path: str, stat: str, target, per_col: dict) -> None:
    """Add the per-cell summary of each band of raster ``path`` to ``per_col`` (column name -> summary)."""
    import rasterio

    from botaclip.imagery.remote import display_stem, open_raster

    ds = open_raster(path)
    try:
        with ds:
            if ds.crs is None:
                raise InvalidInputError(f"raster {path} has no CRS; assign one (gdal_edit.py -a_srs) and retry")
            stem = sanitize_column(display_stem(path))
            for b in range(1, ds.count + 1):
                col = stem if ds.count == 1 else f"{stem}_b{b}"
                if col in per_col:
                    raise InvalidInputError(f"two rasters give the column name {col!r}; rename one file")
                per_col[col] = _band_summary(store, ds, b, stat, target)
    except rasterio.errors.RasterioError as exc:  # GDAL's reason (a missing VRT source, a damaged tile)
        raise BotaclipError(f"reading raster {path} failed: {root_cause(exc)}") from None


def _no_cells_reason(store: "Store", rasters: list[str], like: str | None, any_pixel: bool) -> str:
    what = ", ".join(rasters)
    if like is not None:
        return (f"no cell of {like!r} gets a value from {what}: the rasters do not overlap those cells or are "
                "nodata there; nothing was written")
    if not any_pixel:
        return f"{what} holds only nodata (or non-finite) pixels; nothing was written"
    return f"no cell of the store's resolution {store.resolution} gets a value from {what}; nothing was written"


# ---- export -------------------------------------------------------------------------------------------------

def export(store: "Store", name: str, out: str) -> dict:
    """Write feature set `name` with hexagon geometries (EPSG:4326) to `out`: `.parquet` -> GeoParquet 1.1 (`geo`
    metadata, WKB geometry, a `bbox` covering column of float64 xmin/ymin/xmax/ymax in degrees for row-group
    filtering, h3 as uint64), `.gpkg` -> GeoPackage layer `name` (h3 as hex text: GDAL has no unsigned 64-bit;
    embeddings become columns e0..e{D-1}). Streams one partition at a time."""
    import shapely

    spec = store.spec(name)
    out_p = Path(out)
    suffix = out_p.suffix.lower()
    if suffix not in (".parquet", ".gpkg"):
        raise InvalidInputError(f"cannot export to {out}: use a .parquet (GeoParquet) or .gpkg (GeoPackage) file name")
    check_output_path(out_p, what="export file")
    if out_p.exists():
        raise InvalidInputError(f"{out} already exists; remove it or choose another name")
    names = spec.feature_names()
    rows = 0
    writer = None
    tmp = out_p.with_name(f".{out_p.stem}.partial{suffix}")
    try:
        for _, h, X in store.iter_partitions(name):
            if len(h) == 0:
                continue
            polys = h3vec.cells_to_polygons(h)
            rows += len(h)
            if suffix == ".parquet":
                cols = {"h3": pa.array(h, pa.uint64())}
                if spec.is_embedding:
                    cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), spec.dim)
                else:
                    cols.update({c: pa.array(X[:, j], mask=np.isnan(X[:, j])) for j, c in enumerate(names)})
                cols["geometry"] = pa.array(shapely.to_wkb(polys), pa.binary())
                cols["bbox"] = _bbox_column(polys)
                table = pa.table(cols)
                if writer is None:
                    schema = table.schema.with_metadata({b"geo": _geo_metadata()})
                    writer = pq.ParquetWriter(tmp, schema, compression="zstd")
                table = table.replace_schema_metadata(writer.schema.metadata)
                writer.write_table(table)
            else:
                import geopandas as gpd
                import pandas as pd

                df = pd.DataFrame(X, columns=names)
                df.insert(0, "h3", [format(int(c), "x") for c in h])
                gdf = gpd.GeoDataFrame(df, geometry=polys, crs="EPSG:4326")
                gdf.to_file(tmp, layer=name, driver="GPKG", mode="a" if writer else "w")
                writer = True
        if writer is None:
            raise InvalidInputError(f"feature set {name!r} holds no rows to export")
        if suffix == ".parquet":
            writer.close()
        tmp.replace(out_p)
    finally:
        if isinstance(writer, pq.ParquetWriter):
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return {"rows": rows, "path": str(out_p)}


BBOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")


def _bbox_column(polys) -> pa.StructArray:
    """GeoParquet 1.1 bbox covering: one struct (xmin, ymin, xmax, ymax; lng/lat degrees) per geometry."""
    import shapely

    bounds = shapely.bounds(polys)
    return pa.StructArray.from_arrays([pa.array(bounds[:, i], pa.float64()) for i in range(4)], names=BBOX_FIELDS)


def _geo_metadata() -> bytes:
    """GeoParquet 1.1 `geo` metadata (CRS omitted = OGC:CRS84, i.e. lng/lat degrees; the `bbox` column declared as
    the geometry's covering, so readers can skip row groups outside a query box)."""
    covering = {"bbox": {k: ["bbox", k] for k in BBOX_FIELDS}}
    geo = {"version": "1.1.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"], "covering": covering}}}
    return json.dumps(geo).encode()
