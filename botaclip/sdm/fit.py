"""Fitting one species: occurrences -> cleaned cells -> features -> spatial-block CV -> final model, saved with
its feature-set provenance, predictions for every indexed cell written to the store, and a PNG map."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from botaclip.errors import BotaclipError
from botaclip.sdm import metrics as M
from botaclip.sdm.background import DEFAULT_BACKGROUND
from botaclip.sdm.cleaning import CleaningReport
from botaclip.sdm.dataset import (
    DEFAULT_MIN_PRESENCES,
    StoreFeatures,
    drop_uninformative_columns,
    extent_of,
    label_cells,
    provenance_id,
)
from botaclip.sdm.autocorrelation import AutocorrelationRange, autocorrelation_range
from botaclip.sdm.crossfit import CrossFit
from botaclip.sdm.evaluate import DEFAULT_INNER_FOLDS, CVResult, cross_validate, metric_names, training_weights
from botaclip.sdm.folds import SpatialFolds, spatial_folds
from botaclip.sdm.models import MODEL_NAMES, make_model
from botaclip.sdm.occurrences import KINDS, Occurrences, read_occurrences
from botaclip.sdm.persist import SavedModel, save_model
from botaclip.sdm.thresholds import ThresholdRule, all_thresholds, parse_threshold


def open_store(store, read_only: bool):
    """A :class:`botaclip.store.Store` from a Store or a path (one-line error if it is not a store)."""
    from botaclip.store import Store

    if isinstance(store, Store):
        return store
    if not Path(store).exists():
        raise BotaclipError(f"store {store} does not exist; create it with `botaclip index` or `botaclip store`")
    return Store.open(store, read_only=read_only)


def as_occurrences(occurrences, **columns) -> Occurrences:
    return occurrences if isinstance(occurrences, Occurrences) else read_occurrences(occurrences, **columns)


def parse_feature_sets(features: str | Sequence[str]) -> list[str]:
    """'a,b' or ['a', 'b'] -> ['a', 'b'] (names of feature sets joined on the cell)."""
    names = features.split(",") if isinstance(features, str) else list(features)
    names = [n.strip() for n in names if n and n.strip()]
    if not names:
        raise BotaclipError("no feature set given; name one or more with --features NAME[,NAME...]")
    if len(set(names)) != len(names):
        raise BotaclipError(f"feature set listed twice in {','.join(names)}")
    return names


def check_model(name: str) -> str:
    if name not in MODEL_NAMES:
        raise BotaclipError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    return name


def check_block_res(block_res: int | str | None) -> int | None:
    """``'auto'``/None -> None (chosen from the data), an integer (or its text) -> that resolution."""
    if block_res is None or (isinstance(block_res, str) and block_res.strip().lower() == "auto"):
        return None
    try:
        value = int(block_res)
    except (TypeError, ValueError):
        raise BotaclipError(f"--block-res must be 'auto' or an H3 resolution 0..15, got {block_res!r}") from None
    if not 0 <= value <= 15:
        raise BotaclipError(f"--block-res must be 'auto' or an H3 resolution 0..15, got {block_res!r}")
    return value


def check_inner_folds(inner_folds: int) -> None:
    if int(inner_folds) < 2:
        raise BotaclipError(f"--inner-folds must be at least 2, got {inner_folds}")


def inputs_range(cells: np.ndarray, matrices: Sequence[np.ndarray], seed: int) -> AutocorrelationRange | None:
    """The autocorrelation range of the model inputs: the largest over the given feature matrices, so blocks
    suit every feature set compared (None if none could be estimated)."""
    found = [autocorrelation_range(cells, X, seed=seed) for X in matrices]
    found = [r for r in found if np.isfinite(r.range_m)]
    return max(found, key=lambda r: r.range_m) if found else None


@dataclass
class SampleDesign:
    """How one species' samples are split: the folds and, when the samples overlap relevés that trained a
    cross-fitted feature set, that cross-fit (used for the folds and for each fold's features)."""

    folds: SpatialFolds
    cross_fit: CrossFit | None = None
    cross_fitted: tuple[str, ...] = ()
    range: AutocorrelationRange | None = None
    notes: list[str] = field(default_factory=list)


def design_folds(cells: np.ndarray, y: np.ndarray, n_folds: int, block_res: int | None, seed: int, *,
                 cross_fits: dict[str, CrossFit], range_: AutocorrelationRange | None = None,
                 is_background: np.ndarray | None = None) -> SampleDesign:
    """Folds for one species' sample ``cells``: from the cross-fitted adapters' blocks when any presence or
    absence cell (not background) holds one of their training relevés, else from ``block_res`` or (None) the
    autocorrelation range ``range_``. Any overlap counts: a cross-fitted evaluation is valid either way, a
    contaminated one is not."""
    notes: list[str] = []
    data_cells = cells if is_background is None else cells[~np.asarray(is_background, dtype=bool)]
    used = {name: cf for name, cf in cross_fits.items() if cf.overlaps(data_cells)}
    if used:
        first_name, cf = next(iter(used.items()))
        for name, other in used.items():
            if not cf.same_split(other):
                raise BotaclipError(
                    f"feature sets {first_name!r} and {name!r} were cross-fitted on different relevé folds; "
                    "a paired comparison needs adapters trained with the same --folds, --block-res and --seed"
                )
        overlap = max(c.overlaps(data_cells) for c in used.values())
        notes.append(
            f"{overlap} sample cells hold relevés that trained {', '.join(repr(n) for n in used)}: folds follow the "
            f"adapters' {cf.n_folds} cross-fitting folds (H3 resolution {cf.block_res} blocks) and each test fold is "
            "scored on features from the adapter that never saw it"
        )
        if n_folds != cf.n_folds:
            notes.append(f"--folds {n_folds} replaced by the {cf.n_folds} cross-fitting folds")
        if block_res is not None and block_res != cf.block_res:
            notes.append(f"--block-res {block_res} replaced by the cross-fitting blocks' resolution {cf.block_res}")
        folds = spatial_folds(cells, y, cf.n_folds, cf.block_res, seed, assigned=cf.assignment)
        return SampleDesign(folds, cf, tuple(used), None, notes + folds.notes)
    range_m = None if (block_res is not None or range_ is None) else range_.range_m
    folds = spatial_folds(cells, y, n_folds, block_res, seed, range_m=range_m)
    if block_res is None and range_ is not None:
        notes += [f"autocorrelation: {n}" for n in range_.notes]
    return SampleDesign(folds, None, (), range_, notes + folds.notes)


def fold_matrices(source, names: Sequence[str], cells: np.ndarray, kept: Sequence[int],
                  design: SampleDesign) -> list[np.ndarray] | None:
    """Per-outer-fold feature matrices (columns ``kept``) when ``names`` hold a cross-fitted set, else None."""
    if not any(n in design.cross_fitted for n in names):
        return None
    mats = []
    for k in range(design.cross_fit.n_folds):
        fold_names = list(names)
        for name in design.cross_fitted:
            fold_names = design.cross_fit.fold_names(fold_names, name, k)
        mats.append(source.features(fold_names, cells)[0][:, kept])
    return mats


def cross_fits_of(source, names: Sequence[str], given: dict[str, CrossFit] | None) -> dict[str, CrossFit]:
    """Cross-fit records of ``names``: those ``given`` (Python API), else what the store records."""
    out = {}
    for name in names:
        cf = (given or {}).get(name) or source.cross_fit(name)
        if cf is not None:
            source.check(list(cf.fold_sets))
            out[name] = cf
    return out


def slug(text: str, max_len: int = 40) -> str:
    """A lower-case identifier (letters, digits, '_') made from a species name."""
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:max_len].strip("_")
    return s if s and not s[0].isdigit() else f"s_{s}"


