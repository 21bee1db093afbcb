"""Numeric core of the embedding-space diagnostics, on plain numpy arrays (no store, no I/O).

Label structure: Davies–Bouldin index, silhouette score (cosine), leave-one-out kNN label accuracy.
Geometry kept between two feature sets on the same cells: Spearman correlation of pairwise cosine distances and
the overlap of k-nearest-neighbour sets. Principal components for maps and Moran's I (see `spatial.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from botaclip.diagnostics.neighbours import class_similarity_sums, cosine_knn, unit_rows
from botaclip.store.geometry import participation_ratio


def encode_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class names (sorted) and integer codes for an array of labels of any type."""
    classes, codes = np.unique(np.asarray(labels), return_inverse=True)
    return classes, codes.astype(np.int64)


def _check_labels(n: int, codes: np.ndarray) -> int:
    if codes.shape[0] != n:
        raise ValueError(f"{codes.shape[0]} labels for {n} rows")
    n_classes = int(codes.max()) + 1 if n else 0
    if len(np.unique(codes)) < 2:
        raise ValueError("need at least two classes")
    return n_classes


def davies_bouldin(X: np.ndarray, labels: np.ndarray) -> float:
    """Davies–Bouldin index of `labels` in the Euclidean geometry of `X` (lower = classes better separated).

    Same definition as scikit-learn's `davies_bouldin_score`: mean over classes of the largest
    (s_i + s_j) / d(c_i, c_j), s = mean distance of a class's members to its centroid c.
    """
    X = np.asarray(X, dtype=np.float64)
    _, codes = encode_labels(labels)
    n_classes = _check_labels(X.shape[0], codes)
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    centroids = np.zeros((n_classes, X.shape[1]))
    np.add.at(centroids, codes, X)
    centroids /= counts[:, None]
    to_centroid = np.linalg.norm(X - centroids[codes], axis=1)
    intra = np.bincount(codes, weights=to_centroid, minlength=n_classes) / counts
    diff = centroids[:, None, :] - centroids[None, :, :]
    between = np.sqrt((diff**2).sum(-1))
    if np.allclose(intra, 0) or np.allclose(between, 0):
        return 0.0
    between[between == 0] = np.inf
    ratio = (intra[:, None] + intra[None, :]) / between
    return float(np.max(ratio, axis=1).mean())


def silhouette_from_class_similarity(class_similarity: np.ndarray, codes: np.ndarray) -> float:
    """Mean cosine silhouette from per-class similarity sums (self excluded), as from one neighbour pass.

    Cosine distance = 1 - cosine similarity, so a row's summed distance to class c is n_c - sum of
    similarities (n_c - 1 for its own class). Rows of single-member classes score 0, as in scikit-learn.
    """
    counts = np.bincount(codes, minlength=class_similarity.shape[1]).astype(np.float64)
    rows = np.arange(codes.shape[0])
    members = np.broadcast_to(counts, class_similarity.shape).copy()
    members[rows, codes] -= 1.0  # the row itself is not among the others of its class
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_dist = (members - class_similarity) / members
    own_members = members[rows, codes]
    a = mean_dist[rows, codes]
    other = mean_dist.copy()
    other[rows, codes] = np.inf
    other[:, counts == 0] = np.inf
    b = other.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (b - a) / np.maximum(a, b)
    s = np.where(own_members > 0, np.nan_to_num(s), 0.0)
    return float(s.mean())


