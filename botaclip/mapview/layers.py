"""What a map page shows: layers of H3 cells with one value each (a prediction, a covariate) or three principal
component scores of an embedding (shown as red, green, blue).

A layer is resolved from a store by ``NAME[:column]``: a covariate or prediction set with one column needs no
column; an embedding set without a column becomes its first three principal components (PCA on at most
``PCA_SAMPLE`` cells, then every cell projected); ``NAME:e5`` shows one embedding dimension.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from botaclip.errors import InvalidInputError, param

PCA_SAMPLE = 20_000
LOW_PCT, HIGH_PCT = 2.0, 98.0  # colour ranges of covariates and PC scores: robust to a few extreme cells


@dataclass
class MapLayer:
    """One layer: ``h3`` (uint64[n], sorted, one resolution) and ``values`` (float32[n], NaN = no value) or, for
    an embedding's principal components, float32[n, 3]. ``vmin``/``vmax``: the colour range (per column for
    components); ``legend``: 'ramp' (viridis), 'presence' (0/1), 'rgb' (components); ``note``: one line under
    the legend (e.g. the variance the components explain)."""

    name: str
    h3: np.ndarray
    values: np.ndarray
    legend: str = "ramp"
    label: str = ""
    vmin: list[float] = field(default_factory=list)
    vmax: list[float] = field(default_factory=list)
    note: str = ""


def parse_layer(text: str) -> tuple[str, str | None]:
    """'NAME' or 'NAME:column' -> (name, column or None)."""
    name, _, column = text.strip().partition(":")
    if not name or (_ and not column):
        raise InvalidInputError(f"{param('layer')} {text!r}: give NAME or NAME:column (a feature set of the store, "
                                "optionally one of its columns)")
    return name, column or None


def values_layer(name: str, h3: np.ndarray, values: np.ndarray, label: str = "") -> MapLayer:
    """A layer of one value per cell: 0..1 suitabilities and 0/1 presence keep their natural range, anything
    else is coloured between its 2nd and 98th percentiles."""
    h3 = np.asarray(h3, dtype=np.uint64)
    values = np.asarray(values, dtype=np.float32)
    if h3.size == 0:
        raise InvalidInputError(f"layer {name!r} has no cells to draw")
    order = np.argsort(h3)
    h3, values = h3[order], values[order]
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise InvalidInputError(f"layer {name!r} has no finite value to draw")
    label = label or name
    if label == "presence" and np.isin(finite, (0.0, 1.0)).all():
        return MapLayer(name, h3, values, "presence", label, [0.0], [1.0])
    lo, hi = float(finite.min()), float(finite.max())
    note = ""
    if lo >= 0.0 and hi <= 1.0 and label == "suitability":
        lo, hi = 0.0, 1.0
    else:
        lo, hi = (float(v) for v in np.percentile(finite, [LOW_PCT, HIGH_PCT]))
        note = f"colours span the {LOW_PCT:g}th to {HIGH_PCT:g}th percentile; hover for exact values"
    if hi <= lo:
        hi = lo + 1.0
    return MapLayer(name, h3, values, "ramp", label, [lo], [hi], note)


def coarsen_layer(layer: MapLayer, res: int) -> MapLayer:
    """``layer`` on the parents of its cells at resolution ``res``: each parent the mean of its children's values
    (NaN ignored); colour range and legend unchanged."""
    from botaclip.sdm.cells import cell_to_parent

    parents, inv = np.unique(cell_to_parent(layer.h3, res), return_inverse=True)
    values = layer.values.reshape(len(layer.h3), -1)
    out = np.empty((parents.size, values.shape[1]), np.float32)
    for j in range(values.shape[1]):
        ok = np.isfinite(values[:, j])
        sums = np.bincount(inv[ok], weights=values[ok, j], minlength=parents.size)
        counts = np.bincount(inv[ok], minlength=parents.size)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, j] = sums / counts
    shaped = out if layer.values.ndim == 2 else out[:, 0]
    return MapLayer(layer.name, parents, shaped, layer.legend, layer.label, layer.vmin, layer.vmax, layer.note)


def pca_layer(name: str, h3: np.ndarray, X: np.ndarray, seed: int = 0) -> MapLayer:
    """The first three principal components of embedding rows ``X`` (float[n, D]) as one RGB layer."""
    h3 = np.asarray(h3, dtype=np.uint64)
    X = np.asarray(X, dtype=np.float32)
    if h3.size < 2:
        raise InvalidInputError(f"embedding set {name!r} has {h3.size} cell(s); principal components need two")
    rng = np.random.default_rng(seed)
    sample = X[rng.choice(len(X), PCA_SAMPLE, replace=False)] if len(X) > PCA_SAMPLE else X
    mean = sample.mean(axis=0, dtype=np.float64)
    centred = (sample - mean).astype(np.float32)  # float32 is plenty for colours, and twice as fast
    # Eigenvectors of the D x D covariance: the same axes as an SVD of the sample, at a fraction of the cost.
    eigval, eigvec = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(eigval)[::-1]
    k = min(3, X.shape[1], len(sample) - 1)
    axes = eigvec[:, order[:k]].astype(np.float32)
    scores = np.zeros((len(X), 3), np.float32)
    for i in range(0, len(X), 100_000):  # bounded temporaries for millions of cells
        scores[i:i + 100_000, :k] = (X[i:i + 100_000] - mean.astype(np.float32)) @ axes
    eigval = np.clip(eigval[order], 0, None)
    share = eigval / max(float(eigval.sum()), 1e-30)
    lo, hi = np.percentile(scores, LOW_PCT, axis=0), np.percentile(scores, HIGH_PCT, axis=0)
    hi = np.where(hi > lo, hi, lo + 1.0)
    order = np.argsort(h3)
    note = ", ".join(f"PC{j + 1} {100 * share[j]:.0f} %" for j in range(k)) + " of the variance"
    return MapLayer(name, h3[order], scores[order], "rgb", f"{name}: principal components", lo.tolist(),
                    hi.tolist(), note)


def store_layer(store, text: str) -> MapLayer:
    """The layer ``NAME[:column]`` of an open store (see the module docstring)."""
    name, column = parse_layer(text)
    if name not in store.feature_sets():
        known = ", ".join(store.feature_sets()) or "none"
        raise InvalidInputError(f"{param('layer')} {text!r}: no feature set {name!r} in store {store.path} "
                                f"(feature sets: {known})")
    spec = store.spec(name)
    names = spec.feature_names()
    if column is not None and column not in names:
        shown = f"e0 … e{spec.dim - 1}" if spec.is_embedding else ", ".join(names)
        raise InvalidInputError(f"{param('layer')} {text!r}: feature set {name!r} has no column {column!r} "
                                f"(columns: {shown})")
    if column is None and not spec.is_embedding and len(names) > 1:
        raise InvalidInputError(f"{param('layer')} {text!r}: feature set {name!r} has {len(names)} columns; "
                                f"pick one as {name}:COLUMN ({', '.join(names)})")
    fm = store.features_numpy(name)
    if fm.h3.size == 0:
        raise InvalidInputError(f"{param('layer')} {text!r}: feature set {name!r} holds no cells")
    if spec.is_embedding and column is None:
        return pca_layer(name, fm.h3, fm.X)
    column = column or names[0]
    values = fm.X[:, names.index(column)]
    label = column if column in ("suitability", "presence") else f"{name}:{column}"
    return values_layer(f"{name}:{column}", fm.h3, values, label)
