"""H3 cell arithmetic on numpy arrays of uint64 cell ids (the store's key type).

Parents are computed with bit operations on the H3 index layout (exact, vectorised); point-to-cell assignment
goes through h3-py one point at a time, which is fine for occurrence tables (<= a few 100k points).
"""

from __future__ import annotations

import h3
import numpy as np

_RES_SHIFT = 52
_RES_MASK = np.uint64(0xF << _RES_SHIFT)
_MAX_RES = 15


def resolution_of(cells: np.ndarray) -> np.ndarray:
    """H3 resolution (0-15) of each cell id."""
    cells = np.asarray(cells, dtype=np.uint64)
    return ((cells & _RES_MASK) >> np.uint64(_RES_SHIFT)).astype(np.int64)


def cell_to_parent(cells: np.ndarray, res: int) -> np.ndarray:
    """Parent cell ids at resolution ``res`` (cells must be at ``res`` or finer), as uint64.

    Equivalent to ``h3.cell_to_parent`` per cell: set the resolution field to ``res`` and the digits of the finer
    resolutions to 7 (unused).
    """
    cells = np.asarray(cells, dtype=np.uint64)
    if not 0 <= res <= _MAX_RES:
        raise ValueError(f"H3 resolution must be 0-15, got {res}")
    if cells.size and int(resolution_of(cells).min()) < res:
        raise ValueError(f"cannot take parents at resolution {res} of cells at a coarser resolution")
    unused_digits = np.uint64((1 << ((_MAX_RES - res) * 3)) - 1)
    return (cells & ~_RES_MASK) | np.uint64(res << _RES_SHIFT) | unused_digits


_latlng_to_cell = np.frompyfunc(lambda lat, lng, res: h3.str_to_int(h3.latlng_to_cell(lat, lng, res)), 3, 1)
_cell_to_latlng = np.frompyfunc(lambda c: h3.cell_to_latlng(h3.int_to_str(int(c))), 1, 1)


def latlng_to_cells(lat: np.ndarray, lng: np.ndarray, res: int) -> np.ndarray:
    """H3 cells (uint64) containing the points (lat, lng) in degrees WGS84, at resolution ``res``."""
    lat = np.asarray(lat, dtype=np.float64)
    lng = np.asarray(lng, dtype=np.float64)
    if lat.size == 0:
        return np.zeros(0, dtype=np.uint64)
    return _latlng_to_cell(lat, lng, int(res)).astype(np.uint64)


def cells_to_latlng(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres as (lat, lng) arrays in degrees."""
    cells = np.asarray(cells, dtype=np.uint64)
    if cells.size == 0:
        return np.zeros(0), np.zeros(0)
    pairs = _cell_to_latlng(cells)
    lat = np.fromiter((p[0] for p in pairs), dtype=np.float64, count=cells.size)
    lng = np.fromiter((p[1] for p in pairs), dtype=np.float64, count=cells.size)
    return lat, lng


def cell_boundaries(cells: np.ndarray) -> list[np.ndarray]:
    """Boundary of each cell as an array of (lat, lng) vertices in degrees."""
    return [np.asarray(h3.cell_to_boundary(h3.int_to_str(int(c)))) for c in np.asarray(cells, dtype=np.uint64)]


def parse_cell(text: str) -> int:
    """A cell id given as hex string (``8a1f...``) or decimal integer; raises ValueError if it is not a cell."""
    text = text.strip()
    value = int(text) if text.isdigit() else h3.str_to_int(text.lower())
    if not h3.is_valid_cell(h3.int_to_str(value)):
        raise ValueError(f"{text!r} is not an H3 cell")
    return value
