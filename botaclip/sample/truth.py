"""The truth on the H3 grid: for every resolution-10 cell whose centre lies in the valid footprint, the mean
suitability of every taxon over the cell's valid area, and the cell's environment.

Suitability is evaluated on a 10 m lattice of points (about 150 per cell); a cell's truth is the mean over its
points with valid imagery, i.e. the expected outcome of a survey at a random valid place in the cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import h3
import h3.api.basic_int as h3i
import numpy as np
import pandas as pd
import pyarrow as pa
from pyproj import Transformer
from shapely.geometry import Polygon

from botaclip.sample.environment import Environment, environment_at
from botaclip.sample.landscape import HABITATS, Landscape
from botaclip.sample.species import Community

H3_RESOLUTION = 10
LATTICE_SPACING_M = 10.0
_MARGIN_M = 100.0  # lattice reaches past the raster so cells on its edge are measured whole

L93_TO_WGS84 = Transformer.from_crs("EPSG:2154", "EPSG:4326", always_xy=True)


def to_wgs84(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Lambert-93 (x, y) metres -> (lat, lng) degrees."""
    lng, lat = L93_TO_WGS84.transform(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return np.asarray(lat), np.asarray(lng)


def footprint_wgs84(footprint: Polygon) -> Polygon:
    """The footprint polygon in WGS84, coordinates (lng, lat) as GeoJSON wants them."""
    x, y = footprint.exterior.coords.xy
    lat, lng = to_wgs84(np.asarray(x), np.asarray(y))
    return Polygon(np.column_stack([lng, lat]))


def footprint_cells(footprint: Polygon) -> np.ndarray:
    """Sorted uint64 H3 cells (resolution 10) whose centre lies in the Lambert-93 footprint."""
    outer = [(lat, lng) for lng, lat in footprint_wgs84(footprint).exterior.coords]
    cells = h3i.h3shape_to_cells(h3.LatLngPoly(outer), H3_RESOLUTION)
    return np.sort(np.fromiter(cells, dtype=np.uint64, count=len(cells)))


@dataclass
class Lattice:
    """The 10 m lattice: landscape-wide environment at valid points, and its link to the footprint's cells."""

    env: Environment  # every lattice point with valid imagery
    point_cell: np.ndarray  # index into ``cells`` for each point of ``env``; -1 when its cell is not in the set
    cells: np.ndarray  # uint64, sorted
    valid_fraction: np.ndarray  # per cell


def build_lattice(land: Landscape, valid: np.ndarray, footprint: Polygon, residual: np.ndarray) -> Lattice:
    """Lay the 10 m lattice over the region (and a margin), find each point's H3 cell and its conditions."""
    grid = land.grid
    offsets = np.arange(-_MARGIN_M, grid.size_m + _MARGIN_M, LATTICE_SPACING_M) + LATTICE_SPACING_M / 2
    X, Y = np.meshgrid(grid.left + offsets, grid.top - offsets)
    x, y = X.ravel(), Y.ravel()
    inside = (x > grid.left) & (x < grid.right) & (y > grid.bottom) & (y < grid.top)
    row, col = grid.fine_index(x, y)
    ok = inside & valid[row, col]

    cells = footprint_cells(footprint)
    lat, lng = to_wgs84(x, y)
    point_cell_id = np.fromiter(
        (h3i.latlng_to_cell(a, b, H3_RESOLUTION) for a, b in zip(lat.tolist(), lng.tolist())),
        dtype=np.uint64, count=x.size,
    )
    position = np.clip(np.searchsorted(cells, point_cell_id), 0, max(cells.size - 1, 0))
    in_set = cells.size > 0
    in_set = (cells[position] == point_cell_id) if in_set else np.zeros(x.size, dtype=bool)
    index = np.where(in_set, position, -1)
    total = np.bincount(index[in_set], minlength=cells.size)
    good = np.bincount(index[in_set & ok], minlength=cells.size)

    # A cell whose centre is valid but whose lattice points all miss valid pixels: measure it at its centre.
    missing = np.flatnonzero(good == 0)
    if missing.size:
        centres = np.array([h3i.cell_to_latlng(int(c)) for c in cells[missing]])
        cx, cy = _to_l93(centres[:, 0], centres[:, 1])
        x, y = np.concatenate([x[ok], cx]), np.concatenate([y[ok], cy])
        index = np.concatenate([index[ok], missing])
        good[missing] = 1
        total[missing] = np.maximum(total[missing], 1)
    else:
        x, y, index = x[ok], y[ok], index[ok]
    return Lattice(
        env=environment_at(land, residual, x, y),
        point_cell=index,
        cells=cells,
        valid_fraction=np.minimum(good / np.maximum(total, 1), 1.0),
    )


def _to_l93(lat, lng):
    back = Transformer.from_crs("EPSG:4326", "EPSG:2154", always_xy=True)
    return back.transform(np.asarray(lng), np.asarray(lat))


def _cell_mean(lattice: Lattice, values: np.ndarray) -> np.ndarray:
    inside = lattice.point_cell >= 0
    idx = lattice.point_cell[inside]
    sums = np.bincount(idx, weights=values[inside], minlength=lattice.cells.size)
    counts = np.bincount(idx, minlength=lattice.cells.size)
    return sums / np.maximum(counts, 1)


def truth_table(lattice: Lattice, community: Community, suitability: dict[str, np.ndarray]) -> pa.Table:
    """Long table h3 (uint64), taxon, group, suitability (float64), sorted by group, taxon, h3."""
    frames = []
    for niche in community.niches:
        frames.append(pd.DataFrame({
            "h3": lattice.cells,
            "taxon": niche.taxon,
            "group": niche.group,
            "suitability": _cell_mean(lattice, suitability[niche.taxon]),
        }))
    table = pd.concat(frames, ignore_index=True)
    schema = pa.schema([("h3", pa.uint64()), ("taxon", pa.string()), ("group", pa.string()),
                        ("suitability", pa.float64())])
    return pa.Table.from_pandas(table, schema=schema, preserve_index=False)


def cells_table(lattice: Lattice) -> pa.Table:
    """One row per cell: centre (lat, lng), dominant habitat, mean elevation and moisture, valid fraction, and
    the share of each habitat in the cell's valid area (``frac_<habitat>``)."""
    cells = lattice.cells
    centres = np.array([h3i.cell_to_latlng(int(c)) for c in cells]).reshape(-1, 2)
    env = lattice.env
    fractions = np.stack([_cell_mean(lattice, (env.habitat == code).astype(np.float64))
                          for code in range(1, len(HABITATS) + 1)])
    dominant = np.array(HABITATS, dtype=object)[fractions.argmax(axis=0)] if cells.size else np.array([], object)
    data = {
        "h3": pa.array(cells, type=pa.uint64()),
        "lat": centres[:, 0],
        "lng": centres[:, 1],
        "habitat": pa.array(dominant.tolist(), type=pa.string()),
        "elevation_m": _cell_mean(lattice, env.elevation),
        "moisture": _cell_mean(lattice, env.moisture),
        "valid_fraction": lattice.valid_fraction.astype(np.float64),
    }
    for name, frac in zip(HABITATS, fractions):
        data[f"frac_{name}"] = frac
    return pa.table(data)
