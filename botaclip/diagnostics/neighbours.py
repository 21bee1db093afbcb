"""Cosine nearest neighbours of every row of a sample, in blocks, and per-class similarity sums.

A 20,000-cell sample would need a 20k x 20k similarity matrix (1.6 GB in float32); instead rows are processed in
blocks whose similarity slice stays under a fixed memory budget. Cost: one N x N x D matrix product.
"""

from __future__ import annotations

import numpy as np

# Bytes allowed for one block of the float32 similarity matrix.
DEFAULT_BLOCK_BYTES = 64 * 1024 * 1024
# Columns per group in the top-k prefilter (see `_top_k`).
_GROUP = 64


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32), so dot products are cosine similarities; all-zero rows stay zero."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return X / norms


def _top_k(sims: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest values of each row of `sims` (B, N), largest first.

    Faster than `argpartition` over whole rows: the k-th largest of the column-group maxima is a lower bound t of
    each row's k-th largest value (k groups reach t, so at least k values do), and only the few values >= t are
    sorted.
    """
    b, n = sims.shape
    pad = (-n) % _GROUP
    padded = sims if pad == 0 else np.concatenate([sims, np.full((b, pad), -np.inf, sims.dtype)], axis=1)
    group_max = padded.reshape(b, -1, _GROUP).max(axis=2)
    if group_max.shape[1] <= k:
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1)
    threshold = -np.partition(-group_max, k - 1, axis=1)[:, k - 1]
    rows, cols = np.nonzero(sims >= threshold[:, None])
    values = sims[rows, cols]
    order = np.lexsort((cols, -values, rows))  # by row, then value descending, then column (stable ties)
    rows, cols = rows[order], cols[order]
    starts = np.searchsorted(rows, np.arange(b))
    return cols[starts[:, None] + np.arange(k)[None, :]]


def cosine_knn(X_unit: np.ndarray, k: int = 10, block_bytes: int = DEFAULT_BLOCK_BYTES) -> np.ndarray:
    """(N, k) int64 indices of each row's k most cosine-similar other rows, most similar first (leave-one-out).

    X_unit: (N, D) rows already unit-normalised (see :func:`unit_rows`). Memory: one (block, N) float32 slice of
    the similarity matrix at a time, the block chosen to fit in `block_bytes`.
    """
    X_unit = np.ascontiguousarray(X_unit, dtype=np.float32)
    n = X_unit.shape[0]
    if n < 2:
        raise ValueError("need at least two rows for nearest neighbours")
    k = min(k, n - 1)
    block = max(1, min(n, block_bytes // (4 * n)))
    knn = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, block):
        stop = min(n, start + block)
        rows = np.arange(stop - start)
        sims = X_unit[start:stop] @ X_unit.T  # (B, N) cosine similarities
        sims[rows, start + rows] = -np.inf  # a row is not its own neighbour
        knn[start:stop] = _top_k(sims, k)
    return knn


def class_similarity_sums(X_unit: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, C) float64 sum of cosine similarities of each row to the members of each class, the row itself excluded.

    sum_{j in c} x_i . x_j = x_i . (sum_{j in c} x_j), so this needs the C class sums, not the N x N matrix.
    """
    X = np.asarray(X_unit, dtype=np.float64)
    onehot = np.zeros((X.shape[0], n_classes))
    onehot[np.arange(X.shape[0]), codes] = 1.0
    sums = X @ (onehot.T @ X).T
    sums[np.arange(X.shape[0]), codes] -= np.einsum("ij,ij->i", X, X)
    return sums
