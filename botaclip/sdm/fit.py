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
from botaclip.sdm.evaluate import CVResult, cross_validate, metric_names, training_weights
from botaclip.sdm.folds import spatial_folds
from botaclip.sdm.models import MODEL_NAMES, make_model
from botaclip.sdm.occurrences import KINDS, Occurrences, read_occurrences
from botaclip.sdm.options import check_run_options
from botaclip.sdm.persist import SavedModel, save_model


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
            "threshold": self.threshold, "cv": self.cv.to_dict(), "cleaning": self.cleaning.to_dict(),
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
    block_res: int | None = None,
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
    All input is validated before anything is written.
    """
    check_run_options(background=background, seed=seed, n_jobs=n_jobs, max_uncertainty=max_uncertainty, out=out)
    model = check_model(model)
    names = parse_feature_sets(features)
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
    folds_ = spatial_folds(labelled.h3, y, folds, block_res, seed)
    notes += folds_.notes
    cv = cross_validate(X, y, folds_, model, task, bg, seed, n_jobs)
    for f in cv.folds:
        if f.skipped:
            notes.append(f"fold {f.fold} skipped: {f.skipped}")
    if all(f.skipped for f in cv.folds):
        notes.append("no fold could be scored; the metrics are undefined")

    estimator = make_model(model, task=task, seed=seed, n_jobs=n_jobs)
    weights = training_weights(y, bg) if task == "binary" else None
    try:
        estimator.fit(X, y, sample_weight=weights)
    except ValueError as exc:
        raise BotaclipError(f"cannot fit {model} for {species!r}: {exc}") from None
    threshold = M.best_tss_threshold(y, estimator.predict(X)) if task == "binary" else None

    n_pres = labelled.n_presences
    result = FitResult(
        species=species, kind=kind, model=model, feature_sets=names, n_presences=n_pres,
        n_absences=int(np.sum((y == 0) & ~bg)), n_background=int(bg.sum()), n_features=len(kept),
        block_res=folds_.block_res, n_blocks=folds_.n_blocks, cv=cv, cleaning=labelled.report,
        threshold=threshold, notes=notes,
    )
    saved = SavedModel(
        estimator=estimator, species=species, kind=kind,
        feature_sets=[{"name": n, "provenance_id": provenance_id(source.provenance(n)),
                       "provenance": source.provenance(n)} for n in names],
        columns=columns_all, kept=kept, resolution=source.resolution, threshold=threshold,
        metrics=cv.summary(), extra={"occurrences": occ.path, "block_res": folds_.block_res, "folds": folds,
                                     "seed": seed},
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
    w.writerow(["fold", "n_train", "n_test", "n_test_presences", "threshold", "skipped", *names])
    for f in cv.folds:
        w.writerow([f.fold, f.n_train, f.n_test, f.n_test_presences, _fmt(f.threshold), f.skipped or "",
                    *(_fmt(f.metrics.get(m)) for m in names)])
    from botaclip.sdm.persist import _atomic_write

    _atomic_write(path, lambda p: Path(p).write_text(buf.getvalue()))


def _fmt(v) -> str:
    if v is None:
        return ""
    v = float(v)
    return "" if not np.isfinite(v) else f"{v:.6g}"
