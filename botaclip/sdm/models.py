"""SDM estimators: LightGBM (default), random forest (as in the BotaCLIP paper) and L2 logistic regression.

Each estimator has ``fit(X, y, sample_weight=None)``, ``predict(X)`` (suitability in [0, 1] for binary tasks,
expected abundance for regression) and, for binary tasks, ``predict_proba(X)``. They validate their input and do
no I/O: :mod:`botaclip.sdm.persist` turns their ``state()`` into files in documented formats (LightGBM's text
model, NumPy arrays, JSON) and back, never through pickle.

Abundance (regression) models are fitted on ``log1p(y)`` and predict ``expm1`` of the fitted value (clipped at
0), so skewed counts do not let a few large samples dominate the squared loss.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from botaclip.sdm.binning import DEFAULT_MAX_BIN, BinnedRows, dataset_params
from botaclip.threads import blas_threads

MODEL_NAMES = ("lightgbm", "rf", "logistic", "maxent")  # maxent: optional extra botaclip[maxent]
#: Rounds without improvement of the held-out loss after which boosting stops (when a held-out part is given).
EARLY_STOPPING_PATIENCE = 30
#: What early stopping watches on the held-out part: 'auc' (binary tasks; the ranking the evaluation scores) or
#: 'loss' (log-loss, or L2 for abundance). Regression always stops on L2.
STOPPING_METRICS = ("auc", "loss")
TASKS = ("binary", "regression")


def _check_X(X, n_features: int | None = None) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (samples x features), got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features, the model was fitted on {n_features}")
    return X


def _check_y(y, task: str, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64).ravel()
    if y.shape[0] != n:
        raise ValueError(f"y has {y.shape[0]} values for {n} samples")
    if not np.isfinite(y).all():
        raise ValueError("y holds missing or infinite values")
    if task == "binary":
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("binary y must hold only 0 and 1")
        if np.unique(y).size < 2:
            raise ValueError("y holds one class only; a classifier needs presences and absences")
    elif (y < 0).any():
        raise ValueError("abundance y must be non-negative")
    return y


class _Imputer:
    """Median imputation learnt on training data (for models that cannot take NaN)."""

    def __init__(self, medians: np.ndarray | None = None):
        self.medians = medians

    def fit(self, X: np.ndarray) -> "_Imputer":
        with np.errstate(all="ignore"):
            med = np.nanmedian(X, axis=0) if np.isnan(X).any() else np.zeros(X.shape[1], dtype=np.float32)
        self.medians = np.nan_to_num(med, nan=0.0).astype(np.float32)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        if not np.isnan(X).any():
            return X
        X = X.copy()
        rows, cols = np.nonzero(np.isnan(X))
        X[rows, cols] = self.medians[cols]
        return X


def median_imputer(medians: np.ndarray | None = None) -> _Imputer:
    """Median imputation (fitted with ``.fit(X)``, or from saved ``medians``) for models that cannot take NaN."""
    return _Imputer(medians)


class SDMEstimator:
    """Base class: the task ('binary' or 'regression') and the number of features seen in ``fit``."""

    name = ""

    def __init__(self, task: str = "binary", seed: int = 0, n_jobs: int | None = 1):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.task = task
        self.seed = int(seed)
        self.n_jobs = 0 if n_jobs is None else int(n_jobs)  # threads; 0: all cores
        self.n_features_: int | None = None

    def fit(self, X, y, sample_weight=None, valid=None) -> "SDMEstimator":
        """Fit on (X, y) with optional weights. ``valid``: (X, y, weights) held out for early stopping, used by
        models that stop early (LightGBM) and ignored by the others."""
        X = _check_X(X)
        y = _check_y(y, self.task, X.shape[0])
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64).ravel()
        self.n_features_ = X.shape[1]
        target = y if self.task == "binary" else np.log1p(y)
        if valid is not None:
            Xv, yv, wv = valid
            yv = np.asarray(yv, dtype=np.float64)
            valid = (_check_X(Xv, X.shape[1]), yv if self.task == "binary" else np.log1p(yv), wv)
        self._fit(X, target, sample_weight, valid)
        return self

    @property
    def rounds(self) -> int | None:
        """Boosting rounds kept after early stopping (None for models that do not boost)."""
        return None

    def predict(self, X) -> np.ndarray:
        """Suitability (probability of presence, binary) or expected abundance (regression), float64."""
        if self.n_features_ is None:
            raise RuntimeError("model is not fitted")
        X = _check_X(X, self.n_features_)
        raw = self._predict(X)
        if self.task == "binary":
            return np.clip(raw, 0.0, 1.0)
        return np.clip(np.expm1(raw), 0.0, None)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities [P(absence), P(presence)] per sample (binary tasks only)."""
        if self.task != "binary":
            raise AttributeError("predict_proba is only defined for presence/absence models")
        p = self.predict(X)
        return np.column_stack([1.0 - p, p])

    # Subclasses implement these three.
    def _fit(self, X: np.ndarray, target: np.ndarray, sample_weight: np.ndarray | None, valid=None) -> None:
        raise NotImplementedError

    def _predict(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], str | None]:
        """(JSON-able parameters, named arrays, text payload) that :func:`from_state` rebuilds the model from."""
        raise NotImplementedError

    def _base_state(self) -> dict[str, Any]:
        return {"model": self.name, "task": self.task, "seed": self.seed, "n_features": self.n_features_}


