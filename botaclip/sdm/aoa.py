"""Area of applicability (Meyer & Pebesma 2021): where a model's predictions rest on feature combinations like
those it was trained on, and where it extrapolates.

The model's feature space: its inputs (after its principal-component projection, if it has one), missing values
taking the training medians, each column standardised by the training mean and sd and multiplied by its weight
(the permutation importance of the column's group when it was measured, else 1). In that space:

- the **dissimilarity index** of a cell, DI = d / d̄: d its distance to the nearest training cell, d̄ the mean
  over training cells of the distance to their nearest other training cell (the normaliser the issue asks for;
  Meyer & Pebesma divide by the mean of all pairwise distances instead — the flag below does not depend on the
  normaliser, since DI and threshold scale together);
- the **threshold**: the training cells' own *cross-validated* DI (distance to the nearest training cell of
  another spatial fold, / d̄), then the outer quartile rule of the paper (the upper whisker of a box plot: the
  largest training DI not above Q3 + 1.5 (Q3 - Q1));
- ``inside_aoa`` = DI <= threshold.

Distances are computed in chunks of at most CHUNK cells against the training cells (a k-d tree in up to
KDTREE_DIMS dimensions, float32 matrix products above, the chunk shrunk so that a block of distances holds at
most CHUNK_ENTRIES values), so memory does not grow with the number of cells predicted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK = 4096
CHUNK_ENTRIES = 16_000_000  # cells x training cells per distance block (64 MB in float32)
KDTREE_DIMS = 8  # above, a k-d tree is slower than matrix products (docs/benchmarks.md)


@dataclass
class AOAReference:
    """The training cells in the model's weighted, standardised feature space and the DI threshold."""

    train: np.ndarray  # float32 [n_train, d]
    medians: np.ndarray  # float32 [d] (imputation of missing inputs)
    mean: np.ndarray  # float64 [d]
    scale: np.ndarray  # float64 [d]
    weights: np.ndarray  # float64 [d]
    mean_nn: float  # d̄: mean distance of a training cell to its nearest other training cell
    threshold: float  # DI above which a cell is outside the area of applicability
    train_di: np.ndarray  # float32 [n_train]: cross-validated DI of the training cells

    def space(self, Z: np.ndarray) -> np.ndarray:
        """Model inputs (already projected, if the model projects) -> the weighted standardised space."""
        Z = np.asarray(Z, dtype=np.float32)
        if np.isnan(Z).any():
            Z = np.where(np.isnan(Z), self.medians, Z)
        # float32 throughout: a float64 intermediate would double the memory of a chunk of cells
        return (Z - self.mean.astype(np.float32)) * (self.weights / self.scale).astype(np.float32)

    def dissimilarity(self, Z: np.ndarray) -> np.ndarray:
        """DI of each row of ``Z`` (model inputs), float32."""
        d = nearest_distance(self.space(Z), self.train)
        return (d / self.mean_nn).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "medians": self.medians, "mean": self.mean, "scale": self.scale,
                "weights": self.weights, "train_di": self.train_di,
                "mean_nn": np.asarray(self.mean_nn), "threshold": np.asarray(self.threshold)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "AOAReference":
        expected = {"train", "medians", "mean", "scale", "weights", "train_di", "mean_nn", "threshold"}
        if set(arrays) != expected:
            raise ValueError(f"aoa.npz holds {sorted(arrays)}, expected {sorted(expected)}")
        ref = cls(np.asarray(arrays["train"], np.float32), np.asarray(arrays["medians"], np.float32),
                  np.asarray(arrays["mean"], np.float64), np.asarray(arrays["scale"], np.float64),
                  np.asarray(arrays["weights"], np.float64), float(arrays["mean_nn"]), float(arrays["threshold"]),
                  np.asarray(arrays["train_di"], np.float32))
        d = ref.train.shape[1] if ref.train.ndim == 2 else -1
        if any(a.shape != (d,) for a in (ref.medians, ref.mean, ref.scale, ref.weights)):
            raise ValueError("aoa.npz arrays disagree in their number of columns")
        return ref

    def summary(self) -> dict:
        return {"n_train": int(self.train.shape[0]), "dims": int(self.train.shape[1]), "mean_nn": self.mean_nn,
                "threshold": self.threshold, "weighted": bool(np.any(self.weights != 1.0)),
                "train_inside": float(np.mean(self.train_di <= self.threshold))}


