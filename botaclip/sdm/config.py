"""The settings of the SDM jobs (`sdm fit`, `sdm compare`, `sdm predict`) as frozen dataclasses.

Each is validated when built, before any data is read, with errors that name the parameter (the CLI spells it
as its option). Defaults live here only: the CLI reads them from these classes. See :mod:`botaclip.config`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from botaclip.errors import InvalidInputError, param
from botaclip.sdm.models import LOGISTIC_SOLVERS, MODEL_NAMES, RF_ENGINES
from botaclip.sdm.occurrences import KINDS, OccurrenceColumns
from botaclip.sdm.thresholds import parse_threshold


def check_projected_crs(text: str, name: str = "crs") -> str:
    """The CRS ``text`` (EPSG:xxxx, WKT, PROJ string) as 'AUTHORITY:CODE' or WKT, after checking it is a projected
    CRS in metres (pixel sizes are metres)."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_user_input(text)
    except (CRSError, TypeError, ValueError):
        raise InvalidInputError(f"{param(name)} {text!r} is not a coordinate reference system; give e.g. "
                                "EPSG:2154 (Lambert-93), EPSG:3035 (LAEA Europe) or a WKT/PROJ string") from None
    unit = crs.axis_info[0].unit_name if crs.axis_info else ""
    if not crs.is_projected or unit not in ("metre", "meter"):
        raise InvalidInputError(f"{param(name)} {text!r} is not a projected CRS in metres ({crs.name}); pixel sizes "
                                "are metres: give e.g. EPSG:2154, EPSG:3035 or a UTM zone")
    auth = crs.to_authority()
    return f"{auth[0]}:{auth[1]}" if auth else crs.to_wkt()


def _check(ok: bool, name: str, requirement: str, value) -> None:
    if not ok:
        raise InvalidInputError(f"{param(name)} {requirement}, got {value!r}")


@dataclass(frozen=True)
class SamplingConfig:
    """How occurrences become samples: the kind of data, presence-only background, cleaning."""

    kind: str | None = None  # presence-absence, presence-only or abundance; None: inferred from the file
    background: int = 10_000  # background cells for presence-only data (all indexed cells if fewer)
    target_group: str | Path | None = None  # occurrence file whose cells are the background
    max_uncertainty: float | None = None  # drop records with coordinate uncertainty above this (metres)
    min_presences: int = 10  # fewest presence cells (after cleaning) a species needs
    columns: OccurrenceColumns = field(default_factory=OccurrenceColumns)

    def __post_init__(self) -> None:
        _check(self.kind is None or self.kind in KINDS, "kind", f"must be one of {', '.join(KINDS)}", self.kind)
        _check(_is_int(self.background) and self.background >= 1, "background", "must be a positive count",
               self.background)
        _check(self.max_uncertainty is None or (_is_number(self.max_uncertainty) and self.max_uncertainty >= 0),
               "max_uncertainty", "must be a non-negative number of metres", self.max_uncertainty)
        _check(_is_int(self.min_presences) and self.min_presences >= 1, "min_presences", "must be at least 1",
               self.min_presences)