@dataclass
class FitResult:
    """Everything `botaclip sdm fit` reports."""

    species: str
    kind: str
    model: str
    feature_sets: list[str]
    n_presences: int
    n_absences: int
    n_background: int
    n_features: int
    block_res: int
    n_blocks: int
    cv: CVResult
    cleaning: CleaningReport
    threshold: float | None
    notes: list[str] = field(default_factory=list)
    threshold_rule: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    folds_description: str = ""
    range_m: float | None = None
    cross_fitted: list[str] = field(default_factory=list)
    out_dir: str | None = None
    predictions_table: str | None = None
    n_predicted: int = 0
    map_path: str | None = None

    def summary(self) -> dict[str, dict[str, float]]:
        return self.cv.summary()

    def to_dict(self) -> dict:
        return {
            "species": self.species, "kind": self.kind, "model": self.model, "feature_sets": self.feature_sets,
            "n_presences": self.n_presences, "n_absences": self.n_absences, "n_background": self.n_background,
            "n_features": self.n_features, "block_res": self.block_res, "n_blocks": self.n_blocks,
            "threshold": self.threshold, "threshold_rule": self.threshold_rule, "thresholds": self.thresholds,
            "folds": self.folds_description, "autocorrelation_range_m": self.range_m,
            "cross_fitted": self.cross_fitted, "cv": self.cv.to_dict(), "cleaning": self.cleaning.to_dict(),
            "notes": self.notes, "out_dir": self.out_dir, "predictions_table": self.predictions_table,
            "n_predicted": self.n_predicted, "map": self.map_path,
        }