class LightGBMModel(SDMEstimator):
    """Gradient-boosted trees (LightGBM). Handles missing values natively; quiet (``verbose=-1``)."""

    name = "lightgbm"

    def __init__(self, task="binary", seed=0, n_jobs=1, n_estimators=150, learning_rate=0.1, num_leaves=31,
                 min_child_samples=10, subsample=0.8, colsample_bytree=0.1, reg_lambda=1.0,
                 max_bin=DEFAULT_MAX_BIN, early_stopping_rounds=EARLY_STOPPING_PATIENCE, stop_on="auc",
                 neg_subsample=0.1, min_neg_per_tree=500):
        super().__init__(task, seed, n_jobs)
        self.params = dict(
            n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves,
            min_child_samples=min_child_samples, subsample=subsample, subsample_freq=1,
            colsample_bytree=colsample_bytree, reg_lambda=reg_lambda, max_bin=max_bin,
            early_stopping_rounds=early_stopping_rounds, stop_on=stop_on, neg_subsample=neg_subsample,
            min_neg_per_tree=min_neg_per_tree,
        )
        if stop_on not in STOPPING_METRICS:
            raise ValueError(f"stop_on must be one of {', '.join(STOPPING_METRICS)}, got {stop_on!r}")
        self.booster_ = None

    def fit(self, X, y, sample_weight=None, valid=None) -> "LightGBMModel":
        """As :meth:`SDMEstimator.fit`; ``X`` (and the X of ``valid``) may also be :class:`BinnedRows` of
        features binned once (:mod:`botaclip.sdm.binning`), which skips binning the columns for this fit."""
        if not isinstance(X, BinnedRows):
            return super().fit(X, y, sample_weight, valid)
        y = self._binned_target(X, y)
        if valid is not None:
            Xv, yv, wv = valid
            if not isinstance(Xv, BinnedRows) or Xv.parent is not X.parent:
                raise ValueError("a held-out part must be rows of the same binned features as the training part")
            yv = np.asarray(yv, dtype=np.float64)
            valid = (Xv, yv if self.task == "binary" else np.log1p(yv), wv)
        self._fit(X, y if self.task == "binary" else np.log1p(y), sample_weight, valid)
        return self

    def fit_scoring(self, X: BinnedRows, y, sample_weight=None, *,
                    scored: BinnedRows | Sequence[BinnedRows]) -> np.ndarray:
        """Fit on the binned rows ``X`` for ``n_estimators`` rounds (no early stopping), as :meth:`fit` does, and
        return the suitability of the rows ``scored`` of the same binned matrix (one part, or several whose
        results follow each other in the order given): what :meth:`predict` gives for their raw features (a raw
        value passes a split exactly when its bin does), read from the scores LightGBM keeps for held-out sets while
        it boosts instead of predicted again from hundreds of raw columns (about 0.04 s per call on 2,000 x 776).
        Each part's LightGBM Dataset is made once (:meth:`BinnedRows.held_out`): a fold scored by several fits is
        copied out of the binned matrix once. Binary tasks. No metric is computed on the scored rows: they cannot
        shape the model."""
        import lightgbm as lgb

        if self.task != "binary":
            raise ValueError("fit_scoring predicts presence probabilities: binary tasks only")
        parts = [scored] if isinstance(scored, BinnedRows) else list(scored)
        if not (isinstance(X, BinnedRows) and parts
                and all(isinstance(p, BinnedRows) and p.parent is X.parent for p in parts)):
            raise ValueError("fit_scoring needs the training and scored rows of one binned matrix")
        y = self._binned_target(X, y)
        params = self._bagging(self._train_params(), y) | {"metric": "None"}
        self.booster_ = lgb.train(params, X.dataset(y, sample_weight), num_boost_round=self.params["n_estimators"],
                                  valid_sets=[p.held_out() for p in parts], keep_training_booster=True)
        found = []
        self.booster_.eval_valid(lambda preds, _: found.append(np.array(preds, dtype=np.float64)) or ("-", 0.0, True))
        self.booster_.free_dataset()
        out = []
        for part, scores in zip(parts, found):
            # A held-out Dataset holds the rows in increasing index order: back to the order given.
            out.append(np.empty(part.shape[0]))
            out[-1][np.argsort(part.index, kind="stable")] = scores
        return np.clip(np.concatenate(out), 0.0, 1.0)

    def _binned_target(self, X: BinnedRows, y) -> np.ndarray:
        """``y`` checked for a fit on the binned rows ``X`` (whose bins must be the model's), which it records."""
        if X.max_bin != self.params["max_bin"]:
            raise ValueError(f"features binned with max_bin {X.max_bin}, the model asks for {self.params['max_bin']}")
        self.n_features_ = X.shape[1]
        return _check_y(y, self.task, X.shape[0])

    def _train_params(self) -> dict:
        return {
            "objective": "binary" if self.task == "binary" else "regression",
            "learning_rate": self.params["learning_rate"],
            "num_leaves": self.params["num_leaves"],
            "min_data_in_leaf": self.params["min_child_samples"],
            "bagging_fraction": self.params["subsample"],
            "bagging_freq": self.params["subsample_freq"],
            "feature_fraction": self.params["colsample_bytree"],
            "lambda_l2": self.params["reg_lambda"],
            "num_threads": self.n_jobs,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,  # many columns, few rows: skips LightGBM's row/column-wise timing test
            # The held-out metric early stopping watches; log-loss (L2) keeps improving only while the
            # probabilities' calibration does, AUC as long as the ranking does.
            "metric": "auc" if (self.task == "binary" and self.params.get("stop_on", "auc") == "auc") else "",
            "verbose": -1,
        }

    def _bagging(self, params: dict, target: np.ndarray) -> dict:
        """Binary tasks with ``neg_subsample`` < 1: each tree sees all presences and that fraction of the
        absences/background (LightGBM's balanced bagging) instead of ``subsample`` of every row, but at least
        ``min_neg_per_tree`` of them: a tenth of 2,000 background cells is too few for a tree, while a tenth of
        10,000 (800 in an outer fit's training part, 600 in an inner one) is enough (docs/benchmarks.md,
        "SDM speed")."""
        frac = float(self.params.get("neg_subsample", 1.0))
        n_neg = int(np.sum(np.asarray(target) <= 0))
        floor = int(self.params.get("min_neg_per_tree", 0) or 0)
        if floor and n_neg:
            frac = max(frac, min(1.0, floor / n_neg))
        if self.task != "binary" or frac >= 1.0:
            return params
        return params | {"pos_bagging_fraction": 1.0, "neg_bagging_fraction": frac, "bagging_freq": 1}

    def _datasets(self, X, target, sample_weight, valid):
        """(training Dataset, held-out Dataset or None) on the same bins."""
        import lightgbm as lgb

        if isinstance(X, BinnedRows):
            data = X.dataset(target, sample_weight)
            return data, None if valid is None else valid[0].dataset(valid[1], valid[2])
        params = dataset_params(self.params["max_bin"], self.n_jobs)
        data = lgb.Dataset(X, label=target, weight=sample_weight, free_raw_data=True, params=params)
        if valid is None:
            return data, None
        return data, lgb.Dataset(valid[0], label=valid[1], weight=valid[2], reference=data, params=params)

    def _fit(self, X, target, sample_weight, valid=None):
        import lightgbm as lgb

        data, held_out = self._datasets(X, target, sample_weight, valid)
        if held_out is None:
            self.booster_ = lgb.train(self._bagging(self._train_params(), target), data,
                                      num_boost_round=self.params["n_estimators"])
            return
        patience = self.params["early_stopping_rounds"]
        self.booster_ = lgb.train(self._bagging(self._train_params(), target), data,
                                  num_boost_round=self.params["n_estimators"],
                                  valid_sets=[held_out], callbacks=[lgb.early_stopping(patience, verbose=False)])
        # Keep only the trees up to the best round: predictions and the saved model agree.
        self.booster_ = lgb.Booster(model_str=self.booster_.model_to_string(num_iteration=self.booster_.best_iteration))

    @property
    def rounds(self) -> int | None:
        return None if self.booster_ is None else int(self.booster_.current_iteration())

    def _predict(self, X):
        return np.asarray(self.booster_.predict(X, num_threads=self.n_jobs), dtype=np.float64)

    def state(self):
        meta = self._base_state() | {"params": self.params}
        return meta, {}, self.booster_.model_to_string()

    @classmethod
    def from_state(cls, meta, arrays, text):
        import lightgbm as lgb

        params = {k: v for k, v in meta["params"].items() if k != "subsample_freq"}
        model = cls(meta["task"], meta["seed"], **params)
        model.n_features_ = meta["n_features"]
        model.booster_ = lgb.Booster(model_str=text)  # LightGBM's own text format; nothing is evaluated
        return model


