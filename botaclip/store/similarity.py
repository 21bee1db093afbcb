"""Nearest cells by cosine similarity of their embeddings: exact (a BLAS scan in numpy) or approximate (the set's
persistent faiss index, `botaclip.store.ann`).

Stored embeddings are unit vectors, so cosine similarity is a dot product: the exact search is one matrix-vector
product per partition (streamed from Parquet: the time is reading the column) or over an in-memory float32 copy
(`in_memory=True`: as fast as numpy on that matrix). ``method="auto"`` (the default) answers from the ANN index
when the set has one built from its current contents, else exactly; ``"exact"`` and ``"ann"`` force either.
`answered_by` says which did, and why auto fell back.

`centered=True` ranks by centred cosine, cos(x - m, q - m) with m the feature set's mean vector (from the
catalog's geometry statistics): over a nearly collinear set (a random-init backbone, mean pairwise cosine 0.9987)
raw cosine is about 1 for every cell and centred cosine shows the structure (exact search only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from botaclip.errors import InvalidInputError, param
from botaclip.store import h3vec
from botaclip.store.region import Region, distance_km, parse_within, polygon_cells
from botaclip.threads import blas_threads

if TYPE_CHECKING:
    from botaclip.store.store import Store

METHODS = ("auto", "exact", "ann")
_ALIASES = {"brute": "exact"}  # the name before the ANN index existed


def top_k(h3: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (h3, score) pairs, best first (ties: smaller cell id first); NaN scores never win."""
    if len(scores) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        # Rows tied with the k-th score may be cut arbitrarily by argpartition: take all of them, then sort.
        kth = scores[part].min()
        part = np.flatnonzero(scores >= kth)
        h3, scores = h3[part], scores[part]
    order = np.lexsort((h3, -scores))[:k]
    return h3[order], scores[order]


