"""H3 functions for any DuckDB connection, with the names and signatures of DuckDB's `h3` community extension.

`register_h3_functions(con)` first tries `LOAD h3` (the real extension, if it is installed locally; nothing is
downloaded). Otherwise it registers Arrow-batch Python UDFs (one Python call per DuckDB vector of ~2048 rows,
computed with numpy / h3ronpy, see `h3vec`) under internal names, and a TEMP MACRO per public name that casts the
arguments, so cell ids may be UBIGINT, BIGINT or integer literals. NULL in gives NULL out; input the H3 library
rejects (non-finite coordinates, invalid cells, a finer parent resolution) also gives NULL.
"""

from __future__ import annotations

from typing import Callable

import duckdb
import h3.api.basic_int as h3i
import numpy as np
import pyarrow as pa

from botaclip.store import h3vec

_PREFIX = "_botaclip_"

# public name -> (parameter names, parameter SQL types, return SQL type)
SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "h3_latlng_to_cell": (("lat", "lng", "res"), ("DOUBLE", "DOUBLE", "INTEGER"), "UBIGINT"),
    "h3_latlng_to_cell_string": (("lat", "lng", "res"), ("DOUBLE", "DOUBLE", "INTEGER"), "VARCHAR"),
    "h3_cell_to_parent": (("cell", "res"), ("UBIGINT", "INTEGER"), "UBIGINT"),
    "h3_cell_to_children": (("cell", "res"), ("UBIGINT", "INTEGER"), "UBIGINT[]"),
    "h3_cell_to_lat": (("cell",), ("UBIGINT",), "DOUBLE"),
    "h3_cell_to_lng": (("cell",), ("UBIGINT",), "DOUBLE"),
    "h3_cell_to_latlng": (("cell",), ("UBIGINT",), "DOUBLE[]"),
    "h3_grid_disk": (("cell", "k"), ("UBIGINT", "INTEGER"), "UBIGINT[]"),
    "h3_grid_distance": (("origin", "destination"), ("UBIGINT", "UBIGINT"), "BIGINT"),
    "h3_cell_to_boundary_wkt": (("cell",), ("UBIGINT",), "VARCHAR"),
    "h3_h3_to_string": (("cell",), ("UBIGINT",), "VARCHAR"),
    "h3_string_to_h3": (("cell",), ("VARCHAR",), "UBIGINT"),
    "h3_is_valid_cell": (("cell",), ("UBIGINT",), "BOOLEAN"),
    "h3_is_pentagon": (("cell",), ("UBIGINT",), "BOOLEAN"),
    "h3_get_resolution": (("cell",), ("UBIGINT",), "INTEGER"),
}


def _values(arr: pa.Array, fill, dtype) -> tuple[np.ndarray, np.ndarray]:
    """numpy values (nulls replaced by `fill`) and a validity mask of one UDF argument."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    vals = arr.fill_null(fill).to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return vals, valid


def _cells(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Cell ids of a UDF argument and a mask of entries that are non-null valid H3 cells."""
    cells, valid = _values(arr, 0, np.uint64)
    if valid.any():
        valid = valid.copy()
        valid[valid] = h3vec.is_valid_cell(cells[valid])
    return cells, valid


def _per_cell(arr: pa.Array, fn: Callable[[int], object], pa_type: pa.DataType) -> pa.Array:
    """Apply a scalar h3-py function to each valid cell of a batch (NULL where invalid or it raises)."""
    cells, valid = _cells(arr)
    out: list = [None] * len(cells)
    for i in np.flatnonzero(valid):
        try:
            out[i] = fn(int(cells[i]))
        except Exception:  # h3-py raises for cells its function cannot handle; SQL gets NULL
            out[i] = None
    return pa.array(out, pa_type)