#: How a random forest is grown: 'sklearn' (exact splits, as in the BotaCLIP paper) or 'lightgbm' (LightGBM's
#: ``rf`` boosting: histogram splits on binned features, far cheaper on hundreds of columns).
RF_ENGINES = ("sklearn", "lightgbm")
#: LightGBM forest: leaves per tree (its trees grow leaf-wise to this size, not to purity) and bins per feature.
RF_LIGHTGBM_LEAVES = 255
RF_LIGHTGBM_BINS = 63


class RandomForestModel(SDMEstimator):
    """Random forest, as used for the SDMs of the BotaCLIP paper; NaN imputed by training medians.

    ``max_samples``: the share of the rows each tree draws (with replacement for scikit-learn, without for
    LightGBM, whose default is 0.632, the share of distinct rows in a bootstrap); None: as many as there are
    rows (scikit-learn's bootstrap). ``engine``: one of :data:`RF_ENGINES`. A loaded scikit-learn forest
    predicts from the exported tree arrays (see :class:`_ForestArrays`), bit-for-bit as scikit-learn does; a
    LightGBM forest is saved as LightGBM's text model.
    """

    name = "rf"

    def __init__(self, task="binary", seed=0, n_jobs=1, n_estimators=300, min_samples_leaf=1, max_features="sqrt",
                 max_samples=None, engine="sklearn"):
        super().__init__(task, seed, n_jobs)
        if engine not in RF_ENGINES:
            raise ValueError(f"engine must be one of {', '.join(RF_ENGINES)}, got {engine!r}")
        if max_features != "sqrt" and engine == "lightgbm":
            raise ValueError("the LightGBM forest draws sqrt(F) features per split; max_features must be 'sqrt'")
        self.params = dict(n_estimators=n_estimators, min_samples_leaf=min_samples_leaf, max_features=max_features,
                           max_samples=max_samples, engine=engine)
        self.imputer_ = _Imputer()
        self.forest_ = None
        self.booster_ = None
        self._sk = None

    def _fit(self, X, target, sample_weight, valid=None):
        X = self.imputer_.fit(X).transform(X)
        if self.params["engine"] == "lightgbm":
            self._fit_lightgbm(X, target, sample_weight)
            return
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        cls = RandomForestClassifier if self.task == "binary" else RandomForestRegressor
        options = {k: v for k, v in self.params.items() if k != "engine"}
        forest = cls(**options, n_jobs=self.n_jobs or -1, random_state=self.seed)
        forest.fit(X, target.astype(int) if self.task == "binary" else target, sample_weight=sample_weight)
        self.forest_ = _ForestArrays.from_sklearn(forest, self.task)
        self._sk = forest

    def _lightgbm_params(self, n_features: int) -> dict:
        """LightGBM's ``rf`` boosting: each tree on a share of the rows (drawn without replacement) and
        sqrt(F) features per split, its leaves averaged over the trees (no shrinkage, no boosting)."""
        return {
            "objective": "binary" if self.task == "binary" else "regression",
            "boosting": "rf", "bagging_fraction": float(self.params["max_samples"] or 0.632), "bagging_freq": 1,
            "feature_fraction_bynode": float(np.sqrt(n_features) / n_features),
            "num_leaves": RF_LIGHTGBM_LEAVES, "min_data_in_leaf": int(self.params["min_samples_leaf"]),
            "min_sum_hessian_in_leaf": 1e-3, "max_bin": RF_LIGHTGBM_BINS, "num_threads": self.n_jobs,
            "seed": self.seed, "deterministic": True, "force_col_wise": True, "verbose": -1,
        }

    def _fit_lightgbm(self, X, target, sample_weight):
        import lightgbm as lgb

        data = lgb.Dataset(X, label=target, weight=sample_weight, free_raw_data=True,
                           params={"max_bin": RF_LIGHTGBM_BINS, "verbose": -1})
        self.booster_ = lgb.train(self._lightgbm_params(X.shape[1]), data,
                                  num_boost_round=int(self.params["n_estimators"]))

    def _predict(self, X):
        X = self.imputer_.transform(X)
        if self.booster_ is not None:
            return np.asarray(self.booster_.predict(X, num_threads=self.n_jobs), dtype=np.float64)
        if self._sk is not None:
            if self.task == "binary":
                return self._sk.predict_proba(X)[:, 1]
            return self._sk.predict(X)
        return self.forest_.predict(X)

    def state(self):
        meta = self._base_state() | {"params": self.params}
        if self.booster_ is not None:
            return meta, {"imputer_medians": self.imputer_.medians}, self.booster_.model_to_string()
        arrays = self.forest_.arrays() | {"imputer_medians": self.imputer_.medians}
        return meta, arrays, None

    @classmethod
    def from_state(cls, meta, arrays, text):
        model = cls(meta["task"], meta["seed"], **meta["params"])  # saved before issue 17: engine sklearn
        model.n_features_ = meta["n_features"]
        model.imputer_ = _Imputer(np.asarray(arrays["imputer_medians"], dtype=np.float32))
        if model.params["engine"] == "lightgbm":
            import lightgbm as lgb

            model.booster_ = lgb.Booster(model_str=text)  # LightGBM's own text format; nothing is evaluated
        else:
            model.forest_ = _ForestArrays.from_arrays(arrays)
        return model


