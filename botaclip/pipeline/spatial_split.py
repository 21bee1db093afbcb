"""Train/validation split of plots by spatial blocks (H3 parent cells), never by random rows.

Neighbouring plots share imagery and species, so a random split leaks; whole blocks go to one side instead.
"""

from __future__ import annotations

import h3
import numpy as np

from botaclip.errors import InvalidInputError, param


def block_ids(lat: np.ndarray, lng: np.ndarray, block_res: int) -> np.ndarray:
    """The H3 cell (as int) at resolution ``block_res`` containing each point (lat, lng in degrees, WGS84)."""
    if not 0 <= int(block_res) <= 15:
        raise InvalidInputError(f"{param('block_res')} must be an H3 resolution 0..15, got {block_res}")
    return np.array(
        [h3.str_to_int(h3.latlng_to_cell(float(a), float(o), int(block_res))) for a, o in zip(lat, lng, strict=True)],
        dtype=np.uint64,
    )


def spatial_block_split(
    lat: np.ndarray, lng: np.ndarray, val_fraction: float = 0.2, block_res: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Splits points into (train_idx, val_idx) by whole H3 blocks at ``block_res``.

    Blocks are shuffled with ``seed`` and moved to validation until it holds at least ``val_fraction`` of the
    points (at least one block, and never all of them). Returns sorted row indices.
    """
    if not 0 < val_fraction < 1:
        raise InvalidInputError(f"{param('val_fraction')} must be between 0 and 1 (exclusive), got {val_fraction}")
    blocks = block_ids(np.asarray(lat), np.asarray(lng), block_res)
    unique, counts = np.unique(blocks, return_counts=True)
    if len(unique) < 2:
        raise InvalidInputError(
            f"all {len(blocks)} relevés fall in one H3 block at {param('block_res')} {block_res}; "
            f"use a finer (larger) {param('block_res')} to get a spatial validation split"
        )
    order = np.random.default_rng(seed).permutation(len(unique))
    target = val_fraction * len(blocks)
    val_blocks, total = [], 0
    for i in order[:-1]:  # the last block always stays in training
        if total >= target:
            break
        val_blocks.append(unique[i])
        total += counts[i]
    is_val = np.isin(blocks, np.array(val_blocks, dtype=np.uint64))
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def spatial_block_folds(
    lat: np.ndarray, lng: np.ndarray, n_folds: int, block_res: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deals whole H3 blocks at ``block_res`` to ``n_folds`` folds of about equal numbers of points.

    Blocks are taken in an order shuffled with ``seed`` and each is given to the fold with the fewest points so
    far. (Not largest first: that order barely depends on the seed, and seeds are meant to redraw the folds.)
    Returns (blocks: sorted uint64 [B], fold of each block: int64 [B], fold of each point: int64 [N]).
    """
    if n_folds < 2:
        raise InvalidInputError(f"{param('folds')} must be at least 2 to cross-fit (0 for no cross-fitting), got {n_folds}")
    blocks = block_ids(np.asarray(lat), np.asarray(lng), block_res)
    unique, inverse, counts = np.unique(blocks, return_inverse=True, return_counts=True)
    if len(unique) < n_folds:
        raise InvalidInputError(
            f"cannot cross-fit {n_folds} folds: the {len(blocks)} relevés fall in only {len(unique)} H3 blocks at "
            f"{param('block_res')} {block_res}; use a finer (larger) {param('block_res')} or fewer {param('folds')}"
        )
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of_block = np.empty(len(unique), dtype=np.int64)
    load = np.zeros(n_folds, dtype=np.int64)
    for b in order:
        f = int(np.argmin(load))  # the first fold among the least loaded
        fold_of_block[b] = f
        load[f] += counts[b]
    return unique, fold_of_block, fold_of_block[inverse]