def fit_species(
    store,
    occurrences,
    species: str,
    *,
    kind: str | None = None,
    features: str | Sequence[str] = ("botaclip",),
    model: str = "lightgbm",
    folds: int = 5,
    block_res: int | str | None = "auto",
    threshold: str | float | ThresholdRule | None = "maxtss",
    inner_folds: int = DEFAULT_INNER_FOLDS,
    cross_fit: dict[str, CrossFit] | None = None,
    background: int = DEFAULT_BACKGROUND,
    target_group=None,
    max_uncertainty: float | None = None,
    min_presences: int = DEFAULT_MIN_PRESENCES,
    seed: int = 0,
    out: str | Path | None = None,
    predictions: str | bool | None = True,
    write_map: bool = True,
    n_jobs: int = 1,
    columns: dict | None = None,
) -> FitResult:
    """Cross-validate and fit one SDM for ``species``; save it, predict every indexed cell, draw a map.

    ``store``: a Store or its path; ``occurrences``: an :class:`Occurrences` or a file path (``columns``: column
    overrides for :func:`read_occurrences`); ``features``: feature-set names joined on the cell; ``kind``:
    presence-absence, presence-only or abundance (default: inferred from the file). ``out``: directory for the
    model (model.json + model file), cv.json, cv_folds.csv and map.png. ``predictions``: True writes the
    predictions table ``sdm_<species>`` into the store, a string names it, False/None skips it.
    ``block_res``: H3 resolution of the CV blocks, or 'auto' (the resolution whose edge is closest to the
    autocorrelation range of the features over the sample cells, with >= 4 blocks per fold). ``threshold``:
    'maxtss', 'senspec', 'p10' or a value in [0, 1], chosen per fold on inner spatial-block out-of-fold
    predictions, and for the final model on the outer out-of-fold predictions. ``cross_fit``: cross-fit records
    by feature-set name (by default what the store records); see :mod:`botaclip.sdm.crossfit`.
    All input is validated before anything is written.
    """
    model = check_model(model)
    names = parse_feature_sets(features)
    block_res = check_block_res(block_res)
    rule = parse_threshold(threshold)
    check_inner_folds(inner_folds)
    if kind is not None and kind not in KINDS:
        raise BotaclipError(f"unknown --kind {kind!r}; choose from {', '.join(KINDS)}")
    store = open_store(store, read_only=not predictions)
    occ = as_occurrences(occurrences, **(columns or {}))
    source = StoreFeatures(store)
    source.check(names)
    kind = kind or occ.infer_kind()
    occ.check_species(species)
    tg = as_occurrences(target_group, **(columns or {})) if target_group is not None else None
    indexed = source.indexed_cells(names)
    label = "+".join(names)
    labelled = label_cells(
        occ, species, kind, indexed, source.resolution, f"{label!r} of {source.label}", background=background,
        target_group=tg, max_uncertainty=max_uncertainty, min_presences=min_presences, extent=extent_of(indexed),
        seed=seed,
    )
    X, columns_all = source.features(names, labelled.h3)
    X, kept, notes = drop_uninformative_columns(X, columns_all)
    notes = occ.notes + labelled.notes + notes
    y, bg, task = labelled.y, labelled.is_background, labelled.task
    cross_fits = cross_fits_of(source, names, cross_fit)
    range_ = inputs_range(labelled.h3, [X], seed) if block_res is None else None
    design = design_folds(labelled.h3, y, folds, block_res, seed, cross_fits=cross_fits, range_=range_,
                          is_background=bg)
    folds_ = design.folds
    notes += design.notes
    per_fold = fold_matrices(source, names, labelled.h3, kept, design)
    cv = cross_validate(X if per_fold is None else per_fold, y, folds_, model, task, bg, seed, n_jobs,
                        threshold=rule, inner_folds=inner_folds)
    for f in cv.folds:
        if f.skipped:
            notes.append(f"fold {f.fold} skipped: {f.skipped}")
        elif f.note:
            notes.append(f"fold {f.fold}: {f.note}")
    if all(f.skipped for f in cv.folds):
        notes.append("no fold could be scored; the metrics are undefined")

    estimator = make_model(model, task=task, seed=seed, n_jobs=n_jobs)
    weights = training_weights(y, bg) if task == "binary" else None
    try:
        estimator.fit(X, y, sample_weight=weights)
    except ValueError as exc:
        raise BotaclipError(f"cannot fit {model} for {species!r}: {exc}") from None
    threshold_value, thresholds = None, {}
    if task == "binary":
        # The final model's threshold comes from the outer out-of-fold predictions, never from in-sample scores.
        scored = np.isfinite(cv.oof)
        if scored.any():
            threshold_value = rule.choose(y[scored], cv.oof[scored])
            thresholds = all_thresholds(y[scored], cv.oof[scored])
        if threshold_value is None or not np.isfinite(threshold_value):
            threshold_value = None
            notes.append("no out-of-fold predictions of both classes: the final model has no threshold")

    n_pres = labelled.n_presences
    result = FitResult(
        species=species, kind=kind, model=model, feature_sets=names, n_presences=n_pres,
        n_absences=int(np.sum((y == 0) & ~bg)), n_background=int(bg.sum()), n_features=len(kept),
        block_res=folds_.block_res, n_blocks=folds_.n_blocks, cv=cv, cleaning=labelled.report,
        threshold=threshold_value, notes=notes, threshold_rule=None if task != "binary" else str(rule),
        thresholds=thresholds, folds_description=folds_.describe(),
        range_m=None if design.range is None else design.range.range_m, cross_fitted=list(design.cross_fitted),
    )
    saved = SavedModel(
        estimator=estimator, species=species, kind=kind,
        feature_sets=[{"name": n, "provenance_id": provenance_id(source.provenance(n)),
                       "provenance": source.provenance(n)} for n in names],
        columns=columns_all, kept=kept, resolution=source.resolution, threshold=threshold_value,
        threshold_rule=result.threshold_rule, thresholds=thresholds, metrics=cv.summary(),
        extra={"occurrences": occ.path, "block_res": folds_.block_res, "folds": folds_.n_folds,
               "block_choice": folds_.how, "autocorrelation_range_m": result.range_m,
               "cross_fitted": result.cross_fitted, "seed": seed},
    )
    table_name = None
    if predictions:
        from botaclip.store.schema import check_identifier

        table_name = predictions if isinstance(predictions, str) else f"sdm_{slug(species)}"
        check_identifier(table_name, "predictions table name")
        if table_name in names:
            raise BotaclipError(f"predictions table {table_name!r} would overwrite a feature set used by the model")
    if out is not None:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise BotaclipError(f"--out {out} exists and is not a directory")
        save_model(out, saved)
        _write_json(out / "cv.json", result.to_dict() | {"fold_assignment": {
            "block_res": folds_.block_res, "n_blocks": folds_.n_blocks}})
        _write_fold_csv(out / "cv_folds.csv", cv)
        result.out_dir = str(out)
    h3_pred = vals_pred = None
    if table_name:
        from botaclip.sdm.predict import predictions_to_store

        n, h3_pred, vals_pred = predictions_to_store(saved, store, table_name)
        result.predictions_table, result.n_predicted = table_name, n
    if out is not None and write_map:
        from botaclip.sdm.maps import suitability_map
        from botaclip.sdm.predict import _collect, iter_predictions

        if h3_pred is None:
            h3_pred, vals_pred = _collect(iter_predictions(saved, store))
        pres = occ.records[(occ.records["species"] == species) & occ.records["present"]]
        absn = None
        if kind == "presence-absence":
            from botaclip.sdm.cells import cells_to_latlng

            absn = cells_to_latlng(labelled.h3[(y == 0) & ~bg])
        result.map_path = str(suitability_map(
            h3_pred, vals_pred, Path(out) / "map.png",
            presences=(pres["lat"].to_numpy(), pres["lng"].to_numpy()), absences=absn,
            title=f"{species} — {model} on {label}",
            label="suitability" if task == "binary" else "predicted abundance"))
    return result


def _write_json(path: Path, doc: dict) -> None:
    from botaclip.sdm.persist import _atomic_write, _json_default

    _atomic_write(path, lambda p: Path(p).write_text(json.dumps(doc, indent=2, default=_json_default)))


def _write_fold_csv(path: Path, cv: CVResult) -> None:
    import csv
    import io

    buf = io.StringIO()
    names = list(metric_names(cv.task))
    w = csv.writer(buf)
    w.writerow(["fold", "n_train", "n_test", "n_test_presences", "threshold", "skipped", "note", *names])
    for f in cv.folds:
        w.writerow([f.fold, f.n_train, f.n_test, f.n_test_presences, _fmt(f.threshold), f.skipped or "",
                    f.note or "", *(_fmt(f.metrics.get(m)) for m in names)])
    from botaclip.sdm.persist import _atomic_write

    _atomic_write(path, lambda p: Path(p).write_text(buf.getvalue()))


def _fmt(v) -> str:
    if v is None:
        return ""
    v = float(v)
    return "" if not np.isfinite(v) else f"{v:.6g}"