def silhouette_cosine(X: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette score with cosine distance (-1..1, higher = classes better separated).

    Equals scikit-learn's `silhouette_score(X, labels, metric="cosine")`, but from per-class sums of unit
    vectors (O(N x D x C)), never an N x N distance matrix.
    """
    _, codes = encode_labels(labels)
    n_classes = _check_labels(np.asarray(X).shape[0], codes)
    return silhouette_from_class_similarity(class_similarity_sums(unit_rows(X), codes, n_classes), codes)


def knn_vote_accuracy(knn: np.ndarray, codes: np.ndarray, chunk: int = 4096) -> float:
    """Leave-one-out kNN accuracy: share of rows whose label is the majority label of their neighbours.

    knn: (N, k) neighbour indices, nearest first (the row itself excluded). Ties between classes with the same
    vote count go to the class whose member is nearest.
    """
    n, k = knn.shape
    n_classes = int(codes.max()) + 1
    correct = 0
    for start in range(0, n, chunk):
        nb = codes[knn[start : start + chunk]]  # (B, k) neighbour labels
        rows = np.arange(nb.shape[0])
        votes = np.zeros((nb.shape[0], n_classes), dtype=np.int64)
        first_rank = np.full((nb.shape[0], n_classes), k, dtype=np.int64)
        for rank in range(k - 1, -1, -1):  # descending, so the nearest rank is written last
            votes[rows, nb[:, rank]] += 1
            first_rank[rows, nb[:, rank]] = rank
        score = votes * (k + 1) + (k - first_rank)
        correct += int((score.argmax(axis=1) == codes[start : start + chunk]).sum())
    return correct / n


def knn_label_accuracy(X: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Leave-one-out k-nearest-neighbour label accuracy with cosine similarity (0..1, higher = better).

    Each row is predicted by the majority label of its k most cosine-similar other rows.
    """
    _, codes = encode_labels(labels)
    _check_labels(np.asarray(X).shape[0], codes)
    return knn_vote_accuracy(cosine_knn(unit_rows(X), k=k), codes)


def sample_pairs(n: int, n_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n_pairs` random pairs (i, j), i != j, of row indices in [0, n); all pairs when there are fewer."""
    if n < 2:
        raise ValueError("need at least two rows for pairs")
    total = n * (n - 1) // 2
    if total <= n_pairs:
        i, j = np.triu_indices(n, k=1)
        return i.astype(np.int64), j.astype(np.int64)
    i = rng.integers(0, n, size=n_pairs)
    j = rng.integers(0, n - 1, size=n_pairs)
    j = j + (j >= i)  # uniform over j != i
    return i, j


def pair_cosine_distances(X_unit: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """Cosine distance 1 - cos(x_i, x_j) for each pair, from unit-normalised rows; gathers in chunks."""
    out = np.empty(i.shape[0], dtype=np.float64)
    for start in range(0, i.shape[0], chunk):
        a = X_unit[i[start : start + chunk]]
        b = X_unit[j[start : start + chunk]]
        out[start : start + chunk] = 1.0 - np.einsum("ij,ij->i", a, b, dtype=np.float64)
    return out


def distance_rank_correlation(dist_a: np.ndarray, dist_b: np.ndarray) -> float:
    """Spearman correlation of two sets of pairwise distances over the same pairs (1 = same ordering)."""
    rho = spearmanr(dist_a, dist_b).statistic
    return float(rho)


def neighbourhood_overlap(knn_a: np.ndarray, knn_b: np.ndarray) -> float:
    """Mean over rows of the share of a row's k nearest neighbours in space A that are also among its k nearest
    in space B (1 = neighbourhoods kept, about k/N for unrelated spaces)."""
    if knn_a.shape != knn_b.shape:
        raise ValueError(f"neighbour tables differ in shape: {knn_a.shape} vs {knn_b.shape}")
    k = knn_a.shape[1]
    shared = np.zeros(knn_a.shape[0], dtype=np.int64)
    for start in range(0, knn_a.shape[0], 8192):
        a = knn_a[start : start + 8192]
        b = knn_b[start : start + 8192]
        shared[start : start + 8192] = (a[:, :, None] == b[:, None, :]).any(axis=2).sum(axis=1)
    return float(shared.mean() / k)


def geometry_kept(
    X_a: np.ndarray, X_b: np.ndarray, k: int = 10, n_pairs: int = 100_000, seed: int = 0
) -> dict[str, float]:
    """How well space B keeps the geometry of space A on the same rows (cells).

    Returns {"distance_spearman": Spearman rho of cosine distances over random pairs,
    "neighbour_overlap": mean share of each row's k nearest neighbours (cosine) kept}; both 1 for identical
    spaces or spaces related by a rotation.
    """
    if X_a.shape[0] != X_b.shape[0]:
        raise ValueError(f"feature sets must cover the same rows: {X_a.shape[0]} vs {X_b.shape[0]}")
    ua, ub = unit_rows(X_a), unit_rows(X_b)
    i, j = sample_pairs(ua.shape[0], n_pairs, np.random.default_rng(seed))
    rho = distance_rank_correlation(pair_cosine_distances(ua, i, j), pair_cosine_distances(ub, i, j))
    overlap = neighbourhood_overlap(cosine_knn(ua, k=k), cosine_knn(ub, k=k))
    return {"distance_spearman": rho, "neighbour_overlap": overlap}


@dataclass
class PCA:
    """Principal components fitted on a sample: x -> (x - mean) @ components.T."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (q, D), unit rows, largest variance first
    explained_variance_ratio: np.ndarray  # (q,)
    eigenvalues: np.ndarray | None = None  # (D,) the whole spectrum, largest first

    @property
    def effective_dim(self) -> float:
        """Participation ratio (sum l)^2 / sum l^2 of the whole spectrum (see botaclip.store.geometry)."""
        return participation_ratio(self.eigenvalues)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Scores (N, q) of the rows of X on the components."""
        return (np.asarray(X, dtype=np.float64) - self.mean) @ self.components.T


def fit_pca(X: np.ndarray, n_components: int = 3) -> PCA:
    """PCA by eigen-decomposition of the D x D covariance (cheap for N >> D); signs fixed so the largest
    loading of each component is positive, which makes maps reproducible."""
    X = np.asarray(X, dtype=np.float64)
    if X.shape[0] < 2:
        raise ValueError("need at least two rows for PCA")
    mean = X.mean(axis=0)
    centred = X - mean
    cov = centred.T @ centred / (X.shape[0] - 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0, None), vectors[:, order]
    q = min(n_components, X.shape[1])
    components = vectors[:, :q].T
    signs = np.sign(components[np.arange(q), np.abs(components).argmax(axis=1)])
    components *= np.where(signs == 0, 1.0, signs)[:, None]
    total = values.sum()
    ratio = values[:q] / total if total > 0 else np.zeros(q)
    return PCA(mean=mean, components=components, explained_variance_ratio=ratio, eigenvalues=values)
