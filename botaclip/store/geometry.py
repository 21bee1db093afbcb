"""Geometry statistics of an embedding feature set, computed when the set is written and kept in the catalog.

Why: unit-normalised embeddings of a random-init backbone are nearly collinear (mean pairwise cosine 0.9987 on the
sample region), so raw cosine similarity says little and an adapter can collapse the space onto one axis without
any metric noticing. The catalog therefore keeps, per embedding set:

- ``mean`` [D]: the mean vector of the stored (unit) embeddings, the centring used by centred cosine and by the
  BotaCLIP adapter's input;
- ``eigenvalues`` [D]: the PCA spectrum (covariance eigenvalues, largest first) and ``explained_variance_ratio``;
- ``axes`` [q, D]: the first q principal axes (unit rows, sign fixed so the largest loading is positive);
- ``effective_dim``: the participation ratio (sum l)^2 / sum l^2 of the spectrum: D for an isotropic cloud, 1 when
  all variance lies on one axis;
- ``mean_norm`` |mean| and ``mean_cosine``, the mean cosine similarity over all pairs of distinct rows.

Everything is exact for sets up to ``MAX_COVARIANCE_ROWS`` rows; above that the mean and the mean cosine stay exact
(one pass) and the spectrum comes from a deterministic, spatially uniform sample of rows (a hash of the cell id),
recorded as ``sample_rows``. numpy only: the store never imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: Rows beyond which the covariance (and so the spectrum and axes) is estimated on a sample of rows.
MAX_COVARIANCE_ROWS = 200_000
#: Principal axes kept in the catalog (the full spectrum is always kept).
N_AXES = 16


def participation_ratio(eigenvalues: np.ndarray) -> float:
    """Effective dimensionality (sum l)^2 / sum l^2 of a PCA spectrum (eigenvalues >= 0; negatives count as 0).

    Equals k for k equal eigenvalues and 1 when one eigenvalue holds all the variance; 0 for an all-zero spectrum.
    """
    ev = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    sq = float((ev**2).sum())
    return float(ev.sum() ** 2 / sq) if sq > 0 else 0.0


def _keep_for_covariance(h3: np.ndarray, fraction: float) -> np.ndarray:
    """Deterministic row sample: rows whose (mixed) cell id falls below ``fraction`` of the 64-bit range."""
    if fraction >= 1.0:
        return np.ones(len(h3), dtype=bool)
    x = np.asarray(h3, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):  # splitmix64 finaliser: neighbouring cells land far apart
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction


def geometry_stats(partitions: Iterable[tuple[np.ndarray, np.ndarray]], total_rows: int,
                   n_axes: int = N_AXES, max_covariance_rows: int = MAX_COVARIANCE_ROWS) -> dict | None:
    """Statistics of an embedding set streamed as (h3 uint64[n], X float32[n, D]) pieces; None for no rows.

    ``total_rows`` (the set's row count) decides the covariance sample before the pass; memory is O(D^2).
    """
    fraction = min(1.0, max_covariance_rows / total_rows) if total_rows > 0 else 1.0
    n = n_cov = 0
    total = cov_sum = gram = ref = None
    for h3, X in partitions:
        if len(X) == 0:
            continue
        X = np.asarray(X, dtype=np.float32)
        if total is None:
            d = X.shape[1]
            total, cov_sum, gram = np.zeros(d), np.zeros(d), np.zeros((d, d))
            # Shift by a reference point near the mean: the Gram matrix of the shifted rows holds the spread, not
            # |mean|^2, so float32 products lose nothing that matters (a nearly collinear set's covariance is
            # ~1e-3 of x.x) and the product runs at single-precision BLAS speed.
            ref = X.mean(axis=0, dtype=np.float64).astype(np.float32)
        n += len(X)
        total += X.sum(axis=0, dtype=np.float64)
        keep = _keep_for_covariance(h3, fraction)
        Xs = (X[keep] if not keep.all() else X) - ref
        n_cov += len(Xs)
        cov_sum += Xs.sum(axis=0, dtype=np.float64)
        gram += Xs.T @ Xs
    if n == 0:
        return None
    mean = total / n
    eigenvalues = np.zeros(len(mean))
    axes = np.zeros((0, len(mean)))
    if n_cov >= 2:
        m = cov_sum / n_cov  # mean of the shifted rows
        cov = (gram - n_cov * np.outer(m, m)) / (n_cov - 1)
        values, vectors = np.linalg.eigh((cov + cov.T) / 2)
        order = np.argsort(values)[::-1]
        eigenvalues = np.clip(values[order], 0.0, None)
        axes = vectors[:, order[: min(n_axes, len(mean))]].T
        signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
        axes = axes * np.where(signs == 0, 1.0, signs)[:, None]
    variance = float(eigenvalues.sum())
    # Mean cosine over pairs i != j of unit rows: (|sum x|^2 - n) / (n (n - 1)); rows are unit-normalised on write.
    mean_cosine = float((total @ total - n) / (n * (n - 1))) if n > 1 else float("nan")
    return {
        "rows": int(n),
        "sample_rows": int(n_cov),
        "dim": int(len(mean)),
        "mean": mean.tolist(),
        "mean_norm": float(np.linalg.norm(mean)),
        "mean_cosine": mean_cosine,
        "eigenvalues": eigenvalues.tolist(),
        "explained_variance_ratio": (eigenvalues / variance if variance > 0 else eigenvalues * 0).tolist(),
        "effective_dim": participation_ratio(eigenvalues),
        "axes": axes.tolist(),
    }
