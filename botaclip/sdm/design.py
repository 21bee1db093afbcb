"""The evaluation design of one species, shared by `sdm fit` and `sdm compare`: where the data come from (store,
occurrences), how its samples are split into spatial folds (forced blocks, blocks from the autocorrelation range,
or the blocks of cross-fitted adapters), and which features each fold reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from botaclip.errors import InvalidInputError, MissingFileError, param
from botaclip.sdm.autocorrelation import AutocorrelationRange, autocorrelation_range, sample_places
from botaclip.sdm.config import SamplingConfig
from botaclip.sdm.crossfit import CrossFit
from botaclip.sdm.folds import SpatialFolds, spatial_folds
from botaclip.sdm.occurrences import Occurrences, read_occurrences


def open_store(store, read_only: bool):
    """A :class:`botaclip.store.Store` from a Store or a path (one-line error if it is not a store)."""
    from botaclip.store import Store

    if isinstance(store, Store):
        return store
    if not Path(store).exists():
        raise MissingFileError(f"store {store} does not exist; create it with `botaclip index` or `botaclip store`")
    return Store.open(store, read_only=read_only)


def as_occurrences(occurrences, sampling: SamplingConfig) -> Occurrences:
    """An :class:`Occurrences` as given, or read from a file with the configured columns."""
    if isinstance(occurrences, Occurrences):
        return occurrences
    return read_occurrences(occurrences, **sampling.columns.as_kwargs())


def target_group_of(sampling: SamplingConfig) -> Occurrences | None:
    """The target-group occurrences of presence-only background, if configured."""
    tg = sampling.target_group
    return None if tg is None else as_occurrences(tg, sampling)


def inputs_range(cells: np.ndarray, matrices: Sequence[np.ndarray], seed: int) -> AutocorrelationRange | None:
    """The autocorrelation range of the model inputs: the largest over the given feature matrices, so blocks
    suit every feature set compared (None if none could be estimated)."""
    places = sample_places(cells, seed=seed)  # the same cells and pairs for every matrix
    found = [autocorrelation_range(cells, X, seed=seed, places=places) for X in matrices]
    found = [r for r in found if np.isfinite(r.range_m)]
    return max(found, key=lambda r: r.range_m) if found else None


def cross_fits_of(source, names: Sequence[str], given: dict[str, CrossFit] | None) -> dict[str, CrossFit]:
    """Cross-fit records of ``names``: those ``given`` (Python API), else what the store records."""
    out = {}
    for name in names:
        cf = (given or {}).get(name) or source.cross_fit(name)
        if cf is not None:
            source.check(list(cf.fold_sets))
            out[name] = cf
    return out


@dataclass
class SampleDesign:
    """How one species' samples are split: the folds and, when the samples overlap relevés that trained a
    cross-fitted feature set, that cross-fit (used for the folds and for each fold's features)."""

    folds: SpatialFolds
    cross_fits: dict[str, CrossFit] = field(default_factory=dict)  # feature set -> its cross-fit, when used
    range: AutocorrelationRange | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def cross_fitted(self) -> tuple[str, ...]:
        return tuple(self.cross_fits)

    def fold_names(self, names: Sequence[str], k: int) -> list[str]:
        """``names`` with every cross-fitted feature set replaced by its own fold-k feature set (the adapter of
        that set that never saw fold k)."""
        return [self.cross_fits[n].fold_sets[k] if n in self.cross_fits else n for n in names]

    def uses_cross_fit(self, names: Sequence[str]) -> bool:
        return any(n in self.cross_fitted for n in names)


def design_folds(cells: np.ndarray, y: np.ndarray, n_folds: int, block_res: int | None, seed: int, *,
                 cross_fits: dict[str, CrossFit], range_: AutocorrelationRange | None = None,
                 is_background: np.ndarray | None = None) -> SampleDesign:
    """Folds for one species' sample ``cells``: from the cross-fitted adapters' blocks when any presence or
    absence cell (not background) holds one of their training relevés, else from ``block_res`` or (None) the
    autocorrelation range ``range_``. Any overlap counts: a cross-fitted evaluation is valid either way, a
    contaminated one is not."""
    data_cells = cells if is_background is None else cells[~np.asarray(is_background, dtype=bool)]
    used = {name: cf for name, cf in cross_fits.items() if cf.overlaps(data_cells)}
    if used:
        return _cross_fitted_design(cells, y, n_folds, block_res, seed, used, data_cells)
    range_m = None if (block_res is not None or range_ is None) else range_.range_m
    folds = spatial_folds(cells, y, n_folds, block_res, seed, range_m=range_m)
    notes = [f"autocorrelation: {n}" for n in range_.notes] if (block_res is None and range_ is not None) else []
    return SampleDesign(folds, {}, range_, notes + folds.notes)


def _cross_fitted_design(cells, y, n_folds, block_res, seed, used: dict[str, CrossFit],
                         data_cells) -> SampleDesign:
    first_name, cf = next(iter(used.items()))
    for name, other in used.items():
        if not cf.same_split(other):
            raise InvalidInputError(
                f"feature sets {first_name!r} and {name!r} were cross-fitted on different relevé folds; a paired "
                "comparison needs adapters trained with the same folds, block resolution and seed"
            )
    overlap = max(c.overlaps(data_cells) for c in used.values())
    notes = [f"{overlap} sample cells hold relevés that trained {', '.join(repr(n) for n in used)}: folds follow "
             f"the adapters' {cf.n_folds} cross-fitting folds (H3 resolution {cf.block_res} blocks) and each test "
             "fold is scored on features from the adapter that never saw it"]
    if n_folds != cf.n_folds:
        notes.append(f"the {n_folds} folds asked for were replaced by the {cf.n_folds} cross-fitting folds")
    if block_res is not None and block_res != cf.block_res:
        notes.append(f"block resolution {block_res} was replaced by the cross-fitting blocks' resolution "
                     f"{cf.block_res}")
    folds = spatial_folds(cells, y, cf.n_folds, cf.block_res, seed, assigned=cf.assignment)
    return SampleDesign(folds, dict(used), None, notes + folds.notes)


def check_out_dir(out: str | Path) -> Path:
    """An output folder path that is not an existing file."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{param('out')} {out} exists and is not a directory")
    return out
