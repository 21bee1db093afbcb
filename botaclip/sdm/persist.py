"""Saving and loading fitted SDMs in documented, non-executable formats.

A model directory holds:
  model.json   format name and version, species, kind, model name, feature sets (names, provenance ids and
               records), feature columns used, the threshold (rule and value, chosen on out-of-fold predictions)
               and the value of every other rule, CV summary, and the estimator's parameters;
  model.txt    LightGBM's own text model (lightgbm, and rf with engine=lightgbm);
  arrays.npz   NumPy arrays (random-forest node arrays, logistic coefficients, Maxent feature scalings, knots
               and coefficients, ensemble members' arrays and rank quantiles, imputation medians), read with
               ``allow_pickle=False``;
  aoa.npz      the area of applicability's reference (training cells in the model's weighted standardised
               feature space, the dissimilarity threshold), also plain arrays.
Loading parses JSON, LightGBM text and plain arrays only: it never unpickles or evaluates anything from the files.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from botaclip.atomic import atomic_write, write_json
from botaclip.errors import BotaclipError, InvalidInputError, MissingFileError, root_cause
from botaclip.sdm.aoa import AOAReference
from botaclip.sdm.models import SDMEstimator, model_from_state

MODEL_FORMAT = "botaclip-sdm-model"
# 2: threshold_rule and thresholds (every rule's value on out-of-fold predictions); version 1 still loads.
MODEL_FORMAT_VERSION = 2


@dataclass
class SavedModel:
    """A fitted estimator with what is needed to apply it to a store again."""

    estimator: SDMEstimator
    species: str
    kind: str
    feature_sets: list[dict[str, Any]]  # [{"name", "provenance_id", "provenance"}], in concatenation order
    columns: list[str]  # all columns of the concatenated feature sets
    kept: list[int]  # indices of the columns the estimator uses
    resolution: int
    threshold: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    threshold_rule: str | None = None  # how ``threshold`` was chosen ('maxtss', 'senspec', 'p10' or a value)
    thresholds: dict[str, float] = field(default_factory=dict)  # every named rule's value, out of sample
    aoa: AOAReference | None = None  # area of applicability (models saved before it have none)

    @property
    def feature_set_names(self) -> list[str]:
        return [f["name"] for f in self.feature_sets]


def save_model(directory: str | Path, saved: SavedModel) -> list[Path]:
    """Write ``saved`` into ``directory`` (created if needed); each file is written atomically. Returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta, arrays, text = saved.estimator.state()
    doc = {
        "format": MODEL_FORMAT,
        "version": MODEL_FORMAT_VERSION,
        "species": saved.species,
        "kind": saved.kind,
        "resolution": saved.resolution,
        "feature_sets": saved.feature_sets,
        "columns": saved.columns,
        "kept_columns": saved.kept,
        "threshold": saved.threshold,
        "threshold_rule": saved.threshold_rule,
        "thresholds": saved.thresholds,
        "metrics": saved.metrics,
        "estimator": meta,
        "files": {"text": "model.txt" if text is not None else None, "arrays": "arrays.npz" if arrays else None,
                  "aoa": "aoa.npz" if saved.aoa is not None else None},
    } | saved.extra
    written = []
    if text is not None:
        written.append(atomic_write(directory / "model.txt", lambda p: p.write_text(text)))
    if arrays:
        def _save(p: Path) -> None:
            with open(p, "wb") as fh:
                np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})
        written.append(atomic_write(directory / "arrays.npz", _save))
    if saved.aoa is not None:
        aoa_arrays = saved.aoa.arrays()

        def _save_aoa(p: Path) -> None:
            with open(p, "wb") as fh:
                np.savez(fh, **aoa_arrays)
        written.append(atomic_write(directory / "aoa.npz", _save_aoa))
    # model.json last: a directory with a model.json is complete.
    written.append(write_json(directory / "model.json", doc))
    return written


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Plain arrays of arrays.npz; a damaged file is said to be damaged (numpy's own message for an archive of
    objects suggests unpickling, which botaclip never does)."""
    refit = "refit the model with `botaclip sdm fit`"
    if not zipfile.is_zipfile(path):
        raise BotaclipError(f"{path} is damaged (not a NumPy .npz archive; truncated or overwritten?); {refit}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        why = "it holds Python objects, not plain arrays" if "pickle" in str(exc) else root_cause(exc)
        raise BotaclipError(f"{path} is damaged ({why}); {refit}") from None


def load_model(directory: str | Path) -> SavedModel:
    """Read a model directory written by :func:`save_model`; a one-line error if it is not one."""
    directory = Path(directory)
    meta_path = directory / "model.json"
    if not meta_path.is_file():
        raise MissingFileError(f"{directory} is not an SDM model directory (no model.json); "
                            "create one with `botaclip sdm fit --out DIR`")
    try:
        doc = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read {meta_path}: {exc}") from None
    if doc.get("format") != MODEL_FORMAT:
        raise InvalidInputError(f"{meta_path} is not a botaclip SDM model (format {doc.get('format')!r})")
    if int(doc.get("version", 0)) > MODEL_FORMAT_VERSION:
        raise InvalidInputError(f"{meta_path} has model format version {doc['version']}; upgrade botaclip to read it")
    files = doc.get("files", {})
    text = None
    arrays: dict[str, np.ndarray] = {}
    try:
        if files.get("text"):
            text = (directory / Path(files["text"]).name).read_text()
        if files.get("arrays"):
            arrays = _load_arrays(directory / Path(files["arrays"]).name)
        estimator = model_from_state(doc["estimator"], arrays, text)
        aoa = AOAReference.from_arrays(_load_arrays(directory / "aoa.npz")) if files.get("aoa") else None
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidInputError(f"cannot load the model in {directory}: {exc}") from None
    known = {"format", "version", "species", "kind", "resolution", "feature_sets", "columns", "kept_columns",
             "threshold", "threshold_rule", "thresholds", "metrics", "estimator", "files"}
    return SavedModel(
        estimator=estimator, species=doc["species"], kind=doc["kind"], feature_sets=doc["feature_sets"],
        columns=doc["columns"], kept=doc["kept_columns"], resolution=int(doc["resolution"]),
        threshold=doc.get("threshold"), metrics=doc.get("metrics", {}),
        # Version 1 chose its max-TSS threshold on in-sample predictions: say so rather than pass it off as OOF.
        threshold_rule=doc.get("threshold_rule", "maxtss-in-sample" if doc.get("threshold") is not None else None),
        thresholds=dict(doc.get("thresholds") or {}), aoa=aoa,
        extra={k: v for k, v in doc.items() if k not in known},
    )
