"""Spatial block cross-validation folds from the H3 hierarchy.

Blocks are the parent cells of the samples at a coarser resolution (``block_res``); each block goes to exactly
one fold, so neighbouring cells inside a block are never split between training and test. Folds depend only on
(cells, labels, n_folds, block_res, seed): the same folds are used for every feature set and model compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from botaclip.errors import BotaclipError
from botaclip.sdm.cells import cell_to_parent, resolution_of

MIN_BLOCKS_PER_FOLD = 4


@dataclass(frozen=True)
class SpatialFolds:
    """Fold assignment of each sample (0..n_folds-1) and the blocks behind it."""

    fold: np.ndarray  # int64 per sample
    block: np.ndarray  # uint64 parent cell per sample
    block_res: int
    n_folds: int
    notes: list[str] = field(default_factory=list)

    @property
    def n_blocks(self) -> int:
        return int(np.unique(self.block).size)

    def split(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(train indices, test indices) of fold ``k``."""
        return np.flatnonzero(self.fold != k), np.flatnonzero(self.fold == k)


def default_block_res(cells: np.ndarray, positive: np.ndarray | None, n_folds: int) -> int | None:
    """The coarsest resolution whose parents give at least 4 blocks per fold (and a block with a presence per fold).

    Returns ``None`` when even the cells' own resolution does not give that many blocks.
    """
    cells = np.asarray(cells, dtype=np.uint64)
    cell_res = int(resolution_of(cells[:1])[0])
    for res in range(0, cell_res + 1):
        blocks = cell_to_parent(cells, res)
        if np.unique(blocks).size < MIN_BLOCKS_PER_FOLD * n_folds:
            continue
        if positive is not None and np.unique(blocks[positive]).size < n_folds:
            continue
        return res
    return None


def spatial_folds(
    cells: np.ndarray,
    y: np.ndarray | None = None,
    n_folds: int = 5,
    block_res: int | None = None,
    seed: int = 0,
) -> SpatialFolds:
    """Assign samples to ``n_folds`` spatially disjoint folds made of whole H3 parent blocks.

    ``cells``: uint64 H3 cells of the samples (one resolution); ``y``: labels (presence = ``y > 0``, also for
    abundance) used to balance presences across folds. ``block_res``: resolution of the blocks (coarser than the
    cells); default: the coarsest resolution that still gives at least 4 blocks per fold.
    Blocks are dealt greedily, those with most presences first (ties broken by a seeded shuffle), each to the fold
    with the fewest presences so far, then the fewest samples.
    """
    cells = np.asarray(cells, dtype=np.uint64)
    if n_folds < 2:
        raise BotaclipError(f"--folds must be at least 2, got {n_folds}")
    if cells.size == 0:
        raise BotaclipError("no samples to split into folds")
    resolutions = np.unique(resolution_of(cells))
    if resolutions.size != 1:
        raise BotaclipError(f"samples mix H3 resolutions {resolutions.tolist()}; folds need one resolution")
    cell_res = int(resolutions[0])
    positive = None if y is None else np.asarray(y, dtype=np.float64) > 0
    notes: list[str] = []
    if block_res is None:
        block_res = default_block_res(cells, positive, n_folds)
        if block_res is None:
            block_res = cell_res
            notes.append(
                f"fewer than {MIN_BLOCKS_PER_FOLD} blocks per fold at every resolution; "
                f"using single cells (resolution {cell_res}) as blocks"
            )
    elif not 0 <= block_res <= cell_res:
        raise BotaclipError(f"--block-res must be between 0 and the cells' resolution {cell_res}, got {block_res}")

    block = cell_to_parent(cells, block_res)
    uniq, inverse = np.unique(block, return_inverse=True)
    if uniq.size < n_folds:
        raise BotaclipError(
            f"only {uniq.size} spatial blocks at resolution {block_res} for {n_folds} folds; "
            "use a finer --block-res or fewer --folds"
        )
    block_total = np.bincount(inverse, minlength=uniq.size)
    block_pos = (
        np.bincount(inverse, weights=positive.astype(np.float64), minlength=uniq.size)
        if positive is not None
        else np.zeros(uniq.size)
    )
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(uniq.size)
    # Stable sort of a shuffled order: most presences first, then largest blocks, seeded ties.
    order = shuffled[np.lexsort((-block_total[shuffled], -block_pos[shuffled]))]
    fold_pos = np.zeros(n_folds)
    fold_total = np.zeros(n_folds)
    fold_rank = rng.permutation(n_folds)  # seeded tie-break between folds
    block_fold = np.empty(uniq.size, dtype=np.int64)
    for b in order:
        k = int(np.lexsort((fold_rank, fold_total, fold_pos))[0])
        block_fold[b] = k
        fold_pos[k] += block_pos[b]
        fold_total[k] += block_total[b]
    if uniq.size < MIN_BLOCKS_PER_FOLD * n_folds and not notes:
        notes.append(f"only {uniq.size} blocks at resolution {block_res} for {n_folds} folds")
    return SpatialFolds(block_fold[inverse], block, int(block_res), int(n_folds), notes)
