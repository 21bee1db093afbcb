"""Maxent through elapid's ``MaxentModel`` (optional extra ``botaclip[maxent]``), saved without pickle.

elapid's own persistence (``elapid.save_object``) pickles the fitted model, and loading a pickle runs code chosen
by whoever wrote the file. A fitted Maxent model is fully described by a few arrays, so botaclip stores those
instead and rebuilds elapid's objects from them on loading:

- the feature classes (``linear``, ``quadratic``, ``product``, ``hinge``, ``threshold``), clamping, and the
  output transform (``cloglog`` by default) with ``tau``;
- each feature class's fitted scaling: the min/max scaler of the linear, quadratic and product features
  (``min_``, ``scale_``, ``data_min_``, ``data_max_``), the hinge knots and the threshold knots with the
  covariates' training minima and maxima;
- the coefficients of the features (``beta_scores_``), the normalising constant ``alpha_`` and the background
  entropy ``entropy_``.

Loading reads those from JSON and ``arrays.npz`` (``allow_pickle=False``); any other key, a feature class elapid
does not know, or arrays whose shapes disagree are refused. The rebuilt model predicts through elapid's own
``predict`` (tested equal to the fitted model's predictions).

elapid fits the penalised (L1) logistic model with glmnet when the ``glmnet`` package is installed and with
scikit-learn's liblinear solver otherwise (``C`` from the regularisation multiplier, elapid's
``estimate_C_from_betas``); the saved arrays are the same either way.
"""

from __future__ import annotations

import numpy as np

from botaclip.errors import InvalidInputError, MissingDependencyError
from botaclip.sdm.models import SDMEstimator, median_imputer

FEATURE_CLASSES = {"l": "linear", "q": "quadratic", "p": "product", "h": "hinge", "t": "threshold"}
#: Above this many covariates, 'auto' leaves out product features (their number grows as n(n-1)/2).
MAX_PRODUCT_COLUMNS = 20
_SCALED = ("linear", "quadratic", "product")
_SCALER_FIELDS = ("min_", "scale_", "data_min_", "data_max_")


def import_elapid():
    """elapid's MaxentModel class, or a one-line error naming the extra that installs it."""
    try:
        from elapid.models import MaxentModel
    except ImportError:
        raise MissingDependencyError("--model maxent needs elapid: pip install 'botaclip[maxent]'") from None
    return MaxentModel


def parse_feature_classes(text: str) -> str:
    """'auto' or letters of l (linear), q (quadratic), p (product), h (hinge), t (threshold); normalised."""
    text = str(text).strip().lower()
    if text == "auto":
        return text
    bad = sorted(set(text) - set(FEATURE_CLASSES))
    if not text or bad:
        raise InvalidInputError(f"--maxent-features {text!r}: use 'auto' or letters of l (linear), q (quadratic), "
                                "p (product), h (hinge), t (threshold), e.g. 'lqh'")
    return "".join(c for c in FEATURE_CLASSES if c in text)


def auto_feature_classes(n_presences: int, n_columns: int) -> str:
    """maxnet's default classes for the number of presences (< 10: l; < 15: lq; < 80: lqh; else lqph), without
    products above MAX_PRODUCT_COLUMNS covariates."""
    classes = "l" if n_presences < 10 else "lq" if n_presences < 15 else "lqh" if n_presences < 80 else "lqph"
    return classes.replace("p", "") if n_columns > MAX_PRODUCT_COLUMNS else classes


class MaxentModel(SDMEstimator):
    """Maxent (elapid): presences against background (or absences), L1-penalised with the regularisation
    multiplier ``beta``; suitability is elapid's cloglog output in [0, 1]. NaN take training medians.

    Presence/background weights are Maxent's own (background weighted 100 : 1, as elapid and maxnet do), not
    botaclip's background down-weighting, so the model is the Maxent users know."""

    name = "maxent"

    def __init__(self, task="binary", seed=0, n_jobs=1, features="auto", beta=1.5):
        super().__init__(task, seed, n_jobs)
        if task != "binary":
            raise InvalidInputError("maxent models presences against background or absences; abundance data need "
                                    "lightgbm, rf or logistic")
        self.params = dict(features=parse_feature_classes(features), beta=float(beta))
        if not self.params["beta"] > 0:
            raise InvalidInputError(f"--maxent-beta must be positive, got {beta!r}")
        self.imputer_ = median_imputer()
        self.model_ = None

    def _fit(self, X, target, sample_weight, valid=None):
        cls = import_elapid()
        X = self.imputer_.fit(X).transform(X).astype(np.float64)
        classes = self.params["features"]
        if classes == "auto":
            classes = auto_feature_classes(int(target.sum()), X.shape[1])
        self.model_ = cls(feature_types=[FEATURE_CLASSES[c] for c in classes], beta_multiplier=self.params["beta"],
                          n_cpus=max(1, self.n_jobs), random_state=self.seed)
        self.model_.fit(X, target.astype(np.uint8))

    def _predict(self, X):
        return np.asarray(self.model_.predict(self.imputer_.transform(X).astype(np.float64)), dtype=np.float64)

    def state(self):
        m, t = self.model_, self.model_.transformer
        meta = self._base_state() | {
            "params": self.params, "feature_types": list(t.feature_types), "clamp": bool(t.clamp),
            "transform": m.transform, "tau": float(m.tau), "alpha": float(m.alpha_), "entropy": float(m.entropy_),
            "n_hinges": int(t.n_hinge_features), "n_thresholds": int(t.n_threshold_features),
        }
        arrays = {"imputer_medians": self.imputer_.medians, "maxent_betas": np.asarray(m.beta_scores_, np.float64)}
        for kind in _SCALED:
            est = t.estimators_.get(kind)
            scaler = est if kind == "linear" else (est.estimator if est is not None else None)
            for f in _SCALER_FIELDS if scaler is not None else ():
                arrays[f"maxent_{kind}_{f}"] = np.asarray(getattr(scaler, f), dtype=np.float64)
        for kind, knots in (("hinge", "hinge_indices_"), ("threshold", "threshold_indices_")):
            est = t.estimators_.get(kind)
            if est is not None:
                arrays[f"maxent_{kind}_knots"] = np.asarray(getattr(est, knots), dtype=np.float64)
                arrays[f"maxent_{kind}_mins"] = np.asarray(est.mins_, dtype=np.float64)
                arrays[f"maxent_{kind}_maxs"] = np.asarray(est.maxs_, dtype=np.float64)
        return meta, arrays, None

    @classmethod
    def from_state(cls, meta, arrays, text):
        model = cls(meta["task"], meta["seed"], **meta["params"])
        model.n_features_ = int(meta["n_features"])
        model.imputer_ = median_imputer(np.asarray(arrays["imputer_medians"], dtype=np.float32))
        model.model_ = rebuild_elapid(meta, arrays, model.n_features_)
        return model


