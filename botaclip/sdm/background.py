"""Background cells for presence-only models.

Background is drawn from the cells that have features (the indexed cells), never from a presence cell, so the
model contrasts presences with the environment available in the study area. Target-group background takes the
cells of other occurrences of the same survey effort (e.g. all butterflies recorded), which corrects for
sampling bias when the presences share it (Phillips et al. 2009).
"""

from __future__ import annotations

import numpy as np

from botaclip.sdm.cells import in_cells

DEFAULT_BACKGROUND = 10_000


def sample_background(
    indexed_cells: np.ndarray, presence_cells: np.ndarray, n: int = DEFAULT_BACKGROUND, seed: int = 0
) -> np.ndarray:
    """``n`` distinct cells drawn uniformly from ``indexed_cells`` minus ``presence_cells`` (all if fewer), sorted.

    Draws are seeded: the same seed gives the same cells, and species with different presences share most of
    their background (the candidates are ranked once by a seeded permutation and the first ``n`` non-presence
    cells are taken).
    """
    if n <= 0:
        raise ValueError(f"background size must be positive, got {n}")
    indexed = np.asarray(indexed_cells, dtype=np.uint64)
    if indexed.size > 1 and not np.all(indexed[1:] > indexed[:-1]):  # the store's indexed cells already are
        indexed = np.unique(indexed)
    exclude = np.unique(np.asarray(presence_cells, dtype=np.uint64))
    order = np.random.default_rng(seed).permutation(indexed.size)
    # Presences marked on the sorted cells (bisection), then ranked: np.isin would sort the ranking again per species.
    candidates = indexed[order][~in_cells(indexed, exclude)[order]]
    return np.sort(candidates[:n])


def target_group_background(
    group_cells: np.ndarray,
    indexed_cells: np.ndarray,
    presence_cells: np.ndarray,
    n: int = DEFAULT_BACKGROUND,
    seed: int = 0,
) -> np.ndarray:
    """Background from the cells of a target group: the group's distinct cells that are indexed and hold no
    presence of the species, ``n`` of them drawn with ``seed`` if there are more, sorted."""
    group = np.unique(np.asarray(group_cells, dtype=np.uint64))
    group = group[in_cells(group, indexed_cells)]
    return sample_background(group, presence_cells, n, seed) if group.size else group
