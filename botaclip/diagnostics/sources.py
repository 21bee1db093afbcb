"""Where the diagnostics read features from: the feature store, or in-memory arrays (tests, notebooks).

Both answer the same four questions: which feature sets exist, which cells each covers, the features of given
cells (in the order asked), and the H3 resolution.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

import h3.api.basic_int as h3i
import numpy as np

from botaclip.errors import BotaclipError, InvalidInputError


class FeatureSource(Protocol):
    description: str
    resolution: int | None

    def names(self) -> list[str]: ...

    def cells(self, name: str) -> np.ndarray:
        """Sorted unique uint64 H3 cells the feature set covers."""

    def read(self, name: str, cells: np.ndarray) -> np.ndarray:
        """(len(cells), D) float32 features of `cells` (sorted, all covered), in that order."""

    def kind(self, name: str) -> str | None:
        """The feature set's kind (backbone, botaclip, covariates, imported, predictions), None if unknown."""

    def is_embedding(self, name: str) -> bool:
        """True for embeddings (compared as they are), False for named columns such as covariates (standardised
        first, since their units differ)."""

    def mean(self, name: str) -> np.ndarray | None:
        """The feature set's mean vector over all its cells (for centred cosine), None if not known."""


def _align(h3: np.ndarray, X: np.ndarray, cells: np.ndarray, name: str) -> np.ndarray:
    """Rows of X for `cells`, given the feature set's own cell order `h3`."""
    h3 = np.asarray(h3, dtype=np.uint64)
    order = np.argsort(h3, kind="stable")
    pos = np.searchsorted(h3[order], cells)
    pos = np.minimum(pos, max(h3.shape[0] - 1, 0))
    if h3.shape[0] == 0 or not np.array_equal(h3[order][pos], cells):
        raise BotaclipError(f"feature set {name!r} lacks some of the sampled cells; is the store being written?")
    return np.asarray(X[order[pos]], dtype=np.float32)


class ArraySource:
    """Features held in memory: {name: (h3 uint64[N], X[N, D])}."""

    def __init__(self, features: Mapping[str, tuple[np.ndarray, np.ndarray]], resolution: int | None = None):
        self._features = {}
        for name, (h3, X) in features.items():
            h3 = np.asarray(h3, dtype=np.uint64)
            X = np.asarray(X)
            if X.ndim != 2 or X.shape[0] != h3.shape[0]:
                raise InvalidInputError(f"feature set {name!r}: {h3.shape[0]} cells but features of shape {X.shape}")
            self._features[name] = (h3, X)
        if resolution is None:
            first = next((h3 for h3, _ in self._features.values() if h3.shape[0]), None)
            resolution = None if first is None else h3i.get_resolution(int(first[0]))
        self.resolution = resolution
        self.description = "in-memory features"

    def names(self) -> list[str]:
        return list(self._features)

    def cells(self, name: str) -> np.ndarray:
        return np.unique(self._features[name][0])

    def read(self, name: str, cells: np.ndarray) -> np.ndarray:
        h3, X = self._features[name]
        return _align(h3, X, cells, name)

    def kind(self, name: str) -> str | None:
        return None

    def is_embedding(self, name: str) -> bool:
        return True

    def mean(self, name: str) -> np.ndarray | None:
        # Of the unit rows, as a store keeps them (and as diagnose compares them).
        X = np.asarray(self._features[name][1], dtype=np.float64)
        return (X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-30)).mean(axis=0)


class StoreSource:
    """Features read through `botaclip.store.Store`: cell lists first, then only the sampled cells."""

    def __init__(self, store: Any):
        self._store = store
        self.resolution = int(store.resolution)
        self.description = str(getattr(store, "path", "store"))

    def names(self) -> list[str]:
        return list(self._store.feature_sets())

    def cells(self, name: str) -> np.ndarray:
        return np.unique(np.asarray(self._store.existing_cells(name), dtype=np.uint64))

    def read(self, name: str, cells: np.ndarray) -> np.ndarray:
        matrix = self._store.features_numpy(name, cells=cells)
        if not np.all(matrix.found):
            raise BotaclipError(f"feature set {name!r} lost some of the sampled cells while being read; "
                                "is a writer replacing it? Run diagnose again when it is done")
        return np.asarray(matrix.X, dtype=np.float32)

    def kind(self, name: str) -> str | None:
        return self._store.spec(name).kind

    def is_embedding(self, name: str) -> bool:
        return bool(self._store.spec(name).is_embedding)

    def mean(self, name: str) -> np.ndarray | None:
        geometry = self._store.geometry(name) if hasattr(self._store, "geometry") else None
        return None if geometry is None else geometry["mean"]


def as_source(store: Any) -> FeatureSource:
    """A FeatureSource for a Store, a mapping of arrays, or something that already is one."""
    if isinstance(store, Mapping):
        return ArraySource(store)
    if hasattr(store, "features_numpy"):
        return StoreSource(store)
    if all(hasattr(store, attr) for attr in ("names", "cells", "read")):
        return store
    raise InvalidInputError(f"cannot read features from {type(store).__name__}; give a Store or {{name: (h3, X)}}")
