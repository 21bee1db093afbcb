"""From occurrences to a model-ready table: labelled cells of one species joined with features from the store.

Features are read only through :class:`FeatureSource` (implemented on :class:`botaclip.store.Store` by
:class:`StoreFeatures`). Several feature sets are joined on the cell and concatenated in the order given; only
cells present in every one are used, and occurrences on cells without features are counted and dropped, never
imputed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from botaclip.errors import BotaclipError, InvalidInputError, param
from botaclip.sdm.background import sample_background, target_group_background
from botaclip.sdm.cells import cell_boundaries, cell_to_parent, in_cells, latlng_to_cells, resolution_of
from botaclip.sdm.cleaning import CleaningReport, Extent, clean_samples, invalid_coordinates
from botaclip.sdm.config import SamplingConfig
from botaclip.sdm.occurrences import Occurrences, species_samples


class FeatureSource(Protocol):
    """What the SDM needs from a feature store."""

    resolution: int
    label: str

    def feature_sets(self) -> list[str]: ...

    def indexed_cells(self, names: Sequence[str]) -> np.ndarray: ...

    def features(self, names: Sequence[str], cells: np.ndarray) -> tuple[np.ndarray, list[str]]: ...

    def provenance(self, name: str) -> dict: ...

    def cross_fit(self, name: str): ...


def provenance_id(provenance: dict) -> str:
    """A short, stable id of a provenance record: sha256 of its canonical JSON, first 16 hex digits."""
    text = json.dumps(provenance, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class StoreFeatures:
    """:class:`FeatureSource` on a :class:`botaclip.store.Store`, caching the cell lists it has read."""

    def __init__(self, store, label: str | None = None):
        self.store = store
        self.resolution = int(store.resolution)
        self.label = label or str(getattr(store, "path", "the store"))
        self._cells: dict[str, np.ndarray] = {}

    def feature_sets(self) -> list[str]:
        return list(self.store.feature_sets())

    def check(self, names: Sequence[str]) -> None:
        """Raise a one-line error naming any feature set that is not in the store."""
        available = self.feature_sets()
        missing = [n for n in names if n not in available]
        if missing:
            import difflib

            close = [c for n in missing for c in difflib.get_close_matches(n, available, n=1)]
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise InvalidInputError(
                f"feature set {', '.join(repr(m) for m in missing)} not in {self.label} "
                f"(it has: {', '.join(available) or 'none'}){hint}"
            )

    def _cells_of(self, name: str) -> np.ndarray:
        if name not in self._cells:
            self._cells[name] = np.unique(np.asarray(self.store.existing_cells(name), dtype=np.uint64))
        return self._cells[name]

    def indexed_cells(self, names: Sequence[str]) -> np.ndarray:
        """Sorted cells that have features in every one of ``names``."""
        self.check(names)
        cells = self._cells_of(names[0])
        for name in names[1:]:
            cells = np.intersect1d(cells, self._cells_of(name), assume_unique=True)
        return cells

    def features(self, names: Sequence[str], cells: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """float32 [len(cells), F] features of ``cells`` (which must have features in every set), concatenated."""
        cells = np.asarray(cells, dtype=np.uint64)
        blocks, columns = [], []
        for name in names:
            fm = self.store.features_numpy(name, cells=cells)
            found = np.asarray(getattr(fm, "found", np.ones(len(cells), dtype=bool)), dtype=bool)
            if not found.all():
                raise BotaclipError(f"feature set {name!r} lacks features for {int((~found).sum())} requested cells")
            blocks.append(align_rows(np.asarray(fm[0], dtype=np.uint64), np.asarray(fm[1], dtype=np.float32), cells,
                                 name))
            columns += [f"{name}.{c}" for c in fm[2]] if len(names) > 1 else [str(c) for c in fm[2]]
        return (np.hstack(blocks) if len(blocks) > 1 else blocks[0]), columns

    def embedding_columns(self, names: Sequence[str], kept: Sequence[int] | None = None) -> np.ndarray:
        """Indices of the columns of ``names`` joined (after keeping ``kept``) that come from embedding feature
        sets (those with a dimension), as opposed to scalar covariates."""
        flags = []
        for name in names:
            info = self.store.info(name)
            n = info.get("dim") or len(info.get("columns") or [])
            flags += [info.get("dim") is not None] * int(n)
        flags = np.asarray(flags, dtype=bool)
        if kept is not None:
            flags = flags[np.asarray(kept, dtype=np.int64)]
        return np.flatnonzero(flags)

    def provenance(self, name: str) -> dict:
        info = self.store.info(name)
        return dict(info.get("provenance") or {}) | {"kind": info.get("kind"), "dtype": info.get("dtype")}

    def cross_fit(self, name: str):
        """The :class:`~botaclip.sdm.crossfit.CrossFit` of feature set ``name`` as the store records it
        (``Store.cross_fit``), or None if it was not cross-fitted."""
        from botaclip.sdm.crossfit import CrossFit

        record = self.store.cross_fit(name)
        return None if record is None else CrossFit.from_dict(record)


def align_rows(found: np.ndarray, X: np.ndarray, wanted: np.ndarray, name: str) -> np.ndarray:
    """Rows of X reordered to ``wanted`` (store reads need not keep the request order)."""
    if found.shape[0] == wanted.shape[0] and np.array_equal(found, wanted):
        return X
    order = np.argsort(found, kind="stable")
    pos = np.searchsorted(found[order], wanted)
    pos = np.clip(pos, 0, max(found.size - 1, 0))
    if found.size == 0 or not np.array_equal(found[order][pos], wanted):
        raise BotaclipError(f"feature set {name!r} lacks features for some requested cells")
    return X[order][pos]


def extent_of(cells: np.ndarray) -> Extent | None:
    """Lat/lng bounds of the cells, from the boundaries of their coarse parents (cheap for millions of cells)."""
    cells = np.asarray(cells, dtype=np.uint64)
    if cells.size == 0:
        return None
    res = int(resolution_of(cells[:1])[0])
    parents = np.unique(cell_to_parent(cells, max(0, res - 4)))
    if parents.size > 20_000:
        parents = np.unique(cell_to_parent(cells, max(0, res - 6)))
    verts = np.concatenate(cell_boundaries(parents))
    return Extent(float(verts[:, 0].min()), float(verts[:, 0].max()), float(verts[:, 1].min()),
                  float(verts[:, 1].max()))


@dataclass
class LabelledCells:
    """The cells of one species ready for features: ``y`` 1/0 (presence, absence or background) or abundance."""

    species: str
    kind: str
    h3: np.ndarray
    y: np.ndarray
    is_background: np.ndarray
    report: CleaningReport
    notes: list[str] = field(default_factory=list)

    @property
    def n_presences(self) -> int:
        return int(np.sum((self.y > 0) & ~self.is_background))

    @property
    def task(self) -> str:
        return "regression" if self.kind == "abundance" else "binary"


@dataclass(frozen=True)
class IndexedCells:
    """The cells samples may fall on: sorted uint64 H3 cells with features, their resolution, a label for
    messages (which feature sets of which store) and their lat/lng extent (for the swapped-coordinates check)."""

    cells: np.ndarray
    resolution: int
    label: str
    extent: Extent | None = None

    @classmethod
    def of(cls, source: "FeatureSource", names: Sequence[str]) -> "IndexedCells":
        """The cells with features in every one of ``names``."""
        cells = source.indexed_cells(names)
        return cls(cells, source.resolution, f"{'+'.join(names)!r} of {source.label}", extent_of(cells))


def label_cells(occ: Occurrences, species: str, kind: str, indexed: IndexedCells,
                sampling: SamplingConfig | None = None, *, target_group: Occurrences | None = None,
                seed: int = 0) -> LabelledCells:
    """Samples of ``species`` cleaned, assigned to cells at the indexed resolution and restricted to indexed
    cells, with background cells added for presence-only data (``sampling``: background size, uncertainty limit,
    minimum presences; ``target_group``: occurrences whose cells are the background). Raises
    :class:`InvalidInputError` for too few presences, no sample on an indexed cell, or presence-absence data
    without absences."""
    sampling = sampling or SamplingConfig()
    samples = species_samples(occ, species, kind)
    cleaned, report = clean_samples(samples, indexed.resolution, sampling.max_uncertainty, indexed.extent)
    if len(cleaned) == 0 and len(samples.table):
        # Name the cleaning steps that removed everything, not the features the samples never reached.
        steps = "; ".join(f"{st.name}: {st.removed}" for st in report.steps if st.removed)
        raise InvalidInputError(f"no sample of {species!r} in {occ.path} is left after cleaning ({steps} removed); "
                                f"check the coordinate columns and {param('max_uncertainty')}")
    cleaned, notes = _on_indexed_cells(cleaned, report, species, occ, indexed)
    h3 = cleaned["h3"].to_numpy(dtype=np.uint64)
    y = cleaned["y"].to_numpy(dtype=np.float64)
    given = cleaned["given_background"].to_numpy(dtype=bool)
    n_pres = int(np.sum((y > 0) & ~given))
    if n_pres < sampling.min_presences:
        raise InvalidInputError(
            f"{species!r} has {n_pres} presence cells with features after cleaning, fewer than "
            f"{param('min_presences')} {sampling.min_presences}"
        )
    if kind == "presence-only":
        if given.any():
            notes.append(f"using {int(given.sum())} background cells given as absences in {occ.path}")
        else:
            h3, y, given, bg_notes = _with_background(h3[y > 0], indexed, sampling, target_group, seed)
            notes += bg_notes
    elif kind == "presence-absence" and not np.any(y == 0):
        raise InvalidInputError(
            f"{species!r} has no absences in {occ.path} (present in every sampled cell); "
            f"use {param('kind')} presence-only to contrast it with background cells"
        )
    return LabelledCells(species, kind, h3, y, given, report, notes)


def _on_indexed_cells(cleaned, report: CleaningReport, species: str, occ: Occurrences, indexed: IndexedCells):
    """The cleaned samples on cells with features (the rest counted in the report and noted)."""
    has_features = in_cells(cleaned["h3"].to_numpy(dtype=np.uint64), indexed.cells)
    pos = (cleaned["y"].to_numpy() > 0) & ~cleaned["given_background"].to_numpy()
    report.add(f"no features in {indexed.label}", (~has_features).sum(), (~has_features & pos).sum(),
               has_features.sum())
    notes: list[str] = []
    if (~has_features).any():
        notes.append(f"{int((~has_features).sum())} cells of {species} have no features in {indexed.label} "
                     "and were left out")
    if not has_features.any():
        raise InvalidInputError(
            f"no occurrence of {species!r} in {occ.path} falls on a cell with features in {indexed.label}; "
            "check the CRS/columns or index the region first"
        )
    return cleaned[has_features], notes


def _with_background(presence_cells: np.ndarray, indexed: IndexedCells, sampling: SamplingConfig,
                     target_group: Occurrences | None, seed: int):
    """(h3, y, is_background, notes): the presences and background cells, sorted by cell."""
    notes = []
    if target_group is not None:
        group = _occurrence_cells(target_group, indexed.resolution, sampling.max_uncertainty, indexed.extent)
        bg = target_group_background(group, indexed.cells, presence_cells, sampling.background, seed)
        notes.append(f"target-group background: {bg.size} cells from {target_group.path}")
        if bg.size == 0:
            raise InvalidInputError(f"no target-group cell of {target_group.path} is indexed and presence-free")
    else:
        bg = sample_background(indexed.cells, presence_cells, sampling.background, seed)
        if bg.size < sampling.background:
            notes.append(f"background: all {bg.size} indexed cells without a presence "
                         f"(fewer than the {sampling.background} asked for)")
    h3 = np.concatenate([presence_cells, bg])
    y = np.concatenate([np.ones(presence_cells.size), np.zeros(bg.size)])
    given = np.concatenate([np.zeros(presence_cells.size, dtype=bool), np.ones(bg.size, dtype=bool)])
    order = np.argsort(h3, kind="stable")
    return h3[order], y[order], given[order], notes


def _occurrence_cells(occ: Occurrences, resolution: int, max_uncertainty, extent) -> np.ndarray:
    """Cells of all valid present records of a file (target-group effort)."""
    rec = occ.records[occ.records["present"]]
    lat, lng = rec["lat"].to_numpy(), rec["lng"].to_numpy()
    bad = np.zeros(len(rec), dtype=bool)
    for mask in invalid_coordinates(lat, lng, extent).values():
        bad |= mask
    if max_uncertainty is not None:
        with np.errstate(invalid="ignore"):
            bad |= rec["uncertainty_m"].to_numpy() > max_uncertainty
    return np.unique(latlng_to_cells(lat[~bad], lng[~bad], resolution))


def uninformative_columns(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(all-missing, constant) boolean masks over the columns of X [n >= 1, F]."""
    # fmin/fmax skip NaN and give NaN only for a column without a value: one pass each, no copy of X (a fifth of
    # the time of isnan + nanmin/nanmax on copies, per species and feature set of a comparison).
    lo, hi = np.fmin.reduce(X, axis=0), np.fmax.reduce(X, axis=0)
    all_missing = np.isnan(lo)
    return all_missing, ~all_missing & (lo == hi)


def drop_uninformative_columns(X: np.ndarray, columns: list[str]) -> tuple[np.ndarray, list[int], list[str]]:
    """Drop all-missing and constant columns. Returns (X kept, kept column indices, notes); X kept is X itself
    (as float32) when every column is kept."""
    X = np.asarray(X, dtype=np.float32)
    notes: list[str] = []
    if X.shape[0] == 0:
        return X, list(range(X.shape[1])), notes
    all_missing, constant = uninformative_columns(X)
    for mask, why in ((all_missing, "all missing"), (constant, "constant")):
        if mask.any():
            names = [columns[i] for i in np.flatnonzero(mask)]
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            notes.append(f"dropped {len(names)} {why} column(s): {shown}")
    keep = np.flatnonzero(~(all_missing | constant))
    if keep.size == 0:
        raise InvalidInputError("every feature column is constant or missing for these cells; nothing to model")
    return (X if keep.size == X.shape[1] else X[:, keep]), keep.tolist(), notes
