"""H3 cell arithmetic for the SDM code, on numpy arrays of uint64 cell ids (the store's key type).

A thin layer over :mod:`botaclip.store.h3vec`, the one implementation of H3 array operations (exact bit
operations for resolutions and parents; h3ronpy's vectorised kernels, or h3-py where it is missing, for points and
centres). What this module adds is the SDM's strictness: a coarser cell than the parent resolution, or a point
that has no cell, is an error here instead of a masked entry.
"""

from __future__ import annotations

import numpy as np

from botaclip.store import h3vec

_MAX_RES = 15


def resolution_of(cells: np.ndarray) -> np.ndarray:
    """H3 resolution (0-15) of each cell id."""
    return h3vec.get_resolution(np.asarray(cells, dtype=np.uint64)).astype(np.int64)


def cell_to_parent(cells: np.ndarray, res: int) -> np.ndarray:
    """Parent cell ids at resolution ``res`` (cells must be at ``res`` or finer), as uint64.

    Equivalent to ``h3.cell_to_parent`` per cell (see :func:`botaclip.store.h3vec.cell_to_parent`).
    """
    cells = np.asarray(cells, dtype=np.uint64)
    if not 0 <= res <= _MAX_RES:
        raise ValueError(f"H3 resolution must be 0-15, got {res}")
    if cells.size and int(resolution_of(cells).min()) < res:
        raise ValueError(f"cannot take parents at resolution {res} of cells at a coarser resolution")
    return h3vec.cell_to_parent(cells, int(res))


def in_cells(cells: np.ndarray, among: np.ndarray) -> np.ndarray:
    """bool[len(cells)]: whether each cell id is one of ``among`` (``np.isin``).

    ``among`` sorted and distinct (the store's indexed cells are) is searched by bisection: ``np.isin`` sorts
    both arrays on every call, which cost 40 ms per species against 100,000 indexed cells."""
    cells = np.asarray(cells, dtype=np.uint64)
    among = np.asarray(among, dtype=np.uint64)
    if among.size == 0 or cells.size == 0:
        return np.zeros(cells.shape, dtype=bool)
    if among.size > 1 and not np.all(among[1:] > among[:-1]):
        return np.isin(cells, among)
    pos = np.minimum(np.searchsorted(among, cells), among.size - 1)
    return among[pos] == cells


def latlng_to_cells(lat: np.ndarray, lng: np.ndarray, res: int) -> np.ndarray:
    """H3 cells (uint64) containing the points (lat, lng) in degrees WGS84, at resolution ``res``; a non-finite
    coordinate is a ValueError."""
    lat = np.asarray(lat, dtype=np.float64)
    lng = np.asarray(lng, dtype=np.float64)
    if lat.size == 0:
        return np.zeros(0, dtype=np.uint64)
    cells, ok = h3vec.latlng_to_cell(lat, lng, int(res))
    if not ok.all():
        raise ValueError(f"{int((~ok).sum())} point(s) with non-finite coordinates have no H3 cell")
    return cells


def cells_to_latlng(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres as (lat, lng) arrays in degrees."""
    cells = np.asarray(cells, dtype=np.uint64)
    if cells.size == 0:
        return np.zeros(0), np.zeros(0)
    lat, lng = h3vec.cell_to_latlng(cells)
    return np.asarray(lat, dtype=np.float64), np.asarray(lng, dtype=np.float64)


def cell_boundaries(cells: np.ndarray) -> list[np.ndarray]:
    """Boundary of each cell as an array of (lat, lng) vertices in degrees."""
    return [np.asarray(h3vec.cell_to_boundary(int(c))) for c in np.asarray(cells, dtype=np.uint64)]


def parse_cell(text: str) -> int:
    """A cell id given as hex string (``8a1f...``) or decimal integer; raises ValueError if it is not a cell."""
    text = text.strip()
    value = int(text) if text.isdigit() else int(text.lower(), 16)
    if not 0 <= value < 1 << 64 or not h3vec.is_valid_cell(np.array([value], dtype=np.uint64))[0]:
        raise ValueError(f"{text!r} is not an H3 cell")
    return value