@dataclass(frozen=True)
class EvaluationConfig:
    """How models are fitted and scored: spatial-block folds, block size, threshold rule, projection of the
    features, seed and threads."""

    folds: int = 5  # outer spatial folds
    block_res: int | str = "auto"  # H3 resolution of the blocks, or 'auto' (from the autocorrelation range)
    threshold: str | float = "maxtss"  # maxtss, senspec, p10 or a value in [0, 1]
    inner_folds: int | None = None  # other outer folds each outer fold's threshold is chosen on; None: all
    seed: int = 0  # seed of folds, background and models
    jobs: int | None = None  # compare: worker processes over species x feature sets; fit: threads per fit (None: all cores)
    pca: int | None = None  # models on this many leading principal components of embeddings (fitted without labels)
    extra_pcs: int | None = 8  # LightGBM: this many leading principal components added to the embeddings
    early_stopping: bool = False  # LightGBM: rounds chosen by early stopping in the threshold's inner CV
    lightgbm_params: str | tuple[tuple[str, float], ...] = ()  # LightGBM hyperparameters 'key=value,...' over its defaults
    bin_once: bool = True  # LightGBM: bin each feature matrix once, reused by every fit on its rows
    rf_params: str | tuple[tuple[str, float | str], ...] = ()  # random forest hyperparameters 'key=value,...'
    logistic_params: str | tuple[tuple[str, float | str], ...] = ()  # logistic hyperparameters 'key=value,...'
    maxent_features: str = "auto"  # Maxent feature classes: 'auto' or letters of l, q, p, h, t
    maxent_beta: float = 1.5  # Maxent regularisation multiplier (elapid's default; higher: smoother)
    importance: bool = False  # permutation importance of feature groups on the held-out folds
    importance_repeats: int = 3  # permutations per group and fold

    def __post_init__(self) -> None:
        _check(self.pca is None or (_is_int(self.pca) and self.pca >= 0), "pca",
               "must be a number of components (0 or None: all features)", self.pca)
        if self.pca == 0:
            object.__setattr__(self, "pca", None)
        _check(self.extra_pcs is None or (_is_int(self.extra_pcs) and self.extra_pcs >= 0), "extra_pcs",
               "must be a number of components (0 or None: none added)", self.extra_pcs)
        if self.extra_pcs == 0:
            object.__setattr__(self, "extra_pcs", None)
        _check(_is_int(self.folds) and self.folds >= 2, "folds", "must be at least 2", self.folds)
        _check(self.inner_folds is None or (_is_int(self.inner_folds) and self.inner_folds >= 2), "inner_folds",
               "must be at least 2 (leave it out for all the other outer folds)", self.inner_folds)
        _check(_is_int(self.seed) and self.seed >= 0, "seed", "must be a non-negative integer", self.seed)
        _check(self.jobs is None or (_is_int(self.jobs) and self.jobs >= 1), "jobs",
               "must be at least 1 (or None for all cores)", self.jobs)
        object.__setattr__(self, "block_res", _block_res(self.block_res))
        parse_threshold(self.threshold)  # raises for an unknown rule or a value outside [0, 1]
        from botaclip.sdm.maxent import parse_feature_classes

        object.__setattr__(self, "maxent_features", parse_feature_classes(self.maxent_features))
        _check(_is_number(self.maxent_beta) and self.maxent_beta > 0, "maxent_beta", "must be a positive number",
               self.maxent_beta)
        _check(_is_int(self.importance_repeats) and self.importance_repeats >= 1, "importance_repeats",
               "must be at least 1", self.importance_repeats)
        object.__setattr__(self, "lightgbm_params", parse_lightgbm_params(self.lightgbm_params))
        object.__setattr__(self, "rf_params", parse_model_params(self.rf_params, "rf_params", RF_PARAMS))
        object.__setattr__(self, "logistic_params",
                           parse_model_params(self.logistic_params, "logistic_params", LOGISTIC_PARAMS))

    def model_options(self, model: str) -> dict:
        """Hyperparameters of ``model`` that come from these settings (Maxent's feature classes and beta)."""
        if model == "maxent":
            return {"features": self.maxent_features, "beta": float(self.maxent_beta)}
        if model == "lightgbm":
            return dict(self.lightgbm_params)
        if model == "rf":
            return dict(self.rf_params)
        if model == "logistic":
            return dict(self.logistic_params)
        return {}

    @property
    def block_resolution(self) -> int | None:
        """The forced block resolution, or None for 'auto'."""
        return None if self.block_res == "auto" else int(self.block_res)


@dataclass(frozen=True)
class FitConfig:
    """`sdm fit`: one species, one model, on one or more feature sets joined on the cell."""

    features: str | tuple[str, ...] = ("botaclip",)  # 'a,b' or ('a', 'b')
    model: str = "lightgbm"  # with ``ensemble``: ignored, the members are ``models``
    models: tuple[str, ...] | None = None  # ensemble members ('lightgbm,rf,...'); needs ``ensemble``
    ensemble: str | None = None  # 'mean' or 'weighted': fit the members and save their ensemble
    response_curves: bool = False  # response.png: partial dependence of each scalar covariate
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    out: str | Path | None = None  # model directory (model.json, cv.json, cv_folds.csv, map.png)
    predictions: str | bool | None = True  # True: table sdm_<species> in the store; a name; False: none
    write_map: bool = True

    def __post_init__(self) -> None:
        _check(self.model in MODEL_NAMES, "model", f"must be one of {', '.join(MODEL_NAMES)}", self.model)
        object.__setattr__(self, "features", feature_set_names(self.features))
        object.__setattr__(self, "ensemble", _ensemble_rule(self.ensemble))
        if self.ensemble is not None:
            object.__setattr__(self, "models", _model_list(self.models or ("lightgbm", "rf", "logistic")))
            _check(len(self.models) >= 2, "models", "must name at least two models for an ensemble", self.models)
        elif self.models is not None:
            raise InvalidInputError(f"{param('models')} lists the members of an ensemble; give {param('ensemble')} "
                                    f"mean|weighted too, or use {param('model')} for one model")
        for m in (self.models or (self.model,)):
            _require_extra(m)
        _check_out(self.out)

    @property
    def model_label(self) -> str:
        """The model's name in outputs: the model, or 'ensemble-<rule>'."""
        return self.model if self.ensemble is None else f"ensemble-{self.ensemble}"


