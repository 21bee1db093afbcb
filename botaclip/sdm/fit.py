"""Fitting one species: occurrences -> cleaned cells -> features -> spatial-block CV -> final model, saved with
its feature-set provenance, predictions for every indexed cell written to the store, and a PNG map."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from botaclip.atomic import write_json, write_text
from botaclip.config import build
from botaclip.errors import InvalidInputError, param
from botaclip.sdm.aoa import fit_aoa, input_weights, model_inputs
from botaclip.sdm.cleaning import CleaningReport
from botaclip.sdm.config import FitConfig
from botaclip.sdm.crossfit import CrossFit
from botaclip.sdm.dataset import (
    IndexedCells,
    LabelledCells,
    StoreFeatures,
    drop_uninformative_columns,
    label_cells,
    provenance_id,
)
from botaclip.sdm.design import (
    SampleDesign,
    as_occurrences,
    check_out_dir,
    cross_fits_of,
    design_folds,
    inputs_range,
    open_store,
    target_group_of,
)
from botaclip.sdm.evaluate import CVResult, extra_components, metric_names, model_params, training_weights
from botaclip.sdm.fit_extras import (
    FitExtras,
    aoa_weights,
    check_fit,
    evaluate_models,
    final_ensemble,
    set_columns,
    write_figures,
)
from botaclip.sdm.importance import feature_groups
from botaclip.sdm.models import SDMEstimator, make_model
from botaclip.sdm.persist import SavedModel, save_model
from botaclip.sdm.thresholds import all_thresholds, parse_threshold


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
    importance: dict = field(default_factory=dict)  # model -> group -> drop in AUC/Spearman on held-out folds
    aoa: dict | None = None  # the area of applicability's reference: threshold, mean_nn, training cells inside
    figures: list[str] = field(default_factory=list)  # importance.png, response.png

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
            "n_predicted": self.n_predicted, "map": self.map_path, "importance": self.importance,
            "area_of_applicability": self.aoa, "figures": self.figures,
        }


@dataclass
class _SpeciesTable:
    """One species' labelled cells with their features (uninformative columns dropped) and the source."""

    source: StoreFeatures
    occurrences: object
    labelled: LabelledCells
    X: np.ndarray
    columns: list[str]
    kept: list[int]
    notes: list[str]


def fit_species(store, occurrences, species: str, config: FitConfig | None = None, *,
                cross_fit: dict[str, CrossFit] | None = None, **options) -> FitResult:
    """Cross-validate and fit one SDM for ``species``; save it, predict every indexed cell, draw a map.

    ``store``: a Store or its path; ``occurrences``: an :class:`Occurrences` or a file path. ``config``: a
    :class:`~botaclip.sdm.config.FitConfig`, or its fields as keyword ``options`` (``features``, ``model``,
    ``kind``, ``folds``, ``block_res``, ``threshold``, ``out``, ...; see the config classes for all and their
    defaults). ``block_res``: H3 resolution of the CV blocks, or 'auto' (the resolution whose edge is closest to
    the autocorrelation range of the features over the sample cells, with >= 4 blocks per fold). ``threshold``:
    'maxtss', 'senspec', 'p10' or a value in [0, 1], chosen per fold on inner spatial-block out-of-fold
    predictions, and for the final model on the outer out-of-fold predictions. ``predictions``: True writes the
    table ``sdm_<species>`` into the store, a string names it, False skips it. ``cross_fit``: cross-fit records by
    feature-set name (by default what the store records; see :mod:`botaclip.sdm.crossfit`).
    All input is validated before anything is written.
    """
    cfg = build(FitConfig, config, **options)
    table_name = _predictions_name(cfg, species)
    store = open_store(store, read_only=not cfg.predictions)
    data = _species_table(store, occurrences, species, cfg)
    design, cv, extras = _evaluate(data, cfg, cross_fit)
    if cfg.ensemble:
        estimator = final_ensemble(cfg, data.labelled.y, extras,
                                   lambda m, member_cv: _final_estimator(data, cfg, species, member_cv, m))
    else:
        estimator = _final_estimator(data, cfg, species, cv)
    result = _result(data, cfg, design, cv)
    result.importance = extras.importance
    saved = _saved_model(data, cfg, estimator, result)
    saved.aoa = fit_aoa(model_inputs(estimator, data.X), design.folds.fold,
                        input_weights(estimator, data.X.shape[1], aoa_weights(extras, data.X.shape[1])))
    result.aoa = saved.aoa.summary()
    if cfg.out is not None:
        _write_model_dir(check_out_dir(cfg.out), saved, result, design)
        write_figures(result, saved, data.X, extras, cfg)
    h3_pred = vals_pred = None
    if table_name:
        from botaclip.sdm.predict import predictions_to_store

        n, h3_pred, vals_pred = predictions_to_store(saved, store, table_name)
        result.predictions_table, result.n_predicted = table_name, n
    if cfg.out is not None and cfg.write_map:
        result.map_path = _draw_map(data, cfg, saved, store, h3_pred, vals_pred)
    return result


