"""Spatial block cross-validation folds from the H3 hierarchy.

Blocks are the parent cells of the samples at a coarser resolution (``block_res``); each block goes to exactly
one fold, so neighbouring cells inside a block are never split between training and test. Folds depend only on
(cells, labels, n_folds, block_res, seed): the same folds are used for every feature set and model compared.
The block resolution can be given, or chosen from the range of spatial autocorrelation of the model's inputs
(:mod:`botaclip.sdm.autocorrelation`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from botaclip.errors import InvalidInputError, param
from botaclip.sdm.autocorrelation import (
    MIN_BLOCKS_PER_FOLD,
    coarsest_block_res,
    edge_length_m,
    enough_blocks,
    format_distance,
    resolution_for_range,
)
from botaclip.sdm.cells import cell_to_parent, resolution_of


@dataclass(frozen=True)
class SpatialFolds:
    """Fold assignment of each sample (0..n_folds-1) and the blocks behind it.

    ``how`` says how ``block_res`` was chosen: 'given' (forced), 'range' (from the autocorrelation range
    ``range_m``, metres), 'coarsest' (the coarsest resolution with enough blocks), 'cells' (single cells) or
    'cross-fit' (the blocks and folds of cross-fitted adapters).
    """

    fold: np.ndarray  # int64 per sample
    block: np.ndarray  # uint64 parent cell per sample
    block_res: int
    n_folds: int
    notes: list[str] = field(default_factory=list)
    how: str = "given"
    range_m: float | None = None

    @property
    def n_blocks(self) -> int:
        return int(np.unique(self.block).size)

    def split(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(train indices, test indices) of fold ``k``."""
        return np.flatnonzero(self.fold != k), np.flatnonzero(self.fold == k)

    def describe(self) -> str:
        """One line: how many blocks at which resolution, and why that resolution."""
        edge = edge_length_m(self.block_res)
        text = f"{self.n_folds} folds from {self.n_blocks} blocks at H3 resolution {self.block_res} " \
               f"(edge {format_distance(edge)})"
        if self.how == "range":
            text += f", chosen from the features' autocorrelation range {format_distance(self.range_m)}"
        elif self.how == "coarsest":
            text += ", the coarsest resolution with >= 4 blocks per fold"
        elif self.how == "cross-fit":
            text += ", the blocks the adapters were cross-fitted on"
        return text


def default_block_res(cells: np.ndarray, positive: np.ndarray | None, n_folds: int) -> int | None:
    """The coarsest resolution whose parents give at least 4 blocks per fold (and a block with a presence per fold).

    Returns ``None`` when even the cells' own resolution does not give that many blocks.
    """
    return coarsest_block_res(cells, positive, n_folds)


def block_res_from_range(cells: np.ndarray, positive: np.ndarray | None, n_folds: int,
                         range_m: float) -> tuple[int | None, list[str]]:
    """The resolution whose cell edge is closest to ``range_m`` (metres), or the next finer one that still gives
    at least 4 blocks per fold; ``None`` if none does. Returns (resolution, notes)."""
    cells = np.asarray(cells, dtype=np.uint64)
    cell_res = int(resolution_of(cells[:1])[0])
    res = resolution_for_range(range_m, cell_res)
    if enough_blocks(cells, positive, n_folds, res):
        return res, []
    finer = coarsest_block_res(cells, positive, n_folds, start=res + 1)
    if finer is None:
        return None, []
    return finer, [f"the autocorrelation range {format_distance(range_m)} suggests blocks at resolution {res}, "
                   f"which give fewer than {MIN_BLOCKS_PER_FOLD} blocks per fold; using resolution {finer}"]


def spatial_folds(
    cells: np.ndarray,
    y: np.ndarray | None = None,
    n_folds: int = 5,
    block_res: int | None = None,
    seed: int = 0,
    *,
    range_m: float | None = None,
    assigned: tuple[np.ndarray, np.ndarray] | None = None,
) -> SpatialFolds:
    """Assign samples to ``n_folds`` spatially disjoint folds made of whole H3 parent blocks.

    ``cells``: uint64 H3 cells of the samples (one resolution); ``y``: labels (presence = ``y > 0``, also for
    abundance) used to balance presences across folds. ``block_res``: resolution of the blocks (coarser than the
    cells). Without it: the resolution whose edge is closest to ``range_m`` (the autocorrelation range in metres,
    see :func:`botaclip.sdm.autocorrelation.autocorrelation_range`) if given, else the coarsest resolution that
    still gives at least 4 blocks per fold. ``assigned``: (blocks at ``block_res``, their folds) fixed in advance
    (cross-fitted adapters); other blocks are dealt around them.
    Blocks are dealt greedily, those with most presences first, then the largest (ties broken by a seeded
    shuffle): a block with presences to the fold with the fewest presences so far, a block without to the fold
    with the fewest other samples (absences or background); ties to the fold with the fewest samples.
    """
    cells = np.asarray(cells, dtype=np.uint64)
    if n_folds < 2:
        raise InvalidInputError(f"{param('folds')} must be at least 2, got {n_folds}")
    if cells.size == 0:
        raise InvalidInputError("no samples to split into folds")
    resolutions = np.unique(resolution_of(cells))
    if resolutions.size != 1:
        raise InvalidInputError(f"samples mix H3 resolutions {resolutions.tolist()}; folds need one resolution")
    positive = None if y is None else np.asarray(y, dtype=np.float64) > 0
    if assigned is not None and block_res is None:
        raise InvalidInputError(f"folds assigned in advance need their {param('block_res')}")
    block_res, how, notes = _block_resolution(cells, positive, n_folds, block_res, range_m, int(resolutions[0]))
    if assigned is not None:
        how = "cross-fit"
    block = cell_to_parent(cells, block_res)
    uniq, inverse = np.unique(block, return_inverse=True)
    if uniq.size < n_folds:
        raise InvalidInputError(
            f"only {uniq.size} spatial blocks at resolution {block_res} for {n_folds} folds; "
            f"use a finer {param('block_res')} or fewer {param('folds')}"
        )
    block_fold = _deal_blocks(inverse, uniq, positive, n_folds, seed, assigned)
    if uniq.size < MIN_BLOCKS_PER_FOLD * n_folds and not notes:
        notes.append(f"only {uniq.size} blocks at resolution {block_res} for {n_folds} folds")
    return SpatialFolds(block_fold[inverse], block, int(block_res), int(n_folds), notes, how,
                        None if range_m is None else float(range_m))


