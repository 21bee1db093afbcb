"""The range of spatial autocorrelation of a model's inputs, and the H3 block resolution it suggests.

Spatial-block cross-validation only tests transfer to new places if blocks are about as large as the distance
over which the inputs stay correlated (Roberts et al. 2017; Valavi et al. 2019, blockCV's
``cv_spatial_autocor``). Blocks much larger than that range hold out whole environments and test extrapolation;
much smaller ones leak. We estimate the range from the features themselves:

1. features over the sample cells (at most ``max_points``, drawn with the seed) are z-scored and projected on
   their leading principal components (those explaining 80 % of the variance, at most 5);
2. for each component an empirical semivariogram gamma(h) = 1/2 mean (z_i - z_j)^2 over all pairs of cell
   centres in 15 equal distance bins up to a cutoff of one third of the sample extent's diagonal (gstat's
   default);
3. an exponential model gamma(h) = c0 + c1 (1 - exp(-3h / r)) is fitted by weighted least squares (weights
   N_pairs / h^2, gstat's ``fit.method = 7``); r is the *practical* range, where the correlation has fallen to
   5 %;
4. the range of the inputs is the median of the components' ranges (blockCV reports the median over layers).

Distances are great-circle distances between cell centres in metres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from botaclip.sdm.cells import cell_to_parent, cells_to_latlng, resolution_of
from botaclip.threads import blas_threads

EARTH_RADIUS_M = 6_371_008.8
N_BINS = 15
MAX_COMPONENTS = 5
MIN_BLOCKS_PER_FOLD = 4


@dataclass(frozen=True)
class AutocorrelationRange:
    """The estimated range of spatial autocorrelation (metres) and how it was found."""

    range_m: float
    component_ranges_m: list[float]
    explained_variance: list[float]
    cutoff_m: float
    n_points: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"range_m": self.range_m, "component_ranges_m": self.component_ranges_m,
                "explained_variance": self.explained_variance, "cutoff_m": self.cutoff_m,
                "n_points": self.n_points, "notes": self.notes}


def haversine_m(lat1, lng1, lat2, lng2) -> np.ndarray:
    """Great-circle distance in metres between points given in degrees (broadcasting)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(lng2) - np.radians(lng1)
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def leading_components(X: np.ndarray, max_components: int = MAX_COMPONENTS,
                       explained: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the leading principal components of the z-scored columns of X, and their variance shares.

    Missing values take the column median; constant columns are dropped. Components are kept until they explain
    ``explained`` of the variance, at most ``max_components``."""
    X = np.asarray(X, dtype=np.float64)
    if np.isnan(X).any():
        X = np.where(np.isnan(X), np.nanmedian(X, axis=0), X)
        X = np.nan_to_num(X)
    sd = X.std(axis=0)
    keep = sd > 0
    if not keep.any():
        return np.zeros((X.shape[0], 0)), np.zeros(0)
    Z = (X[:, keep] - X[:, keep].mean(axis=0)) / sd[keep]
    n, p = Z.shape
    top = min(max_components, n, p)
    # The leading eigenpairs of the smaller Gram matrix, not a full SVD: the same components (up to sign, which
    # a semivariogram ignores) at a third of the cost on 2,000 x 768. One BLAS thread: OpenBLAS threads waiting
    # for a busy core spin; on the demo's 1,621 x 384 cells an SVD cost 5.8 CPU-s with two threads on a loaded
    # 2-core machine and 0.15 with one (docs/benchmarks.md).
    from scipy.linalg import eigh

    with blas_threads(1):
        gram = Z.T @ Z if p <= n else Z @ Z.T
        values, vectors = eigh(gram, subset_by_index=[gram.shape[0] - top, gram.shape[0] - 1])
        values, vectors = np.maximum(values[::-1], 0.0), vectors[:, ::-1]
        scores = Z @ vectors if p <= n else vectors * np.sqrt(values)
    share = values / np.trace(gram)  # the trace: the variance of every component, not only the leading ones
    k = int(min(top, np.searchsorted(np.cumsum(share), explained) + 1))
    return scores[:, :k], share[:k]


def empirical_variogram(dist: np.ndarray, values: np.ndarray, cutoff: float,
                        n_bins: int = N_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean distance, semivariance, number of pairs) per distance bin for one variable.

    ``dist``: condensed pairwise distances (metres) in the order of ``np.triu_indices(n, 1)``; ``values``: the
    variable at the n points."""
    i, j = np.triu_indices(values.size, 1)
    return DistanceBins(dist, i, j, cutoff, n_bins).semivariogram(values)


class DistanceBins:
    """The pairs of points a semivariogram averages over, in ``n_bins`` equal distance bins up to ``cutoff``
    (metres): found once for every variable measured at the same points (the components of every feature set
    a comparison estimates its range on), instead of once per variable."""

    def __init__(self, dist: np.ndarray, i: np.ndarray, j: np.ndarray, cutoff: float, n_bins: int = N_BINS):
        inside = (dist > 0) & (dist <= cutoff)
        self.i, self.j = i[inside], j[inside]
        self.bins = np.minimum((dist[inside] / cutoff * n_bins).astype(np.int64), n_bins - 1)
        self.n_bins = n_bins
        self.n = np.bincount(self.bins, minlength=n_bins)
        self.h = np.bincount(self.bins, weights=dist[inside], minlength=n_bins)

    def semivariogram(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean distance, semivariance, number of pairs) per non-empty bin of ``values`` at the points."""
        sq = 0.5 * (values[self.i] - values[self.j]) ** 2
        g = np.bincount(self.bins, weights=sq, minlength=self.n_bins)
        ok = self.n > 0
        return self.h[ok] / self.n[ok], g[ok] / self.n[ok], self.n[ok]


def fit_exponential_range(h: np.ndarray, gamma: np.ndarray, n_pairs: np.ndarray, max_range: float) -> float:
    """Practical range r of gamma(h) = c0 + c1 (1 - exp(-3h/r)) fitted with weights N/h^2 (metres).

    The range is searched on a fine log grid between the first bin and ``max_range``; for each r the nugget c0
    and partial sill c1 follow from non-negative weighted least squares, so the fit has no starting values to
    get wrong."""
    from scipy.optimize import nnls

    if h.size < 3 or np.ptp(gamma) == 0:
        return float("nan")
    w = np.sqrt(n_pairs / np.maximum(h, 1e-9) ** 2)
    lo = max(float(h.min()) / 3.0, 1e-3)
    grid = np.geomspace(lo, max_range, 200)
    best, best_r = np.inf, float("nan")
    for r in grid:
        A = np.column_stack([np.ones_like(h), 1.0 - np.exp(-3.0 * h / r)]) * w[:, None]
        coef, resid = nnls(A, gamma * w)
        if coef[1] <= 0:
            continue
        if resid < best:
            best, best_r = resid, float(r)
    return best_r


@dataclass(frozen=True)
class SampledPlaces:
    """The cells a range is estimated on (at most ``max_points`` distinct ones, drawn with the seed) and the
    distance bins of their pairs: the same for every feature matrix over the same cells."""

    rows: np.ndarray  # rows of the feature matrix, one per sampled distinct cell
    bins: DistanceBins | None  # None with fewer than 10 distinct cells
    cutoff_m: float


def sample_places(cells: np.ndarray, max_points: int = 2000, seed: int = 0) -> SampledPlaces:
    """The distinct ``cells`` (uint64 H3) that :func:`autocorrelation_range` uses, at most ``max_points`` drawn
    with ``seed``, and the great-circle distance bins (metres) of their pairs up to a third of their extent's
    diagonal."""
    cells = np.asarray(cells, dtype=np.uint64)
    _, first = np.unique(cells, return_index=True)
    idx = np.sort(first)
    if idx.size > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_points, replace=False))
    if idx.size < 10:
        return SampledPlaces(idx, None, float("nan"))
    lat, lng = cells_to_latlng(cells[idx])
    i, j = np.triu_indices(idx.size, 1)
    dist = haversine_m(lat[i], lng[i], lat[j], lng[j])
    cutoff = float(haversine_m(lat.min(), lng.min(), lat.max(), lng.max())) / 3.0
    return SampledPlaces(idx, DistanceBins(dist, i.astype(np.int32), j.astype(np.int32), cutoff), cutoff)


def autocorrelation_range(cells: np.ndarray, X: np.ndarray, *, max_points: int = 2000,
                          seed: int = 0, places: SampledPlaces | None = None) -> AutocorrelationRange:
    """Estimate the range of spatial autocorrelation (metres) of the features ``X`` over the H3 ``cells``.

    ``cells``: uint64 H3 cells, one per row of ``X`` (duplicates are fine); at most ``max_points`` rows are used,
    drawn with ``seed``. Returns ``range_m = nan`` when fewer than 10 distinct places or no structure is found.
    ``places``: :func:`sample_places` of these cells, when several matrices share them.
    """
    places = places or sample_places(cells, max_points, seed)
    notes: list[str] = []
    if places.bins is None:
        return AutocorrelationRange(float("nan"), [], [], float("nan"), int(places.rows.size),
                                    ["fewer than 10 distinct cells: no variogram"])
    cutoff = places.cutoff_m
    # Only the sampled rows are made float64 (leading_components): the whole matrix of a compare, 100,000 x 768,
    # would be a 600 MB copy.
    scores, share = leading_components(np.asarray(X)[places.rows])
    ranges = []
    for c in range(scores.shape[1]):
        h, g, n = places.bins.semivariogram(scores[:, c])
        ranges.append(fit_exponential_range(h, g, n, max_range=3.0 * cutoff))
    finite = [r for r in ranges if math.isfinite(r)]
    if not finite:
        notes.append("no spatial structure found in the features' leading components")
    rng_m = float(np.median(finite)) if finite else float("nan")
    if finite and rng_m >= 0.99 * 3.0 * cutoff:
        notes.append("the features vary over the whole extent (range at the search limit)")
    return AutocorrelationRange(rng_m, [float(r) for r in ranges], [float(s) for s in share], cutoff,
                                int(places.rows.size), notes)


def format_distance(metres: float | None) -> str:
    """'2.5 km' or '750 m' ('unknown' for None/nan)."""
    if metres is None or not np.isfinite(metres):
        return "unknown"
    return f"{metres / 1000:.3g} km" if metres >= 1000 else f"{metres:.0f} m"


def edge_length_m(res: int) -> float:
    """Average edge length of an H3 hexagon at resolution ``res``, in metres."""
    import h3

    return float(h3.average_hexagon_edge_length(int(res), unit="m"))


def resolution_for_range(range_m: float, finest: int) -> int:
    """The H3 resolution (0..``finest``) whose average cell edge is closest to ``range_m`` on a log scale."""
    res = np.arange(0, finest + 1)
    edges = np.array([edge_length_m(r) for r in res])
    return int(res[np.argmin(np.abs(np.log(edges) - math.log(range_m)))])


def enough_blocks(cells: np.ndarray, positive: np.ndarray | None, n_folds: int, res: int) -> bool:
    """At least 4 blocks per fold at ``res``, and presences in at least ``n_folds`` blocks."""
    blocks = cell_to_parent(cells, res)
    if np.unique(blocks).size < MIN_BLOCKS_PER_FOLD * n_folds:
        return False
    return positive is None or np.unique(blocks[positive]).size >= n_folds


def coarsest_block_res(cells: np.ndarray, positive: np.ndarray | None, n_folds: int,
                       start: int = 0) -> int | None:
    """The coarsest resolution from ``start`` down to the cells' own that gives enough blocks (see
    :func:`enough_blocks`), or ``None``."""
    cells = np.asarray(cells, dtype=np.uint64)
    cell_res = int(resolution_of(cells[:1])[0])
    for res in range(max(0, start), cell_res + 1):
        if enough_blocks(cells, positive, n_folds, res):
            return res
    return None