class _ForestArrays:
    """A fitted forest as flat node arrays (all trees concatenated); predicts without scikit-learn objects."""

    def __init__(self, left, right, feature, threshold, value, roots):
        self.left, self.right, self.feature = left, right, feature
        self.threshold, self.value, self.roots = threshold, value, roots

    @classmethod
    def from_sklearn(cls, forest, task: str) -> "_ForestArrays":
        lefts, rights, feats, thrs, vals, roots = [], [], [], [], [], []
        offset = 0
        for est in forest.estimators_:
            t = est.tree_
            leaf = t.children_left == -1
            lefts.append(np.where(leaf, -1, t.children_left + offset))
            rights.append(np.where(leaf, -1, t.children_right + offset))
            feats.append(t.feature)
            thrs.append(t.threshold)
            if task == "binary":
                v = t.value[:, 0, :]
                v = v / v.sum(axis=1, keepdims=True)
                # Trees fitted on one class (possible in a bootstrap sample) have a single column.
                col = list(est.classes_).index(1) if 1 in est.classes_ else None
                vals.append(v[:, col] if col is not None else np.zeros(t.node_count))
            else:
                vals.append(t.value[:, 0, 0])
            roots.append(offset)
            offset += t.node_count
        return cls(*(np.concatenate(a) for a in (lefts, rights, feats, thrs, vals)), np.asarray(roots))

    @classmethod
    def from_arrays(cls, arrays) -> "_ForestArrays":
        return cls(
            np.asarray(arrays["left"], dtype=np.int64), np.asarray(arrays["right"], dtype=np.int64),
            np.asarray(arrays["feature"], dtype=np.int64), np.asarray(arrays["threshold"], dtype=np.float64),
            np.asarray(arrays["value"], dtype=np.float64), np.asarray(arrays["roots"], dtype=np.int64),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {"left": self.left, "right": self.right, "feature": self.feature, "threshold": self.threshold,
                "value": self.value, "roots": self.roots}

    def predict(self, X: np.ndarray) -> np.ndarray:
        total = np.zeros(X.shape[0])
        for root in self.roots:
            node = np.full(X.shape[0], root, dtype=np.int64)
            active = np.arange(X.shape[0])
            while active.size:
                n = node[active]
                # Same comparison as scikit-learn: float32 feature value <= float64 threshold.
                go_left = X[active, self.feature[n]] <= self.threshold[n]
                n = np.where(go_left, self.left[n], self.right[n])
                node[active] = n
                active = active[self.left[n] != -1]
            total += self.value[node]
        return total / len(self.roots)


#: Solvers of the logistic model: 'newton-cholesky' (a few Newton steps on the F x F Hessian: exact and cheap for
#: a few hundred to a thousand standardised columns) or 'lbfgs' (the solver before issue 17: hundreds of
#: gradient steps on embeddings, whose columns are strongly correlated).
LOGISTIC_SOLVERS = ("newton-cholesky", "lbfgs")


class LogisticModel(SDMEstimator):
    """Standardised features, L2-penalised logistic regression (ridge regression for abundance); NaN imputed by
    training medians. Parameters are plain arrays, so a saved model is a readable JSON file.

    ``solver``: one of :data:`LOGISTIC_SOLVERS`; ``tol``: its stopping tolerance (scikit-learn's meaning). BLAS
    runs on ``n_jobs`` threads (0: all). With ``warm_start``, :meth:`warm_start_from` starts the solver from
    another fitted model's coefficients (in cross-validation, an outer fit starts from its fold's last inner
    fit, fitted on a part of its training rows): the optimum is unique
    (strictly convex loss), so only the number of iterations changes, within ``tol``."""

    name = "logistic"

    def __init__(self, task="binary", seed=0, n_jobs=1, C=1.0, solver="newton-cholesky", tol=1e-4, warm_start=True):
        super().__init__(task, seed, n_jobs)
        if solver not in LOGISTIC_SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(LOGISTIC_SOLVERS)}, got {solver!r}")
        self.params = dict(C=C, solver=solver, tol=tol, warm_start=bool(warm_start))
        self.imputer_ = _Imputer()
        self.mean_ = self.scale_ = self.coef_ = None
        self.intercept_ = 0.0
        self.n_iter_: int | None = None  # solver iterations of the last fit (binary tasks)
        self._init: tuple[np.ndarray, float] | None = None

    def warm_start_from(self, other: "LogisticModel") -> "LogisticModel":
        """Start the next fit from ``other``'s coefficients (on its standardised scale; a fitted logistic model of
        the same task and columns). Ignored if it does not fit, or with ``warm_start=False``."""
        if self.params["warm_start"] and other.coef_ is not None and other.task == self.task:
            self._init = (other.coef_, other.intercept_)
        return self

    def _fit(self, X, target, sample_weight, valid=None):
        from sklearn.linear_model import LogisticRegression, Ridge

        Z = self.imputer_.fit(X).transform(X).astype(np.float64)  # a copy, standardised in place
        self.mean_ = Z.mean(axis=0)
        scale = Z.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        Z -= self.mean_
        Z /= self.scale_
        init = self._init if (self._init is not None and self._init[0].shape[0] == Z.shape[1]) else None
        if self.task == "binary":
            est = LogisticRegression(C=self.params["C"], solver=self.params["solver"], tol=self.params["tol"],
                                     max_iter=2000, random_state=self.seed, warm_start=init is not None)
            if init is not None:
                est.coef_, est.intercept_ = init[0].reshape(1, -1).copy(), np.array([init[1]])
        else:
            est = Ridge(alpha=1.0 / self.params["C"])
        with blas_threads(self.n_jobs):
            est.fit(Z, target, sample_weight=sample_weight)
        self.n_iter_ = int(np.max(est.n_iter_)) if self.task == "binary" else None
        self.coef_ = np.asarray(est.coef_, dtype=np.float64).ravel()
        self.intercept_ = float(np.ravel(est.intercept_)[0])

    def _predict(self, X):
        Z = self.imputer_.transform(X).astype(np.float64)
        Z -= self.mean_
        Z /= self.scale_
        with blas_threads(self.n_jobs):
            eta = Z @ self.coef_ + self.intercept_
        if self.task == "binary":
            return 1.0 / (1.0 + np.exp(-np.clip(eta, -500, 500)))
        return eta

    def state(self):
        meta = self._base_state() | {"params": self.params, "intercept": self.intercept_}
        arrays = {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_,
                  "imputer_medians": self.imputer_.medians}
        return meta, arrays, None

    @classmethod
    def from_state(cls, meta, arrays, text):
        # Models saved before issue 17 hold C only: the solver does not change what a fitted model predicts.
        model = cls(meta["task"], meta["seed"], **meta["params"])
        model.n_features_ = meta["n_features"]
        model.intercept_ = float(meta["intercept"])
        model.mean_ = np.asarray(arrays["mean"], dtype=np.float64)
        model.scale_ = np.asarray(arrays["scale"], dtype=np.float64)
        model.coef_ = np.asarray(arrays["coef"], dtype=np.float64)
        model.imputer_ = _Imputer(np.asarray(arrays["imputer_medians"], dtype=np.float32))
        return model