def _block_resolution(cells, positive, n_folds: int, block_res: int | None, range_m: float | None,
                      cell_res: int) -> tuple[int, str, list[str]]:
    """(resolution, how it was chosen, notes): given, from the autocorrelation range, or the coarsest with
    enough blocks; single cells when nothing qualifies."""
    if block_res is not None:
        if not 0 <= block_res <= cell_res:
            raise InvalidInputError(f"{param('block_res')} must be between 0 and the cells' resolution {cell_res}, "
                                    f"got {block_res}")
        return int(block_res), "given", []
    notes: list[str] = []
    if range_m is not None and np.isfinite(range_m):
        res, notes = block_res_from_range(cells, positive, n_folds, range_m)
        how = "range"
    else:
        res, how = default_block_res(cells, positive, n_folds), "coarsest"
    if res is None:
        return cell_res, "cells", notes + [
            f"fewer than {MIN_BLOCKS_PER_FOLD} blocks per fold at every resolution; "
            f"using single cells (resolution {cell_res}) as blocks"]
    return res, how, notes


def _deal_blocks(inverse: np.ndarray, uniq: np.ndarray, positive: np.ndarray | None, n_folds: int, seed: int,
                 assigned: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """The fold of each block (see :func:`spatial_folds` for the rule)."""
    block_total = np.bincount(inverse, minlength=uniq.size)
    block_pos = (np.bincount(inverse, weights=positive.astype(np.float64), minlength=uniq.size)
                 if positive is not None else np.zeros(uniq.size))
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(uniq.size)
    # Stable sort of a shuffled order: most presences first, then largest blocks, seeded ties.
    order = shuffled[np.lexsort((-block_total[shuffled], -block_pos[shuffled]))]
    fold_pos = np.zeros(n_folds)
    fold_total = np.zeros(n_folds)
    fold_rank = rng.permutation(n_folds)  # seeded tie-break between folds
    block_fold = _assigned_folds(uniq, assigned, n_folds)
    fixed = block_fold >= 0
    np.add.at(fold_pos, block_fold[fixed], block_pos[fixed])
    np.add.at(fold_total, block_fold[fixed], block_total[fixed])
    for b in order[~fixed[order]]:
        # A block with presences goes where presences are fewest; one without goes where the other samples
        # (absences, background) are fewest. Ranking every block by presences alone would pile all
        # presence-free blocks into one fold (a fold of nearly only background, the others nearly without).
        primary = fold_pos if block_pos[b] > 0 else fold_total - fold_pos
        k = int(np.lexsort((fold_rank, fold_total, primary))[0])
        block_fold[b] = k
        fold_pos[k] += block_pos[b]
        fold_total[k] += block_total[b]
    return block_fold


def _assigned_folds(uniq: np.ndarray, assigned: tuple[np.ndarray, np.ndarray] | None, n_folds: int) -> np.ndarray:
    """The fold fixed in advance for each block (-1 where none is)."""
    block_fold = np.full(uniq.size, -1, dtype=np.int64)
    if assigned is None:
        return block_fold
    fixed_blocks, fixed_folds = (np.asarray(a) for a in assigned)
    if fixed_folds.size and not (0 <= fixed_folds.min() and fixed_folds.max() < n_folds):
        raise InvalidInputError(f"folds assigned in advance must lie in 0..{n_folds - 1}")
    by_block = np.argsort(fixed_blocks.astype(np.uint64))
    fixed_blocks, fixed_folds = fixed_blocks.astype(np.uint64)[by_block], fixed_folds[by_block]
    if fixed_blocks.size:
        pos = np.clip(np.searchsorted(fixed_blocks, uniq), 0, fixed_blocks.size - 1)
        hit = fixed_blocks[pos] == uniq
        block_fold[hit] = fixed_folds[pos[hit]]
    return block_fold