def _expected_keys(kinds: list[str]) -> set[str]:
    keys = {"imputer_medians", "maxent_betas"}
    for kind in kinds:
        if kind in _SCALED:
            keys |= {f"maxent_{kind}_{f}" for f in _SCALER_FIELDS}
        elif kind in ("hinge", "threshold"):
            keys |= {f"maxent_{kind}_{s}" for s in ("knots", "mins", "maxs")}
    return keys


def rebuild_elapid(meta: dict, arrays: dict[str, np.ndarray], n_features: int):
    """A fitted elapid MaxentModel from saved arrays; refuses unknown keys, classes or inconsistent shapes."""
    cls = import_elapid()
    from elapid.features import HingeTransformer, MaxentFeatureTransformer, ThresholdTransformer
    from sklearn.preprocessing import MinMaxScaler

    kinds = list(meta["feature_types"])
    if not kinds or set(kinds) - set(FEATURE_CLASSES.values()) or meta["transform"] not in ("cloglog", "logistic",
                                                                                             "raw"):
        raise ValueError(f"unknown Maxent feature classes {kinds} or transform {meta['transform']!r}")
    # a projected model's arrays (botaclip.sdm.models.Projection) sit beside Maxent's and are read there
    extra = {k for k in arrays if not k.startswith("projection_")} - _expected_keys(kinds)
    missing = _expected_keys(kinds) - set(arrays)
    if extra or missing:
        raise ValueError(f"Maxent arrays do not match its feature classes (unexpected {sorted(extra)}, missing "
                         f"{sorted(missing)})")
    t = MaxentFeatureTransformer(feature_types=kinds, clamp=bool(meta["clamp"]),
                                 n_hinge_features=int(meta["n_hinges"]), n_threshold_features=int(meta["n_thresholds"]))
    t.continuous_, t.categorical_ = list(range(n_features)), None
    for kind in kinds:
        if kind in _SCALED:
            scaler = MinMaxScaler(clip=bool(meta["clamp"]))
            for f in _SCALER_FIELDS:
                setattr(scaler, f, np.asarray(arrays[f"maxent_{kind}_{f}"], dtype=np.float64))
            scaler.data_range_ = scaler.data_max_ - scaler.data_min_
            scaler.n_features_in_, scaler.n_samples_seen_ = scaler.min_.shape[0], 1
            t.estimators_[kind] = scaler if kind == "linear" else _wrapped(kind, scaler, bool(meta["clamp"]))
        else:
            est = (HingeTransformer(int(meta["n_hinges"])) if kind == "hinge"
                   else ThresholdTransformer(int(meta["n_thresholds"])))
            knots = np.asarray(arrays[f"maxent_{kind}_knots"], dtype=np.float64)
            if knots.ndim != 2 or knots.shape[1] != n_features:
                raise ValueError(f"Maxent {kind} knots have shape {knots.shape} for {n_features} covariates")
            setattr(est, "hinge_indices_" if kind == "hinge" else "threshold_indices_", knots)
            est.mins_ = np.asarray(arrays[f"maxent_{kind}_mins"], dtype=np.float64)
            est.maxs_ = np.asarray(arrays[f"maxent_{kind}_maxs"], dtype=np.float64)
            t.estimators_[kind] = est
    model = cls(feature_types=kinds, clamp=bool(meta["clamp"]), transform=meta["transform"], tau=float(meta["tau"]))
    model.transformer, model.preprocessor = t, None
    model.beta_scores_ = np.asarray(arrays["maxent_betas"], dtype=np.float64)
    model.alpha_, model.entropy_ = float(meta["alpha"]), float(meta["entropy"])
    model.initialized_ = True
    try:  # arrays of the wrong shapes fail here, as a damaged model, not later while predicting
        n_out = t.transform(np.zeros((1, n_features))).shape[1]
    except (ValueError, IndexError, TypeError) as exc:
        raise ValueError(f"Maxent arrays do not fit {n_features} covariates ({exc})") from None
    if model.beta_scores_.shape != (n_out,):
        raise ValueError(f"Maxent has {model.beta_scores_.size} coefficients for {n_out} features")
    return model


def _wrapped(kind: str, scaler, clamp: bool):
    from elapid.features import ProductTransformer, QuadraticTransformer

    est = QuadraticTransformer(clamp=clamp) if kind == "quadratic" else ProductTransformer(clamp=clamp)
    est.estimator = scaler
    return est