def _predictions_name(cfg: FitConfig, species: str) -> str | None:
    if not cfg.predictions:
        return None
    from botaclip.store.schema import check_identifier

    name = cfg.predictions if isinstance(cfg.predictions, str) else f"sdm_{slug(species)}"
    check_identifier(name, "predictions table name")
    if name in cfg.features:
        raise InvalidInputError(f"{param('predictions')} table {name!r} would overwrite a feature set used by the "
                                "model")
    return name


def _species_table(store, occurrences, species: str, cfg: FitConfig) -> _SpeciesTable:
    """Occurrences -> labelled, cleaned cells with features; the one-line errors of bad input come from here."""
    names, sampling = list(cfg.features), cfg.sampling
    occ = as_occurrences(occurrences, sampling)
    source = StoreFeatures(store)
    source.check(names)
    kind = sampling.kind or occ.infer_kind()
    occ.check_species(species)
    labelled = label_cells(occ, species, kind, IndexedCells.of(source, names), sampling,
                           target_group=target_group_of(sampling), seed=cfg.evaluation.seed)
    X, columns = source.features(names, labelled.h3)
    X, kept, dropped = drop_uninformative_columns(X, columns)
    return _SpeciesTable(source, occ, labelled, X, columns, kept, occ.notes + labelled.notes + dropped)


def _evaluate(data: _SpeciesTable, cfg: FitConfig,
              cross_fit: dict[str, CrossFit] | None) -> tuple[SampleDesign, CVResult, FitExtras]:
    """Spatial folds (cross-fitted, forced or from the autocorrelation range) and the cross-validation (of the
    model, or of the ensemble and its members; with permutation importance if asked for)."""
    ev, lab, names = cfg.evaluation, data.labelled, list(cfg.features)
    sets = set_columns(data.source, names)
    groups = feature_groups(sets, data.kept)
    check_fit(cfg, lab.task, groups)
    block_res = ev.block_resolution
    range_ = inputs_range(lab.h3, [data.X], ev.seed) if block_res is None else None
    design = design_folds(lab.h3, lab.y, ev.folds, block_res, ev.seed,
                          cross_fits=cross_fits_of(data.source, names, cross_fit), range_=range_,
                          is_background=lab.is_background)
    X = data.X
    if design.uses_cross_fit(names):
        X = [data.source.features(design.fold_names(names, k), lab.h3)[0][:, data.kept]
             for k in range(design.folds.n_folds)]
    cv, extras = evaluate_models(X, lab, design.folds, cfg, data.source.embedding_columns(names, data.kept), groups)
    extras.sets = sets
    data.notes += design.notes + cv_notes(cv)
    if all(f.skipped for f in cv.folds):
        data.notes.append("no fold could be scored; the metrics are undefined")
    return design, cv, extras


def cv_notes(cv: CVResult, prefix: str = "") -> list[str]:
    """One note per skipped fold and per fold with a remark (e.g. an undefined threshold)."""
    notes = []
    for f in cv.folds:
        if f.skipped:
            notes.append(f"{prefix}fold {f.fold} skipped: {f.skipped}")
        elif f.note:
            notes.append(f"{prefix}fold {f.fold}: {f.note}")
    return notes


def _final_estimator(data: _SpeciesTable, cfg: FitConfig, species: str, cv: CVResult,
                     model: str | None = None) -> SDMEstimator:
    """The model (``cfg.model``, or the ensemble member ``model``) fitted on every sample (what is saved and
    predicts the map); LightGBM with the median of the outer folds' early-stopped rounds."""
    lab = data.labelled
    model = model or cfg.model
    ev = cfg.evaluation
    columns = data.source.embedding_columns(list(cfg.features), data.kept)
    pca, keep = extra_components(model, ev, len(columns))
    rounds = [f.rounds for f in cv.folds if f.rounds]
    params = model_params(model, ev, bool(lab.is_background.any()), int(np.median(rounds)) if rounds else None)
    estimator = make_model(model, task=lab.task, seed=ev.seed, n_jobs=ev.jobs, pca=pca, pca_columns=columns,
                           pca_keep=keep, **params)
    weights = training_weights(lab.y, lab.is_background) if lab.task == "binary" else None
    try:
        return estimator.fit(data.X, lab.y, sample_weight=weights)
    except ValueError as exc:
        raise InvalidInputError(f"cannot fit {model} for {species!r}: {exc}") from None