@dataclass(frozen=True)
class CompareConfig:
    """`sdm compare`: species x feature sets x models on identical samples and folds."""

    species: tuple[str, ...] | None = None  # None: every species with enough presences
    models: tuple[str, ...] = ("lightgbm",)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    out: str | Path | None = None  # comparison.csv, report.md, report.json
    ensemble: str | None = None  # 'mean' or 'weighted': one more model, the ensemble of ``models``
    engine: str = "local"  # local (worker processes on this machine) or ray (species over a Ray cluster)
    ray_address: str | None = None  # with engine 'ray': the cluster to join (None: start a local one)

    def __post_init__(self) -> None:
        from botaclip.sdm.engines import ENGINES

        _check(self.engine in ENGINES, "engine", f"must be one of {', '.join(ENGINES)}", self.engine)
        object.__setattr__(self, "models", _model_list(self.models))
        object.__setattr__(self, "ensemble", _ensemble_rule(self.ensemble))
        _check(self.ensemble is None or len(self.models) >= 2, "models",
               "must name at least two models for an ensemble", self.models)
        for m in self.models:
            _require_extra(m)
        if self.species is not None:
            object.__setattr__(self, "species", tuple(self.species) or None)
        _check_out(self.out)


@dataclass(frozen=True)
class PredictConfig:
    """`sdm predict`: apply a saved model to the indexed cells of a store."""

    region: str | None = None  # an H3 cell, a box 'west,south,east,north' (WGS84 degrees) or a polygon file
    pixel_m: float | None = None  # .tif pixel size in metres (local UTM); None: half the H3 edge length
    binary: bool = False  # 0/1 presence at a threshold instead of suitability
    threshold: str | float | None = None  # with binary: a rule (maxtss, senspec, p10) or a value in [0, 1]
    force: bool = False  # write a .tif even above 100 million pixels
    aoa: bool = True  # dissimilarity index and area of applicability per cell (.parquet, .gpkg, .png)
    crs: str | None = None  # .tif projection (EPSG code, WKT, PROJ string; projected, metres); None: local UTM

    def __post_init__(self) -> None:
        _check(self.pixel_m is None or (_is_number(self.pixel_m) and self.pixel_m > 0), "pixel_m",
               "must be a positive number of metres", self.pixel_m)
        if self.crs is not None:
            check_projected_crs(self.crs)
        if self.threshold is not None:
            if not self.binary:
                raise InvalidInputError(f"{param('threshold')} applies to binary output; ask for it with "
                                        f"{param('binary')}")
            parse_threshold(self.threshold)


ENSEMBLE_RULES = ("mean", "weighted")

#: LightGBM hyperparameters ``lightgbm_params`` may set (botaclip.sdm.models.LightGBMModel), with their kind.
LIGHTGBM_PARAMS = {"n_estimators": int, "learning_rate": float, "num_leaves": int, "min_child_samples": int,
                   "subsample": float, "colsample_bytree": float, "reg_lambda": float, "max_bin": int,
                   "early_stopping_rounds": int, "stop_on": str, "neg_subsample": float, "min_neg_per_tree": int}


def _key_values(value, option: str) -> list[tuple[str, object]]:
    """'a=1,b=x' (or (name, value) pairs, or a dict) -> [(name, raw value)]; None or '' -> []; a one-line
    error naming ``option`` for an item without '='."""
    if value is None or value == "":
        return []
    if not isinstance(value, str):
        return list(value.items() if isinstance(value, dict) else value)
    pairs = []
    for item in (x.strip() for x in value.split(",") if x.strip()):
        name, sep, text = item.partition("=")
        _check(bool(sep), option, "must be KEY=VALUE pairs separated by commas", item)
        pairs.append((name.strip(), text.strip()))
    return pairs