def _latlng_to_cell(lat: pa.Array, lng: pa.Array, res: pa.Array) -> pa.Array:
    la, v1 = _values(lat, np.nan, np.float64)
    ln, v2 = _values(lng, np.nan, np.float64)
    rs, v3 = _values(res, -1, np.int64)
    valid = v1 & v2 & v3 & (rs >= 0) & (rs <= 15)
    out = np.zeros(len(la), dtype=np.uint64)
    for r in np.unique(rs[valid]):
        sel = valid & (rs == r)
        cells, ok = h3vec.latlng_to_cell(la[sel], ln[sel], int(r))
        out[sel] = cells
        valid[np.flatnonzero(sel)[~ok]] = False
    return pa.array(out, pa.uint64(), mask=~valid)


def _latlng_to_cell_string(lat: pa.Array, lng: pa.Array, res: pa.Array) -> pa.Array:
    return _h3_to_string(_latlng_to_cell(lat, lng, res))


def _cell_to_parent(cell: pa.Array, res: pa.Array) -> pa.Array:
    cells, valid = _cells(cell)
    rs, v2 = _values(res, -1, np.int64)
    valid &= v2 & (rs >= 0) & (rs <= h3vec.get_resolution(cells))
    parent = h3vec.cell_to_parent(cells, np.where(valid, rs, 0))
    return pa.array(parent, pa.uint64(), mask=~valid)


def _cell_to_children(cell: pa.Array, res: pa.Array) -> pa.Array:
    cells, valid = _cells(cell)
    rs, v2 = _values(res, -1, np.int64)
    out: list = [None] * len(cells)
    for i in np.flatnonzero(valid & v2):
        try:
            out[i] = h3i.cell_to_children(int(cells[i]), int(rs[i]))
        except Exception:
            out[i] = None
    return pa.array(out, pa.list_(pa.uint64()))