class SimilaritySearch:
    """Top-k cosine search over one embedding feature set; build once, query many times."""

    def __init__(self, store: "Store", name: str, *, method: str = "auto", within: str | Region | None = None,
                 in_memory: bool = False, centered: bool = False) -> None:
        """`within`: a region (see `botaclip.store.region.parse_within`, or a `Region`); `in_memory`: an exact
        search keeps the region's vectors as a float32 matrix (N x D x 4 bytes; one load, then each query is one
        BLAS pass) instead of reading the Parquet files per query; `centered`: rank by centred cosine (exact)."""
        method = _ALIASES.get(method, method)
        if method not in METHODS:
            raise InvalidInputError(f"unknown similarity method {method!r}; use one of {', '.join(METHODS)}")
        if centered and method == "ann":
            raise InvalidInputError(f"centred cosine is exact search only: drop {param('ann')} or "
                                    f"{param('centered')}")
        self.store = store
        self.spec = store.spec(name)
        if not self.spec.is_embedding:
            raise InvalidInputError(f"feature set {name!r} holds columns, not embeddings; similarity needs embeddings")
        self.name = name
        self.region = within if isinstance(within, Region) else parse_within(store, within)
        self.center = _mean_vector(store, name).astype(np.float32) if centered else None
        self.ann = None
        self.note = ""
        if method != "exact" and not centered:
            self.ann = self._open_ann(forced=method == "ann")
        self.method = "ann" if self.ann is not None else "exact"
        self._matrix = self._load() if in_memory and self.method == "exact" else None
        self.answered_by = ""

    def _open_ann(self, forced: bool):
        from botaclip.store import ann

        st = ann.status(self.store, self.name)
        build = f"`botaclip store ann build {self.store.path} --feature-set {self.name}`"
        if st is None:
            if forced:
                raise InvalidInputError(f"feature set {self.name!r} has no ANN index yet; build one with {build}, "
                                        f"or search exactly with {param('exact')}")
            self.note = "no ANN index"
            return None
        if not st["fresh"]:
            if forced:
                raise InvalidInputError(f"the ANN index of {self.name!r} is stale (the set was written since it was "
                                        f"built); rebuild it with {build}, or search exactly with {param('exact')}")
            self.note = f"ANN index stale since the set was written; rebuild it with {build}"
            return None
        if not forced:
            try:
                ann.load_faiss()
            except ImportError:
                self.note = "ANN index present but faiss is not installed (pip install 'botaclip[ann]')"
                return None
        return ann.AnnIndex(self.store, self.name, st)

    # ---- exact -----------------------------------------------------------------------------------------------

    def _partitions(self):
        """(h3, X) per partition, restricted to the region, X centred and unit when `centered`."""
        for _, h, X in self.store.iter_partitions(self.name):
            mask = self.region.mask(h)
            if mask is not None:
                h, X = h[mask], X[mask]
            if self.center is not None:
                X = X - self.center
                norms = np.sqrt(np.einsum("ij,ij->i", X, X))
                X /= np.where(norms > 0, norms, 1)[:, None]
            yield h, X

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        hs, xs = [], []
        for h, X in self._partitions():
            hs.append(h)
            xs.append(X)
        if not hs:
            return np.zeros(0, np.uint64), np.zeros((0, self.spec.dim), np.float32)
        return np.concatenate(hs), np.ascontiguousarray(np.concatenate(xs), dtype=np.float32)

    def _exact(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._matrix is not None:
            h, X = self._matrix
            self.answered_by = f"exact (in memory, {len(h)} rows)"
            return top_k(h, X @ q, k)
        best_h, best_s = [np.zeros(0, np.uint64)], [np.zeros(0, np.float32)]
        rows = 0
        # One partition (thousands of rows) is a small product: waking BLAS threads costs more than it saves, and
        # on a loaded machine (measured at load 9 on 2 cores) it made each product 100x slower than one thread.
        with blas_threads(1):
            for h, X in self._partitions():
                bh, bs = top_k(h, X @ q, k)
                best_h.append(bh)
                best_s.append(bs)
                rows += len(h)
        self.answered_by = f"exact (scan of {rows} rows from Parquet)"
        return top_k(np.concatenate(best_h), np.concatenate(best_s), k)

    # ---- queries ---------------------------------------------------------------------------------------------

    def query_vector(self, vector: np.ndarray, k: int = 10, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        """(h3 uint64[<=k], cosine similarity float32[<=k]) of the k most similar cells, best first; `exclude`:
        a cell or cells never returned (the query's own)."""
        if k < 1:
            raise InvalidInputError(f"k must be >= 1, got {k}")
        q = np.asarray(vector, dtype=np.float32).ravel()
        if q.shape != (self.spec.dim,):
            raise InvalidInputError(f"query vector has {q.size} values, feature set has dim {self.spec.dim}")
        if not np.isfinite(q).all():
            raise InvalidInputError("query vector contains NaN or infinite values")
        excl = np.atleast_1d(np.asarray([] if exclude is None else exclude, dtype=np.uint64))
        if self.center is not None:
            q = q - self.center
        norm = float(np.linalg.norm(q))
        q = q / norm if norm > 0 else q
        fetch = k + len(excl)
        h = s = None
        if self.ann is not None:
            h, s = self._ann(q, fetch, k, excl)
        if h is None:
            h, s = self._exact(q, fetch)
            if self.note:
                self.answered_by += f"; {self.note}"
        keep = ~np.isin(h, excl)
        return h[keep][:k], s[keep][:k].astype(np.float32)

    def _ann(self, q: np.ndarray, fetch: int, k: int, excl: np.ndarray):
        """ANN answer, or (None, None) when a region filter leaves fewer than k of the candidates (then exact)."""
        want = fetch if self.region.everything else min(self.ann.rows, 10 * fetch + 100)
        h, s = self.ann.search(q, want)
        mask = self.region.mask(h)
        if mask is not None:
            h, s = h[mask], s[mask]
        if (~np.isin(h, excl)).sum() < k and want < self.ann.rows:
            self.note = "exact, as the region filter kept fewer than k of the ANN candidates"
            return None, None
        self.answered_by = f"ann ({self.ann.description})"
        return h, s

    def close(self) -> None:
        self._matrix = None
        self.ann = None

    def __enter__(self) -> "SimilaritySearch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def query_cell(store: "Store", cell=None, point: tuple[float, float] | None = None) -> int:
    """The cell to search from: `cell` (int or hex) or the cell containing `point` = (lat, lng) in degrees."""
    if (cell is None) == (point is None):
        raise InvalidInputError(f"give exactly one of a cell ({param('cell')}) or a point ({param('point')} LAT,LNG)")
    if point is not None:
        lat, lng = point
        cells, ok = h3vec.latlng_to_cell(np.array([lat]), np.array([lng]), store.resolution)
        if not ok[0] or not (-90 <= lat <= 90):
            raise InvalidInputError(f"point {lat},{lng} is not a valid latitude,longitude in degrees")
        return int(cells[0])
    return _one_cell(store, cell)


def _one_cell(store: "Store", cell) -> int:
    try:
        c = int(cell, 16) if isinstance(cell, str) else int(cell)
    except ValueError:
        raise InvalidInputError(f"cell {cell!r} is not an H3 cell id (hex like 8a1f9e5153affff)") from None
    arr = np.array([c], np.uint64)
    if not h3vec.is_valid_cell(arr)[0] or h3vec.get_resolution(arr)[0] != store.resolution:
        raise InvalidInputError(f"cell {cell} is not a valid H3 cell at the store resolution {store.resolution}")
    return c


def _mean_vector(store: "Store", name: str) -> np.ndarray:
    """The set's mean vector (float64 [D]): from the catalog's geometry statistics, else one pass over its files."""
    geometry = store.geometry(name)
    if geometry is not None:
        return np.asarray(geometry["mean"], dtype=np.float64)
    total, rows = np.zeros(store.spec(name).dim), 0
    for _, _, X in store.iter_partitions(name):
        total += X.astype(np.float64).sum(axis=0)
        rows += len(X)
    if rows == 0:
        raise InvalidInputError(f"feature set {name!r} is empty")
    return total / rows


@dataclass(frozen=True)
class SimilarQuery:
    """What `similar` searches like, and where. Give exactly one example: `cell` (hex or int), `point` (lat, lng
    degrees: its cell), `cells` (several cells: their mean vector) or `polygon` (a vector file: the mean vector of
    the stored cells whose centre is inside). Filters (all optional, combined): `within` (an H3 cell, a bbox
    "west,south,east,north" or a polygon file), `max_km` from `near` (lat, lng; default: the example's
    location). `method`: auto | exact | ann; `centered`: centred cosine (exact)."""

    cell: object = None
    point: tuple[float, float] | None = None
    cells: tuple | None = None
    polygon: str | None = None
    k: int = 10
    within: str | None = None
    max_km: float | None = None
    near: tuple[float, float] | None = None
    method: str = "auto"
    centered: bool = False


def example_vector(store: "Store", name: str, query: SimilarQuery) -> tuple[np.ndarray, np.ndarray, str]:
    """(query vector float32 [D], the example's cells (excluded from the answer), a description)."""
    given = [x for x in ("cell", "point", "cells", "polygon") if getattr(query, x) is not None]
    if len(given) != 1:
        raise InvalidInputError(f"give exactly one of a cell ({param('cell')}), a point ({param('point')} LAT,LNG), "
                                f"cells ({param('cells')}) or a polygon file ({param('polygon')})")
    if query.cells is None and query.polygon is None:
        c = query_cell(store, query.cell, query.point)
        fm = store.features_numpy(name, cells=np.array([c], np.uint64))
        if not fm.found[0]:
            raise InvalidInputError(f"cell {c:x} is not in feature set {name!r}; pick a cell that was indexed")
        return fm.X[0], np.array([c], np.uint64), f"cell {c:x}"
    if query.cells is not None:
        cells = np.unique([_one_cell(store, c) for c in query.cells]).astype(np.uint64)
        what = f"{len(cells)} cells"
    else:
        cells = polygon_cells(store, query.polygon, "polygon")
        what = f"the cells inside {query.polygon}"
    if len(cells) == 0:
        raise InvalidInputError(f"no example cells given ({param('cells')})")
    fm = store.features_numpy(name, cells=cells)
    if not fm.found.any():
        raise InvalidInputError(f"none of {what} is in feature set {name!r}; pick cells that were indexed")
    mean = fm.X[fm.found].astype(np.float64).mean(axis=0)
    if not np.linalg.norm(mean) > 0:
        raise InvalidInputError(f"the mean embedding of {what} is zero; it points nowhere")
    missing = int((~fm.found).sum())
    note = f" ({missing} not in the set)" if missing else ""
    return mean.astype(np.float32), cells, f"mean of {int(fm.found.sum())} of {what}{note}"


def _origin(store: "Store", query: SimilarQuery, cells: np.ndarray) -> tuple[float, float]:
    if query.near is not None:
        return query.near
    if query.point is not None:
        return query.point
    lat, lng = h3vec.cell_to_latlng(cells)
    return float(np.mean(lat)), float(np.mean(lng))  # a set of nearby cells: the centre of their centres


def similar(store: "Store", name: str, query: SimilarQuery | None = None, **fields) -> pa.Table:
    """The k cells most similar to an example (see :class:`SimilarQuery`; its fields may be given as keywords),
    the example's own cells excluded.

    Returns a table (rank, h3, h3_string, similarity, lat, lng[, distance_km]) where lat/lng are the cell centres
    in degrees and distance_km the distance from the `near` point (with `max_km` or `near`); its schema metadata
    says which method answered (``answered_by``) and what the example was (``example``).
    """
    query = query if query is not None else SimilarQuery(**fields)
    if query.max_km is not None and not query.max_km > 0:
        raise InvalidInputError(f"{param('max_km')} must be a positive number of kilometres, got {query.max_km}")
    vector, cells, described = example_vector(store, name, query)
    region = parse_within(store, query.within)
    origin = _origin(store, query, cells) if (query.max_km is not None or query.near is not None) else None
    if query.max_km is not None:
        region.near, region.max_km = origin, float(query.max_km)
    with SimilaritySearch(store, name, method=query.method, within=region, centered=query.centered) as search:
        h, s = search.query_vector(vector, k=query.k, exclude=cells)
        answered = search.answered_by
    lat, lng = h3vec.cell_to_latlng(h) if len(h) else (np.zeros(0), np.zeros(0))
    cols = {"rank": pa.array(np.arange(1, len(h) + 1), pa.int32()), "h3": pa.array(h, pa.uint64()),
            "h3_string": pa.array([format(int(x), "x") for x in h], pa.string()),
            "similarity": pa.array(s, pa.float32()), "lat": lat, "lng": lng}
    if origin is not None:
        cols["distance_km"] = distance_km(origin, lat, lng)
    return pa.table(cols).replace_schema_metadata({"answered_by": answered, "example": described})
