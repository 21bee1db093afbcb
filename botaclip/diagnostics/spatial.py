"""Spatial structure without labels: Moran's I over H3 ring-1 neighbours, and the sample that makes it work.

A uniform random sample of 20,000 out of 1M cells has almost no two cells adjacent, so Moran's I over H3
neighbours would have nothing to sum. The spatial sample is therefore drawn in clusters: random centre cells plus
their ring-1 neighbours (`h3_grid_disk(cell, 1)`), which keeps the neighbour pairs the statistic needs.
"""

from __future__ import annotations

import h3.api.basic_int as h3i
import numpy as np


def h3_ring1_pairs(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j), i < j, of the cells in `cells` (uint64 H3 ids) that are ring-1 neighbours.

    Each unordered neighbour pair appears once. Neighbours outside `cells` are ignored.
    """
    cells = np.asarray(cells, dtype=np.uint64)
    order = np.argsort(cells, kind="stable")
    sorted_cells = cells[order]
    rows: list[int] = []
    neighbours: list[int] = []
    for index, cell in enumerate(cells.tolist()):
        for other in h3i.grid_disk(cell, 1):
            if other != cell:
                rows.append(index)
                neighbours.append(other)
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    rows_arr = np.asarray(rows, dtype=np.int64)
    nb = np.asarray(neighbours, dtype=np.uint64)
    pos = np.searchsorted(sorted_cells, nb)
    pos_clipped = np.minimum(pos, len(sorted_cells) - 1)
    found = sorted_cells[pos_clipped] == nb
    i = rows_arr[found]
    j = order[pos_clipped[found]].astype(np.int64)
    keep = i < j
    return i[keep], j[keep]


def morans_i(values: np.ndarray, i: np.ndarray, j: np.ndarray) -> float:
    """Moran's I of `values` with binary symmetric weights over the neighbour pairs (i, j).

    I = (n / W) * sum_ij w_ij z_i z_j / sum_i z_i^2, z = value - mean, over the n cells that have at least one
    neighbour (cells without neighbours carry no spatial information and are left out). About +1 for a
    smooth field, about -1/(n-1) (close to 0) for spatial noise. NaN when there are no pairs or no variance.
    """
    values = np.asarray(values, dtype=np.float64)
    if i.shape[0] == 0:
        return float("nan")
    involved = np.unique(np.concatenate([i, j]))
    z = values - values[involved].mean()
    denom = float((z[involved] ** 2).sum())
    if denom == 0.0:
        return float("nan")
    n = involved.shape[0]
    weight_sum = 2.0 * i.shape[0]  # each unordered pair counts in both directions
    cross = 2.0 * float((z[i] * z[j]).sum())
    return (n / weight_sum) * cross / denom


def cluster_sample(
    cells_sorted: np.ndarray, n_cells: int, rng: np.random.Generator
) -> np.ndarray:
    """About `n_cells` cells drawn as clusters (a random centre and its ring-1 neighbours present in
    `cells_sorted`), sorted and unique. All cells when there are no more than `n_cells`."""
    cells_sorted = np.asarray(cells_sorted, dtype=np.uint64)
    if cells_sorted.shape[0] <= n_cells:
        return cells_sorted
    n_centres = max(1, n_cells // 7)
    centres = rng.choice(cells_sorted.shape[0], size=n_centres, replace=False)
    disk = np.fromiter(
        (c for centre in cells_sorted[centres].tolist() for c in h3i.grid_disk(centre, 1)), dtype=np.uint64
    )
    disk = np.unique(disk)
    pos = np.minimum(np.searchsorted(cells_sorted, disk), cells_sorted.shape[0] - 1)
    return disk[cells_sorted[pos] == disk]