def nearest_distance(Q: np.ndarray, T: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """Euclidean distance of each row of ``Q`` to its nearest row of ``T`` (float64), in chunks of CHUNK rows.
    ``exclude_self``: Q is T, and a row's own zero distance does not count."""
    Q = np.ascontiguousarray(Q, dtype=np.float32)
    T = np.ascontiguousarray(T, dtype=np.float32)
    k = 2 if exclude_self else 1
    if T.shape[1] <= KDTREE_DIMS:
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(T).query(Q, k=k, workers=-1)
        return np.asarray(dist if k == 1 else dist[:, 1], dtype=np.float64)
    t2 = np.einsum("ij,ij->i", T, T)
    out = np.empty(Q.shape[0])
    step = int(max(64, min(CHUNK, CHUNK_ENTRIES // max(T.shape[0], 1))))
    for i in range(0, Q.shape[0], step):
        q = Q[i:i + step]
        # |q - t|^2 = |q|^2 + (|t|^2 - 2 q.t): the minimum over t of the bracket, then |q|^2 added once per row
        g = q @ T.T
        g *= -2.0
        g += t2
        if exclude_self:
            g[np.arange(q.shape[0]), np.arange(i, i + q.shape[0])] = np.inf
        out[i:i + step] = np.sqrt(np.maximum(g.min(axis=1) + np.einsum("ij,ij->i", q, q), 0.0))
    return out


def outer_quartile_threshold(values: np.ndarray) -> float:
    """The upper whisker of a box plot: the largest value not above Q3 + 1.5 (Q3 - Q1)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return float("nan")
    q1, q3 = np.percentile(v, [25, 75])
    return float(v[v <= q3 + 1.5 * (q3 - q1)].max())


def fit_aoa(Z: np.ndarray, fold: np.ndarray, weights: np.ndarray | None = None) -> AOAReference:
    """The reference from the training cells' model inputs ``Z`` [n, d] (projected if the model projects), their
    spatial folds ``fold`` [n] and optional column weights [d] (negative weights count as 0)."""
    Z = np.asarray(Z, dtype=np.float32)
    with np.errstate(all="ignore"):
        med = np.nan_to_num(np.nanmedian(Z, axis=0), nan=0.0).astype(np.float32) if Z.size else np.zeros(0)
    Zf = np.where(np.isnan(Z), med, Z)
    mean = Zf.mean(axis=0, dtype=np.float64)
    sd = Zf.std(axis=0, dtype=np.float64)
    w = np.ones(Z.shape[1]) if weights is None else np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    if not np.any(w > 0):
        w = np.ones(Z.shape[1])
    ref = AOAReference(np.zeros((0, Z.shape[1]), np.float32), med, mean, np.where(sd > 0, sd, 1.0), w, 1.0, 0.0,
                       np.zeros(0, np.float32))
    S = ref.space(Zf)
    nn = nearest_distance(S, S, exclude_self=True)
    mean_nn = float(np.mean(nn)) if nn.size else 1.0
    ref.mean_nn = mean_nn if mean_nn > 0 else 1.0
    cv_d = np.full(S.shape[0], np.nan)
    fold = np.asarray(fold)
    for k in np.unique(fold):
        inside, other = fold == k, fold != k
        if other.any():
            cv_d[inside] = nearest_distance(S[inside], S[other])
    ref.train, ref.train_di = S, (cv_d / ref.mean_nn).astype(np.float32)
    ref.threshold = outer_quartile_threshold(ref.train_di)
    return ref


def model_inputs(estimator, X: np.ndarray) -> np.ndarray:
    """The estimator's inputs for features ``X`` (its kept columns): projected if it projects embeddings."""
    projection = getattr(estimator, "projection", None)
    return X if projection is None else projection.transform(X)


def input_weights(estimator, n_columns: int, column_weights: np.ndarray | None) -> np.ndarray | None:
    """Weights of the model inputs from weights of the kept feature columns: a projected model's components take
    the mean weight of the embedding columns they come from; other columns keep theirs."""
    if column_weights is None:
        return None
    w = np.asarray(column_weights, dtype=np.float64)
    projection = getattr(estimator, "projection", None)
    if projection is None:
        return w
    emb = np.arange(n_columns) if projection.columns is None else projection.columns
    rest = np.setdiff1d(np.arange(n_columns), emb)
    components = np.full(projection.components_.shape[0], float(np.mean(w[emb])))
    if projection.keep:  # every column as given, then the components added after them
        return np.concatenate([w, components])
    return np.concatenate([components, w[rest]])
