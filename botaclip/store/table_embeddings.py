"""Embedding tables as published (Major TOM, Clay, Earth Index: GeoParquet with one vector column per row and a
point or polygon geometry) for ``store import --embedding``: the vector column read as is, and polygons (chips,
grid cells) assigned to the store cells whose centres they contain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from botaclip.errors import InvalidInputError, param
from botaclip.store import h3vec


def _is_vector(v) -> bool:
    return isinstance(v, (list, tuple, np.ndarray))


def vector_columns(df) -> list[str]:
    """Columns whose values are lists or arrays (a vector per row)."""
    out = []
    for c in df.columns:
        if c == getattr(df, "_geometry_column_name", None) or df[c].dtype != object:
            continue
        first = df[c].dropna()
        if len(first) and _is_vector(first.iloc[0]):
            out.append(c)
    return out


def pick_vector_column(df, p: Path, columns: list[str] | None) -> str | None:
    """The vector column to import (None: the table has the embedding as numeric columns instead)."""
    vecs = vector_columns(df)
    if columns:
        named = [c for c in columns if c in vecs]
        if named and len(columns) > 1:
            raise InvalidInputError(f"{param('columns')} names the vector column {named[0]!r} of {p} with other "
                                    "columns; name the vector column alone")
        return named[0] if named else None
    if len(vecs) > 1:
        raise InvalidInputError(f"{p} has several vector columns ({', '.join(map(str, vecs))}); name the embedding "
                                f"with {param('columns')}")
    return vecs[0] if vecs else None


def expand_vectors(series, p: Path) -> np.ndarray:
    """float64 [N, D] from a column of equal-length vectors; a one-line error on ragged, empty or text rows."""
    if series.isna().any():
        raise InvalidInputError(f"column {series.name!r} of {p} has {int(series.isna().sum())} empty rows; drop them "
                                "first")
    lengths = series.map(len).to_numpy()
    if lengths.min() != lengths.max() or lengths.min() == 0:
        raise InvalidInputError(f"vectors of column {series.name!r} in {p} have lengths {lengths.min()} to "
                                f"{lengths.max()}; an embedding needs one length")
    try:
        return np.stack(series.map(lambda v: np.asarray(v, dtype=np.float64)).to_numpy())
    except (TypeError, ValueError):
        raise InvalidInputError(f"column {series.name!r} of {p} holds vectors that are not numbers") from None


def is_polygon_table(df) -> bool:
    """A GeoDataFrame whose geometries are (multi)polygons."""
    geom = getattr(df, "geometry", None) if getattr(df, "_geometry_column_name", None) else None
    return geom is not None and len(geom) > 0 and bool(geom.geom_type.isin(["Polygon", "MultiPolygon"]).all())


def polygon_cells(store, gdf, crs: str | None, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(cells, row of each) for polygons: every store cell whose centre lies in a polygon takes that row; a
    polygon smaller than a cell (no centre inside) takes the cell of its representative point."""
    import h3

    if gdf.crs is None and crs is None:
        raise InvalidInputError(f"{source} has no CRS; pass {param('crs')} (e.g. EPSG:4326)")
    gdf = gdf.set_crs(crs, allow_override=True) if crs else gdf
    geoms = gdf.geometry.to_crs(4326)
    cells, rows = [], []
    for i, g in enumerate(geoms):
        if g is None or g.is_empty:
            continue
        inside = [h3.str_to_int(c) for c in h3.geo_to_cells(g.__geo_interface__, store.resolution)]
        if not inside:
            pt = g.representative_point()
            inside = [int(h3vec.latlng_to_cell(np.array([pt.y]), np.array([pt.x]), store.resolution)[0][0])]
        cells += inside
        rows += [i] * len(inside)
    if not cells:
        raise InvalidInputError(f"{source} holds only empty geometries")
    return np.asarray(cells, dtype=np.uint64), np.asarray(rows, dtype=np.int64)