def _centres(cell: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cells, valid = _cells(cell)
    lat = np.zeros(len(cells))
    lng = np.zeros(len(cells))
    if valid.any():
        lat[valid], lng[valid] = h3vec.cell_to_latlng(cells[valid])
    return lat, lng, valid


def _cell_to_lat(cell: pa.Array) -> pa.Array:
    lat, _, valid = _centres(cell)
    return pa.array(lat, pa.float64(), mask=~valid)


def _cell_to_lng(cell: pa.Array) -> pa.Array:
    _, lng, valid = _centres(cell)
    return pa.array(lng, pa.float64(), mask=~valid)


def _cell_to_latlng(cell: pa.Array) -> pa.Array:
    lat, lng, valid = _centres(cell)
    flat = pa.array(np.column_stack([lat, lng]).ravel(), pa.float64())
    offsets = pa.array(np.arange(0, 2 * len(lat) + 1, 2, dtype=np.int32))
    lists = pa.ListArray.from_arrays(offsets, flat)
    return pa.array(lists.to_pylist(), pa.list_(pa.float64()), mask=~valid) if (~valid).any() else lists


def _grid_disk(cell: pa.Array, k: pa.Array) -> pa.Array:
    cells, valid = _cells(cell)
    ks, v2 = _values(k, -1, np.int64)
    valid &= v2 & (ks >= 0)
    out: list = [None] * len(cells)
    for kk in np.unique(ks[valid]):
        idx = np.flatnonzero(valid & (ks == kk))
        for i, disk in zip(idx, h3vec.grid_disk(cells[idx], int(kk))):
            out[i] = disk.tolist()
    return pa.array(out, pa.list_(pa.uint64()))


def _grid_distance(origin: pa.Array, destination: pa.Array) -> pa.Array:
    a, va = _cells(origin)
    b, vb = _cells(destination)
    out: list = [None] * len(a)
    for i in np.flatnonzero(va & vb):
        try:
            out[i] = h3i.grid_distance(int(a[i]), int(b[i]))
        except Exception:  # too far apart or across a pentagon distortion: H3 cannot say
            out[i] = None
    return pa.array(out, pa.int64())


def _cell_to_boundary_wkt(cell: pa.Array) -> pa.Array:
    import shapely

    cells, valid = _cells(cell)
    out = np.full(len(cells), None, dtype=object)
    if valid.any():
        out[valid] = shapely.to_wkt(h3vec.cells_to_polygons(cells[valid]), rounding_precision=-1)
    return pa.array(out, pa.string())


def _h3_to_string(cell: pa.Array) -> pa.Array:
    cells, valid = _values(cell, 0, np.uint64)
    return pa.array([format(int(c), "x") if ok else None for c, ok in zip(cells, valid)], pa.string())


def _string_to_h3(text: pa.Array) -> pa.Array:
    out: list = []
    for s in text.to_pylist():
        try:
            value = int(s, 16) if s is not None else None
            out.append(value if value is not None and 0 <= value < 2**64 else None)
        except ValueError:
            out.append(None)
    return pa.array(out, pa.uint64())


def _is_valid_cell(cell: pa.Array) -> pa.Array:
    cells, present = _values(cell, 0, np.uint64)
    ok = np.zeros(len(cells), dtype=bool)
    if present.any():
        ok[present] = h3vec.is_valid_cell(cells[present])
    return pa.array(ok, pa.bool_(), mask=~present)


def _is_pentagon(cell: pa.Array) -> pa.Array:
    return _per_cell(cell, h3i.is_pentagon, pa.bool_())


def _get_resolution(cell: pa.Array) -> pa.Array:
    cells, valid = _cells(cell)
    return pa.array(h3vec.get_resolution(cells).astype(np.int32), pa.int32(), mask=~valid)


_IMPLEMENTATIONS: dict[str, Callable[..., pa.Array]] = {
    "h3_latlng_to_cell": _latlng_to_cell,
    "h3_latlng_to_cell_string": _latlng_to_cell_string,
    "h3_cell_to_parent": _cell_to_parent,
    "h3_cell_to_children": _cell_to_children,
    "h3_cell_to_lat": _cell_to_lat,
    "h3_cell_to_lng": _cell_to_lng,
    "h3_cell_to_latlng": _cell_to_latlng,
    "h3_grid_disk": _grid_disk,
    "h3_grid_distance": _grid_distance,
    "h3_cell_to_boundary_wkt": _cell_to_boundary_wkt,
    "h3_h3_to_string": _h3_to_string,
    "h3_string_to_h3": _string_to_h3,
    "h3_is_valid_cell": _is_valid_cell,
    "h3_is_pentagon": _is_pentagon,
    "h3_get_resolution": _get_resolution,
}


def try_load_extension(con: duckdb.DuckDBPyConnection) -> bool:
    """Load DuckDB's own h3 extension if it is installed locally (never downloads). True on success."""
    try:
        con.execute("LOAD h3")
        return True
    except duckdb.Error:
        return False


def register_h3_functions(con: duckdb.DuckDBPyConnection, *, prefer_extension: bool = True) -> str:
    """Make the H3 SQL functions available on `con`; returns "extension" or "python" (what provides them).

    Safe to call more than once on the same connection.
    """
    if prefer_extension and try_load_extension(con):
        return "extension"
    have = {row[0] for row in con.execute(
        "SELECT function_name FROM duckdb_functions() WHERE function_name LIKE '\\_botaclip\\_h3%' ESCAPE '\\'"
    ).fetchall()}
    for name, (params, types, returns) in SIGNATURES.items():
        internal = _PREFIX + name
        if internal not in have:
            con.create_function(internal, _IMPLEMENTATIONS[name], list(types), returns,
                                type="arrow", null_handling="special")
        # Names below are our own constants, never user input.
        args = ", ".join(f"CAST({p} AS {t})" for p, t in zip(params, types))
        con.execute(f"CREATE OR REPLACE TEMP MACRO {name}({', '.join(params)}) AS {internal}({args})")
    return "python"