def parse_lightgbm_params(value) -> tuple[tuple[str, float | str], ...]:
    """'max_bin=255,learning_rate=0.05' (or pairs, or a dict) -> sorted (name, value) pairs; a one-line error
    naming the parameter for an unknown name or a value out of range."""
    out = {}
    for name, raw in _key_values(value, "lightgbm_params"):
        _check(name in LIGHTGBM_PARAMS, "lightgbm_params", f"names one of {', '.join(LIGHTGBM_PARAMS)}", name)
        kind = LIGHTGBM_PARAMS[name]
        if kind is str:
            _check(str(raw) in ("auc", "loss"), "lightgbm_params", f"{name} must be auc or loss", raw)
            out[name] = str(raw)
            continue
        try:
            number = kind(float(raw)) if kind is int and float(raw).is_integer() else kind(raw)
        except (TypeError, ValueError):
            number = None
        ok = number is not None and math.isfinite(number) and (number > 0 or (name == "min_neg_per_tree"
                                                                             and number == 0))
        ok = ok and (name not in ("subsample", "colsample_bytree", "neg_subsample") or number <= 1)
        ok = ok and (name != "max_bin" or number >= 2)
        limit = {"subsample": " at most 1", "colsample_bytree": " at most 1", "neg_subsample": " at most 1",
                 "max_bin": " of at least 2", "min_neg_per_tree": " (0: no floor)"}
        _check(ok, "lightgbm_params", f"{name} must be a positive {kind.__name__}{limit.get(name, '')}", raw)
        out[name] = number
    return tuple(sorted(out.items()))


#: Hyperparameters `--rf-params` and `--logistic-params` may set: their type, or their choices.
RF_PARAMS: dict = {"n_estimators": int, "min_samples_leaf": int, "max_samples": float, "engine": RF_ENGINES}
LOGISTIC_PARAMS: dict = {"C": float, "tol": float, "solver": LOGISTIC_SOLVERS, "warm_start": bool}


def parse_model_params(value, option: str, allowed: dict) -> tuple[tuple[str, float | str], ...]:
    """'C=0.5,solver=lbfgs' (or pairs, or a dict) -> sorted (name, value) pairs of the parameters ``allowed``
    (name -> int, float, bool or a tuple of choices); a one-line error naming ``option`` for an unknown name or
    a value out of range. Numbers must be positive; ``max_samples`` (a share of the rows) at most 1."""
    out: dict = {}
    for name, raw in _key_values(value, option):
        _check(name in allowed, option, f"names one of {', '.join(allowed)}", name)
        kind = allowed[name]
        if isinstance(kind, tuple):
            _check(str(raw) in kind, option, f"{name} must be one of {', '.join(kind)}", raw)
            out[name] = str(raw)
        elif kind is bool:
            text = str(raw).lower()
            _check(text in ("1", "0", "true", "false"), option, f"{name} must be true or false", raw)
            out[name] = text in ("1", "true")
        else:
            try:
                number = kind(float(raw)) if kind is int and float(raw).is_integer() else kind(raw)
            except (TypeError, ValueError):
                number = None
            ok = number is not None and math.isfinite(number) and number > 0
            ok = ok and (name != "max_samples" or number <= 1)
            _check(ok, option, f"{name} must be a positive {kind.__name__}"
                               + (" at most 1" if name == "max_samples" else ""), raw)
            out[name] = number
    return tuple(sorted(out.items()))


def _model_list(models) -> tuple[str, ...]:
    names = models.split(",") if isinstance(models, str) else models
    out = tuple(m.strip() for m in names if m and m.strip())
    _check(len(out) > 0, "models", "must name at least one model", models)
    for m in out:
        _check(m in MODEL_NAMES, "models", f"must be among {', '.join(MODEL_NAMES)}", m)
    _check(len(set(out)) == len(out), "models", "lists a model twice", models)
    return out


def _ensemble_rule(rule: str | None) -> str | None:
    if rule is None or rule == "":
        return None
    _check(rule in ENSEMBLE_RULES, "ensemble", f"must be one of {', '.join(ENSEMBLE_RULES)}", rule)
    return rule


def _require_extra(model: str) -> None:
    """A model from an optional extra fails here, before any data is read, naming the extra."""
    if model == "maxent":
        from botaclip.sdm.maxent import import_elapid

        import_elapid()


def _check_out(out: str | Path | None) -> None:
    """Never an output folder inside a store (nothing writes into a store but its writer)."""
    if out is not None:
        from botaclip.store.outputs import check_output_path

        check_output_path(out, what=f"{param('out')} folder", is_dir=True)


def feature_set_names(features: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """'a,b' or ['a', 'b'] -> ('a', 'b') (names of feature sets joined on the cell)."""
    names = features.split(",") if isinstance(features, str) else list(features)
    names = [n.strip() for n in names if n and n.strip()]
    if not names:
        raise InvalidInputError(f"no feature set given; name one or more in {param('features')} (NAME[,NAME...])")
    if len(set(names)) != len(names):
        raise InvalidInputError(f"feature set listed twice in {','.join(names)}")
    return tuple(names)


def _block_res(value) -> int | str:
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return "auto"
    try:
        res = int(value)
    except (TypeError, ValueError):
        res = -1
    _check(0 <= res <= 15 and str(value).strip().lstrip("+").isdigit(), "block_res",
           "must be 'auto' or an H3 resolution 0..15", value)
    return res


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