class Projection:
    """Principal-component projection of embedding columns, fitted on the rows given (features, never labels):
    x_E -> (x_E - mean) @ V_k^T for the embedding columns E; the other columns (scalar covariates, whose units
    would dominate the variance) pass unchanged after the components.

    Missing values take the training medians first. Embeddings of hundreds of dimensions carry their signal in a
    few directions; projecting on the leading ``k`` components makes every model several times faster (see
    docs/benchmarks.md, "SDM speed"). ``columns``: indices of the embedding columns (None: all).

    ``keep``: the components are *added* after every column as given instead of replacing the embedding
    columns (LightGBM's ``extra_pcs``): trees then split on the directions a weak signal spreads over many
    columns as well as on single columns."""

    def __init__(self, n_components: int, seed: int = 0, columns: np.ndarray | None = None, keep: bool = False):
        self.n_components = int(n_components)
        self.seed = int(seed)
        self.columns = None if columns is None else np.asarray(columns, dtype=np.int64)
        self.keep = bool(keep)
        self.imputer_ = _Imputer()
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None
        self.n_features_: int | None = None

    def _split(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Every column in order (the usual embedding-only feature set): no 30 MB copy per call.
        if self.columns is None or np.array_equal(self.columns, np.arange(X.shape[1])):
            return X, X[:, :0]
        rest = np.setdiff1d(np.arange(X.shape[1]), self.columns)
        return X[:, self.columns], X[:, rest]

    def fit(self, X: np.ndarray) -> "Projection":
        X = _check_X(X)
        self.n_features_ = X.shape[1]
        X, _ = self._split(X)
        X = self.imputer_.fit(X).transform(X)
        k = min(self.n_components, X.shape[0], X.shape[1])
        self.mean_ = X.mean(axis=0, dtype=np.float64)
        # float32 throughout: the leading directions agree with float64 to 1e-6 at 40 % less CPU, and a compare
        # fits one projection per species and feature set (docs/benchmarks.md, "SDM speed").
        centred = X - self.mean_.astype(np.float32)
        if k < min(X.shape) // 4:
            from sklearn.utils.extmath import randomized_svd

            _, _, vt = randomized_svd(centred, k, n_iter=4, random_state=self.seed)
        else:
            vt = np.linalg.svd(centred, full_matrices=False)[2][:k]
        self.components_ = vt.astype(np.float64)
        return self

    def components(self, X: np.ndarray) -> np.ndarray:
        """The principal-component scores of ``X``'s rows, float32 [n, k]."""
        emb, _ = self._split(_check_X(X, self.n_features_))
        emb = self.imputer_.transform(emb)
        # (x - mean) V^T as x V^T - mean V^T: no centred float64 copy of X (a tenth of the time).
        v = self.components_.astype(np.float32)
        return emb @ v.T - (self.mean_ @ self.components_.T).astype(np.float32)

    def transform(self, X: np.ndarray, components: np.ndarray | None = None) -> np.ndarray:
        """The model inputs: the components then the other columns, or (``keep``) every column then the
        components. ``components``: :meth:`components` of ``X``, when already computed."""
        X = _check_X(X, self.n_features_)
        comps = self.components(X) if components is None else components
        if self.keep:
            return np.hstack([X, comps])
        return np.hstack([comps, self._split(X)[1]])

    def arrays(self) -> dict[str, np.ndarray]:
        columns = np.arange(self.n_features_) if self.columns is None else self.columns
        return {"projection_mean": self.mean_, "projection_components": self.components_,
                "projection_medians": self.imputer_.medians, "projection_columns": columns,
                "projection_n_features": np.asarray(self.n_features_), "projection_keep": np.asarray(self.keep)}

    @classmethod
    def from_arrays(cls, arrays, seed: int = 0) -> "Projection":
        keep = bool(arrays["projection_keep"]) if "projection_keep" in arrays else False  # saved before: replaced
        proj = cls(np.asarray(arrays["projection_components"]).shape[0], seed,
                   np.asarray(arrays["projection_columns"], dtype=np.int64), keep)
        proj.n_features_ = int(arrays["projection_n_features"])
        proj.mean_ = np.asarray(arrays["projection_mean"], dtype=np.float64)
        proj.components_ = np.asarray(arrays["projection_components"], dtype=np.float64)
        proj.imputer_ = _Imputer(np.asarray(arrays["projection_medians"], dtype=np.float32))
        return proj


class ProjectedModel(SDMEstimator):
    """A model on the leading principal components of the features (:class:`Projection`), fitted on the same
    training data (``keep``: added to the features instead). Saved as the inner model plus the projection's
    arrays."""

    def __init__(self, inner: SDMEstimator, n_components: int, columns: np.ndarray | None = None,
                 keep: bool = False):
        super().__init__(inner.task, inner.seed, inner.n_jobs)
        self.inner = inner
        self.name = inner.name
        self.projection = Projection(n_components, inner.seed, columns, keep)

    def fit(self, X, y, sample_weight=None, valid=None) -> "ProjectedModel":
        X = _check_X(X)
        self.n_features_ = X.shape[1]
        self.projection.fit(X)
        if valid is not None:
            valid = (self.projection.transform(valid[0]), *valid[1:])
        self.inner.fit(self.projection.transform(X), y, sample_weight=sample_weight, valid=valid)
        return self

    @property
    def rounds(self) -> int | None:
        return self.inner.rounds

    def predict(self, X) -> np.ndarray:
        if self.n_features_ is None:
            raise RuntimeError("model is not fitted")
        return self.inner.predict(self.projection.transform(_check_X(X, self.n_features_)))

    def state(self):
        meta, arrays, text = self.inner.state()
        meta = meta | {"projection": self.projection.components_.shape[0], "n_input_features": self.n_features_}
        return meta, {**arrays, **self.projection.arrays()}, text


_REGISTRY = {"lightgbm": LightGBMModel, "rf": RandomForestModel, "logistic": LogisticModel}


def _model_class(name: str):
    if name == "maxent":  # its module imports this one; elapid itself is imported only when fitting or loading
        from botaclip.sdm.maxent import MaxentModel

        return MaxentModel
    return _REGISTRY[name]


def make_model(name: str, task: str = "binary", seed: int = 0, n_jobs: int | None = 1, pca: int | None = None,
               pca_columns: np.ndarray | None = None, pca_keep: bool = False, **params) -> SDMEstimator:
    """A fresh estimator by name: 'lightgbm' (default), 'rf', 'logistic' or 'maxent'; with ``pca``, on the leading ``pca``
    principal components of the embedding columns ``pca_columns`` (indices; None: all) and the other columns
    (``pca_keep``: on every column and those components)."""
    try:
        cls = _model_class(name)
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}") from None
    model = cls(task=task, seed=seed, n_jobs=n_jobs, **params)
    return ProjectedModel(model, pca, pca_columns, pca_keep) if pca else model


def model_from_state(meta: dict[str, Any], arrays: dict[str, np.ndarray], text: str | None) -> SDMEstimator:
    """Rebuild a fitted estimator from :meth:`SDMEstimator.state` output."""
    if meta.get("model") == "ensemble":
        from botaclip.sdm.ensemble import EnsembleModel

        return EnsembleModel.from_state(meta, arrays, text)
    try:
        cls = _model_class(meta["model"])
    except KeyError:
        raise ValueError(f"unknown model {meta.get('model')!r} in saved state") from None
    if not meta.get("projection"):
        return cls.from_state(meta, arrays, text)
    inner = cls.from_state(meta, arrays, text)
    model = ProjectedModel(inner, int(meta["projection"]))
    model.projection = Projection.from_arrays(arrays, inner.seed)
    model.n_features_ = int(meta["n_input_features"])
    return model