def _oof_thresholds(data: _SpeciesTable, cfg: FitConfig, cv: CVResult) -> tuple[float | None, dict[str, float]]:
    """The final model's threshold by the configured rule, and every rule's value, from the *outer* out-of-fold
    predictions: never from in-sample scores."""
    y = data.labelled.y
    scored = np.isfinite(cv.oof)
    if not scored.any():
        return None, {}
    value = parse_threshold(cfg.evaluation.threshold).choose(y[scored], cv.oof[scored])
    return (value if np.isfinite(value) else None), all_thresholds(y[scored], cv.oof[scored])


def _result(data: _SpeciesTable, cfg: FitConfig, design: SampleDesign, cv: CVResult) -> FitResult:
    lab, folds = data.labelled, design.folds
    threshold, thresholds = (None, {})
    if lab.task == "binary":
        threshold, thresholds = _oof_thresholds(data, cfg, cv)
        if threshold is None:
            data.notes.append("no out-of-fold predictions of both classes: the final model has no threshold")
    return FitResult(
        species=lab.species, kind=lab.kind, model=cfg.model_label, feature_sets=list(cfg.features),
        n_presences=lab.n_presences, n_absences=int(np.sum((lab.y == 0) & ~lab.is_background)),
        n_background=int(lab.is_background.sum()), n_features=len(data.kept), block_res=folds.block_res,
        n_blocks=folds.n_blocks, cv=cv, cleaning=lab.report, threshold=threshold, notes=data.notes,
        threshold_rule=str(parse_threshold(cfg.evaluation.threshold)) if lab.task == "binary" else None,
        thresholds=thresholds, folds_description=folds.describe(),
        range_m=None if design.range is None else design.range.range_m, cross_fitted=list(design.cross_fitted),
    )


def _saved_model(data: _SpeciesTable, cfg: FitConfig, estimator: SDMEstimator, result: FitResult) -> SavedModel:
    source, ev = data.source, cfg.evaluation
    return SavedModel(
        estimator=estimator, species=result.species, kind=result.kind,
        feature_sets=[{"name": n, "provenance_id": provenance_id(source.provenance(n)),
                       "provenance": source.provenance(n)} for n in cfg.features],
        columns=data.columns, kept=data.kept, resolution=source.resolution, threshold=result.threshold,
        threshold_rule=result.threshold_rule, thresholds=result.thresholds, metrics=result.cv.summary(),
        extra={"occurrences": data.occurrences.path, "block_res": result.block_res, "folds": len(result.cv.folds),
               "block_choice": result.folds_description, "autocorrelation_range_m": result.range_m,
               "cross_fitted": result.cross_fitted, "seed": ev.seed},
    )


def _write_model_dir(out: Path, saved: SavedModel, result: FitResult, design: SampleDesign) -> None:
    save_model(out, saved)
    write_json(out / "cv.json", result.to_dict() | {"fold_assignment": {
        "block_res": design.folds.block_res, "n_blocks": design.folds.n_blocks}})
    write_text(out / "cv_folds.csv", fold_table_csv(result.cv))
    result.out_dir = str(out)


def _draw_map(data: _SpeciesTable, cfg: FitConfig, saved: SavedModel, store, h3_pred, vals_pred) -> str:
    from botaclip.sdm.cells import cells_to_latlng
    from botaclip.sdm.maps import suitability_map
    from botaclip.sdm.predict import collect_predictions, iter_predictions

    lab = data.labelled
    if h3_pred is None:
        h3_pred, vals_pred = collect_predictions(iter_predictions(saved, store))
    records = data.occurrences.records
    pres = records[(records["species"] == lab.species) & records["present"]]
    absn = cells_to_latlng(lab.h3[(lab.y == 0) & ~lab.is_background]) if lab.kind == "presence-absence" else None
    return str(suitability_map(
        h3_pred, vals_pred, Path(cfg.out) / "map.png",
        presences=(pres["lat"].to_numpy(), pres["lng"].to_numpy()), absences=absn,
        title=f"{lab.species} — {cfg.model_label} on {'+'.join(cfg.features)}",
        label="suitability" if lab.task == "binary" else "predicted abundance"))


def fold_table_csv(cv: CVResult) -> str:
    """cv_folds.csv: one row per fold with sizes, threshold, skip reason, note and every metric."""
    buf = io.StringIO()
    names = list(metric_names(cv.task))
    w = csv.writer(buf)
    w.writerow(["fold", "n_train", "n_test", "n_test_presences", "threshold", "skipped", "note", *names])
    for f in cv.folds:
        w.writerow([f.fold, f.n_train, f.n_test, f.n_test_presences, _fmt(f.threshold), f.skipped or "",
                    f.note or "", *(_fmt(f.metrics.get(m)) for m in names)])
    return buf.getvalue()


def _fmt(v) -> str:
    if v is None:
        return ""
    v = float(v)
    return "" if not np.isfinite(v) else f"{v:.6g}"
