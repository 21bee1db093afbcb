"""Spatial-block cross-validation of one model on one species' table.

For each outer fold: fit on the other folds, predict the held-out blocks, and score. Binary tasks: ROC AUC; TSS,
sensitivity, specificity and F1 at a threshold chosen by a rule (:mod:`botaclip.sdm.thresholds`) on the
*inner* spatial-block out-of-fold predictions of the training part (never on in-sample scores, which a flexible
model puts near 1), applied to the test fold; and the continuous Boyce index (test presences vs all test cells).
Abundance: Spearman rho and MAE. A fold whose training or test part holds one class only is reported as skipped,
never fatal.

Features are one matrix for every fold, or one matrix per outer fold (cross-fitted adapters: fold k's features
come from the adapter that never saw fold k, see :mod:`botaclip.sdm.crossfit`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from botaclip.config import build
from botaclip.sdm import metrics as M
from botaclip.sdm.binning import DEFAULT_MAX_BIN, BinnedFeatures, BinnedRows, BinnedView, with_columns
from botaclip.sdm.config import EvaluationConfig
from botaclip.sdm.folds import SpatialFolds, spatial_folds
from botaclip.sdm.models import Projection, make_model
from botaclip.sdm.thresholds import ThresholdRule, parse_threshold

#: The fewest outer folds whose other folds serve as inner folds: with 3, an inner model would see a third of the
#: samples (the training part dealt into 3 inner folds leaves it 4/9); with 4, half, as 3 dealt inner folds do.
MIN_FOLDS_FOR_OUTER_INNER = 4
#: Inner folds dealt from a training part's blocks when the outer folds are too few to serve (``inner_folds`` None).
NESTED_INNER_FOLDS = 3
BINARY_METRICS = ("auc", "tss", "sensitivity", "specificity", "f1", "boyce")
REGRESSION_METRICS = ("spearman", "mae")


def metric_names(task: str) -> tuple[str, ...]:
    return BINARY_METRICS if task == "binary" else REGRESSION_METRICS


@dataclass
class FoldResult:
    """Scores of one test fold (``skipped`` says why a fold was not scored)."""

    fold: int
    n_train: int
    n_test: int
    n_test_presences: int
    metrics: dict[str, float] = field(default_factory=dict)
    threshold: float | None = None
    skipped: str | None = None
    note: str | None = None
    rounds: int | None = None  # LightGBM: boosting rounds, chosen by early stopping in the inner CV


@dataclass
class CVResult:
    """Cross-validation of one model on one feature set: per-fold results and their mean/sd per metric."""

    model: str
    task: str
    folds: list[FoldResult]
    oof: np.ndarray  # out-of-fold prediction per sample (nan where its fold was skipped)
    threshold_rule: str | None = None  # binary tasks: the rule that chose each fold's threshold

    def values(self, metric: str) -> list[float]:
        """The metric on each scored fold, in fold order (nan where undefined)."""
        return [f.metrics.get(metric, float("nan")) for f in self.folds if f.skipped is None]

    def summary(self) -> dict[str, dict[str, float]]:
        """Per metric: mean and sample sd over the scored folds where it is defined, and their number."""
        out = {}
        for m in metric_names(self.task):
            v = np.asarray(self.values(m), dtype=np.float64)
            v = v[np.isfinite(v)]
            out[m] = {
                "mean": float(v.mean()) if v.size else float("nan"),
                "sd": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
                "n": int(v.size),
            }
        return out

    def to_dict(self) -> dict:
        return {"model": self.model, "task": self.task, "threshold_rule": self.threshold_rule,
                "folds": [asdict(f) for f in self.folds], "summary": self.summary()}


def training_weights(y: np.ndarray, is_background: np.ndarray) -> np.ndarray | None:
    """Weights that give background as much total weight as presences (presence-only data); None otherwise."""
    if not is_background.any():
        return None
    n_pres = float(np.sum(y > 0))
    n_bg = float(np.sum(is_background))
    w = np.ones(y.shape[0])
    w[is_background] = n_pres / n_bg if n_bg else 1.0
    return w


def model_params(model: str, evaluation: EvaluationConfig, presence_only: bool,
                 rounds: int | None = None) -> dict:
    """The hyperparameters of one fit: the evaluation's options for ``model`` and, for LightGBM, ``rounds``
    boosting rounds (when given). LightGBM subsamples the negatives of each tree only where they are background
    (presence-only data: a sample of the landscape); absences of presence-absence data are observations, each
    tree sees them all unless ``neg_subsample`` is set explicitly."""
    params = evaluation.model_options(model)
    if model == "lightgbm":
        if rounds:
            params["n_estimators"] = rounds
        if not presence_only:
            params.setdefault("neg_subsample", 1.0)
    return params


def extra_components(model: str, evaluation: EvaluationConfig, n_embedding: int) -> tuple[int | None, bool]:
    """(principal components of the embedding columns a model sees, whether they are added to the columns):
    ``pca`` replaces the ``n_embedding`` columns by that many components (any model); otherwise LightGBM adds
    ``extra_pcs`` components after every column. (None, False) when neither applies (no embedding columns,
    or as many components as columns)."""
    if evaluation.pca:
        return (evaluation.pca, False) if evaluation.pca < n_embedding else (None, False)
    k = evaluation.extra_pcs if model == "lightgbm" else None
    return (k, True) if (k and k < n_embedding) else (None, False)


def score_binary(y_test, s_test, threshold: float) -> dict[str, float]:
    """All binary metrics for one test fold, at a threshold chosen elsewhere (on training data)."""
    out = {"auc": M.roc_auc(y_test, s_test)}
    out |= M.threshold_metrics(y_test, s_test, threshold)
    out["boyce"] = M.boyce_index(s_test[y_test > 0], s_test)
    return {k: out[k] for k in BINARY_METRICS}


def score_regression(y_test, p_test) -> dict[str, float]:
    return {"spearman": M.spearman(y_test, p_test), "mae": M.mae(y_test, p_test)}


def cross_validate(
    X: np.ndarray | Sequence[np.ndarray],
    y: np.ndarray,
    folds: SpatialFolds,
    model: str = "lightgbm",
    task: str = "binary",
    is_background: np.ndarray | None = None,
    evaluation: EvaluationConfig | None = None,
    embedding_columns: np.ndarray | None = None,
    **options,
) -> CVResult:
    """Spatial-block cross-validation of ``model`` on (X, y) with the given folds.

    ``X``: float [n, F], or a sequence of ``folds.n_folds`` such matrices, the k-th used for every sample in outer
    fold k (cross-fitted features). ``is_background`` marks background cells of presence-only data: they are
    down-weighted in training (equal total weight to the presences, counted on each training part) and treated
    as the 'absences' of the evaluation. ``evaluation`` (or its fields as ``options``: ``threshold``,
    ``inner_folds``, ``seed``, ``jobs``): the threshold rule (default max TSS) is applied per outer fold to the
    inner out-of-fold predictions of its training part: each of the other outer folds (or ``inner_folds`` of
    them) predicted by a model fitted without it and the test fold, a fit that serves both outer folds it leaves
    out (with fewer than 4 outer folds, the training part's blocks dealt into inner folds); with ``pca``, models
    see the leading principal components of the ``embedding_columns`` (indices; None: every column), fitted once
    on every sample's features (no labels), and the other columns as they are; with ``extra_pcs`` (LightGBM),
    every column and that many such components added after them. ``on_fold`` (option): a callable, or a list of them, given a
    :class:`FoldContext` after each scored fold (permutation importance and ensembles use the fold models); if
    it has ``needs_inner = True`` the inner CV runs even for a fixed threshold, for its predictions. ``binned``
    (option): X (one matrix) already binned for LightGBM, a :class:`~botaclip.sdm.binning.BinnedView` or
    :class:`~botaclip.sdm.binning.BinnedFeatures` whose row i is X's row i; used when its ``max_bin`` is the
    model's.
    """
    hooks = options.pop("on_fold", None) or []
    binned = options.pop("binned", None)
    hooks = list(hooks) if isinstance(hooks, (list, tuple)) else [hooks]
    ev = build(EvaluationConfig, evaluation, **options)
    y = np.asarray(y, dtype=np.float64)
    per_fold = _fold_matrices(X, folds.n_folds)
    bg = np.zeros(y.shape[0], dtype=bool) if is_background is None else np.asarray(is_background, dtype=bool)
    fitter = _FoldFitter(model, task, ev, embedding_columns)
    fitter.presence_only = bool(bg.any())
    fitter.always_inner = any(getattr(h, "needs_inner", False) for h in hooks)
    if binned is not None:
        if per_fold[0] is not per_fold[-1] or tuple(binned.shape) != per_fold[0].shape:
            raise ValueError(f"binned features of shape {tuple(binned.shape)} given for X of shape "
                             f"{per_fold[0].shape}" + ("" if per_fold[0] is per_fold[-1] else " per fold"))
        fitter.given = (per_fold[0], binned)
    oof = np.full(y.shape[0], np.nan)
    results: list[FoldResult] = []
    for k in range(folds.n_folds):
        train, test = folds.split(k)
        res = FoldResult(k, int(train.size), int(test.size), int(np.sum(y[test] > 0)))
        res.skipped = _skip_reason(task, y[train], y[test])
        if res.skipped is None:
            projection, X_all = fitter.project(per_fold[k])
            fitter.use_bins(per_fold[k], projection)
            inner = None
            if task == "binary":
                inner = fitter.threshold_cv(X_all, y, bg, folds, k, shared=fitter.shares_pairs(per_fold))
                res.threshold, res.note = inner.threshold, inner.note
            res.rounds = None if inner is None else inner.rounds
            est, oof[test] = fitter.fit(X_all, y[train], bg[train], rounds=res.rounds, rows=(train, test))
            res.metrics = (score_binary(y[test], oof[test], res.threshold) if task == "binary"
                           else score_regression(y[test], oof[test]))
            context = FoldContext(k, train, test, per_fold[k][test], _raw_predictor(est, projection),
                                  None if inner is None else inner.oof, res.threshold)
            for hook in hooks:
                hook(context)
        results.append(res)
    return CVResult(model, task, results, oof, str(fitter.rule) if task == "binary" else None)


@dataclass
class FoldContext:
    """What a scored outer fold leaves for callers of :func:`cross_validate` (``on_fold``): the fold's sample
    indices, its test features as given (before any projection), the fold model as a function of such features,
    the inner out-of-fold predictions of its training part (binary tasks with an inner CV) and its threshold."""

    fold: int
    train: np.ndarray
    test: np.ndarray
    X_test: np.ndarray
    predict: Callable[[np.ndarray], np.ndarray]
    inner_oof: np.ndarray | None
    threshold: float | None


def _raw_predictor(estimator, projection) -> Callable[[np.ndarray], np.ndarray]:
    if projection is None:
        return estimator.predict
    return lambda X: estimator.predict(projection.transform(X))


class _FoldFitter:
    """Fits one kind of model on a training part and predicts held-out cells; chooses thresholds out of sample."""

    def __init__(self, model: str, task: str, evaluation: EvaluationConfig,
                 embedding_columns: np.ndarray | None = None):
        self.model, self.task, self.ev = model, task, evaluation
        self.rule: ThresholdRule = parse_threshold(evaluation.threshold)
        self.embedding_columns = embedding_columns
        self.always_inner = False  # run the inner CV even for a fixed threshold (ensembles need its predictions)
        self.presence_only = False  # the samples hold background cells
        self.binned: BinnedFeatures | BinnedView | None = None  # the current feature matrix binned (LightGBM)
        self._binned_of: np.ndarray | None = None
        self._base: BinnedFeatures | BinnedView | None = None  # _binned_of binned, before any added components
        self._previous = None  # the last inner fit of the current outer fold: its outer fit starts from it
        self.given: tuple[np.ndarray, BinnedFeatures | BinnedView] | None = None  # (X, X binned by the caller)
        self._projected: tuple | None = None  # (X, its projection or None, the model inputs of X's rows)
        self._binned_with: Projection | None = None  # the projection whose components self.binned holds
        self._pairs: dict[tuple[int, int], tuple[np.ndarray, object]] = {}  # shared inner fits, see outer_inner_cv
        self._held_out: dict[bytes, BinnedRows] = {}  # rows of self.binned that fits score, by their indices

    def use_bins(self, X: np.ndarray, projection: Projection | None) -> None:
        """Bin ``X`` (all samples of the current outer fold) once for every LightGBM fit on its rows, unless it
        is already binned (one matrix shared by the folds, or binned by the caller) or the fits see projected
        features instead. Principal components added to the columns (``extra_pcs``) are binned once per
        projection (see :meth:`project`) and joined to the columns' shared bins."""
        if self.model != "lightgbm" or not self.ev.bin_once or (projection is not None and not projection.keep):
            self.binned, self._binned_of, self._base, self._binned_with = None, None, None, None
            return
        if self._binned_of is not X:
            self.binned = None
            max_bin = int(self._options().get("max_bin", DEFAULT_MAX_BIN))
            if self.given is not None and self.given[0] is X and self.given[1].max_bin == max_bin:
                self._base = self.given[1]
            else:
                self._base = BinnedFeatures(X, max_bin=max_bin)
            self._binned_of = X
        if self._binned_with is not projection or self.binned is None:
            self.binned = (self._base if projection is None
                           else with_columns(self._base, self.project(X)[1].components()))
            self._binned_with = projection
            self._held_out = {}

    def _scored_rows(self, rows: np.ndarray) -> BinnedRows:
        """The rows ``rows`` of the binned matrix as a part that fits score while boosting, one object per set of
        rows: an outer fold's test blocks are scored by its outer fit and by the inner fits that leave them out,
        and their LightGBM Dataset is made once (:meth:`~botaclip.sdm.binning.BinnedRows.held_out`)."""
        key = np.asarray(rows, dtype=np.int64).tobytes()
        if key not in self._held_out:
            self._held_out[key] = self.binned.rows(rows)
        return self._held_out[key]

    def _options(self) -> dict:
        return self.ev.model_options(self.model)

    def _matrix(self, X: np.ndarray, rows: np.ndarray | None):
        """What the estimator is fitted on: the binned rows when the features are binned once, else X."""
        return X if (self.binned is None or rows is None) else self.binned.rows(rows)

    def _estimator(self, rounds: int | None, warm: bool = False):
        params = model_params(self.model, self.ev, self.presence_only, rounds)
        est = make_model(self.model, task=self.task, seed=self.ev.seed, n_jobs=self.ev.jobs, **params)
        # An outer fit (logistic) starts from the coefficients of its fold's last inner fit, whose rows lie inside
        # its training part. Inner fits start cold: any earlier model saw their held-out rows, and even a starting
        # point must not carry a held-out label (the stopping point depends on it, within the tolerance).
        if warm and self._previous is not None and hasattr(est, "warm_start_from"):
            est.warm_start_from(self._previous)
        self._previous = None
        return est

    def project(self, X: np.ndarray) -> tuple[Projection | None, np.ndarray]:
        """(projection, model inputs of every row of ``X``): the rows on the leading principal components of the
        embedding columns (or every column and those components, ``extra_pcs``), fitted once on all the rows of
        ``X``; (None, X) without ``pca`` or ``extra_pcs``.

        The projection is fitted on the features of every sample, test folds included, and never on labels: an
        unsupervised step may precede the split (Hastie, Tibshirani & Friedman 2009, *The Elements of Statistical
        Learning*, 7.10.2), and one projection for all folds lets an inner fit serve two outer folds."""
        if self._projected is not None and self._projected[0] is X:
            return self._projected[1], self._projected[2]
        n_embedding = X.shape[1] if self.embedding_columns is None else len(self.embedding_columns)
        k, keep = extra_components(self.model, self.ev, n_embedding)
        projection = Projection(k, self.ev.seed, self.embedding_columns, keep).fit(X) if k else None
        self._projected = (X, projection, X if projection is None else _ProjectedInputs(X, projection))
        return self._projected[1], self._projected[2]

    def fit(self, X: np.ndarray, y_train: np.ndarray, bg_train: np.ndarray, *, rounds: int | None = None,
            rows: tuple[np.ndarray, np.ndarray]) -> tuple:
        """(estimator fitted on the training part, its predictions for the test part); ``rounds`` boosting rounds
        for LightGBM. ``X``: the model inputs of every sample; ``rows``: (training rows, test rows) in X and in the
        fold's binned matrix (see :meth:`use_bins`). The parts of X are copied only where a fit reads them: a fit
        on binned rows that scores its test rows while boosting reads neither."""
        train, test = rows
        weights = training_weights(y_train, bg_train) if self.task == "binary" else None
        est = self._estimator(rounds, warm=True)
        if self._scores_binned(train):
            return est, est.fit_scoring(self.binned.rows(train), y_train, weights, scored=self._scored_rows(test))
        est.fit(X[train] if self.binned is None else self.binned.rows(train), y_train, sample_weight=weights)
        return est, est.predict(X[test])

    def _scores_binned(self, rows: np.ndarray | None) -> bool:
        """Whether a fit on the binned ``rows`` predicts its held-out rows from LightGBM's running scores
        (:meth:`~botaclip.sdm.models.LightGBMModel.fit_scoring`): binary LightGBM fits that do not stop early."""
        return (self.model == "lightgbm" and self.task == "binary" and not self.stops_early
                and self.binned is not None and rows is not None)

    @property
    def stops_early(self) -> bool:
        return self.model == "lightgbm" and bool(self.ev.early_stopping)

    def fit_predict(self, X: np.ndarray, y: np.ndarray, bg: np.ndarray,
                    split: tuple[np.ndarray, np.ndarray | tuple[np.ndarray, ...]],
                    rows: np.ndarray | None = None) -> tuple[np.ndarray, int | None]:
        """(predictions for the rows ``split[1]`` of X, boosting rounds used) of a model fitted on the rows
        ``split[0]``; a boosting model stops early on the held-out loss of the predicted rows. ``split[1]`` may be
        a tuple of parts (each fold's rows), predicted one after the other. ``rows``: X's rows in the binned
        matrix."""
        tr, parts = split[0], (split[1] if isinstance(split[1], tuple) else (split[1],))
        te = np.concatenate(parts)
        # Weights from the training part alone: the test part's counts must not shape the model.
        weights = training_weights(y[tr], bg[tr]) if self.task == "binary" else None
        est = self._estimator(None)
        if self._scores_binned(rows):
            return est.fit_scoring(self.binned.rows(rows[tr]), y[tr], weights,
                                   scored=[self._scored_rows(rows[p]) for p in parts]), None
        valid = None
        if self.stops_early:
            valid = (self._matrix(X[te], None if rows is None else rows[te]), y[te],
                     training_weights(y[te], bg[te]) if self.task == "binary" else None)
        est.fit(self._matrix(X[tr], None if rows is None else rows[tr]), y[tr], sample_weight=weights, valid=valid)
        self._previous = est if hasattr(est, "warm_start_from") else None
        return est.predict(X[te]), est.rounds

    def inner_cv(self, X: np.ndarray, y: np.ndarray, bg: np.ndarray, blocks: tuple[np.ndarray, int],
                 rows: np.ndarray | None = None) -> "_InnerCV":
        """Inner spatial-block CV of a training part: the threshold the rule picks on its out-of-fold predictions
        and, for LightGBM, the number of rounds (mean over inner folds of the early-stopping round, x 1.1 for the
        larger outer training part).

        The inner folds deal the training part's blocks into ``inner_folds`` folds (fewer if there are fewer
        blocks); each inner model predicts only blocks it was not fitted on.
        ``blocks``: (each sample's block, their H3 resolution); ``rows``: X's rows in the binned matrix."""
        blocks, block_res = blocks
        n_inner = min(self.ev.inner_folds or NESTED_INNER_FOLDS, int(np.unique(blocks).size))
        if n_inner < 2:
            return _InnerCV(float("nan"), "threshold undefined: the training part is one spatial block, too few "
                                          "for inner CV")
        inner = spatial_folds(blocks, y, n_inner, block_res, self.ev.seed)
        oof = np.full(y.shape[0], np.nan)
        rounds = []
        for j in range(inner.n_folds):
            tr, te = inner.split(j)
            if te.size and np.unique(y[tr]).size == 2:
                oof[te], r = self.fit_predict(X, y, bg, (tr, te), rows)
                rounds += [r] if (r and np.unique(y[te]).size == 2) else []
        return self._inner_result(y, oof, rounds)

    def threshold_cv(self, X: np.ndarray, y: np.ndarray, bg: np.ndarray, folds: SpatialFolds, k: int, *,
                     shared: bool) -> "_InnerCV":
        """The inner CV that chooses outer fold ``k``'s threshold: on other outer folds (:meth:`outer_inner_cv`)
        with at least :data:`MIN_FOLDS_FOR_OUTER_INNER` outer folds, else on its training part's blocks dealt
        anew (:meth:`inner_cv`). A fixed threshold needs none. ``X``: the model inputs of every sample."""
        if self.rule.fixed and not self.always_inner:
            return _InnerCV(float(self.rule.value))
        if folds.n_folds >= MIN_FOLDS_FOR_OUTER_INNER:
            return self.outer_inner_cv(X, y, bg, folds, k, shared=shared)
        train = folds.split(k)[0]
        return self.inner_cv(X[train], y[train], bg[train], (folds.block[train], folds.block_res), rows=train)

    def inner_folds_of(self, k: int, n_folds: int) -> list[int]:
        """The outer folds that serve as outer fold ``k``'s inner folds: all the others (``inner_folds`` None), or
        the ``inner_folds`` nearest on a ring (k+1, k-1, k+2, ...), so that with an even number each inner fit
        serves both outer folds it leaves out."""
        m = n_folds - 1 if self.ev.inner_folds is None else min(self.ev.inner_folds, n_folds - 1)
        ring = dict.fromkeys((k + d) % n_folds for i in range(1, n_folds) for d in (i, -i))
        ring.pop(k, None)
        return sorted(list(ring)[:m])

    def shares_pairs(self, per_fold: list[np.ndarray]) -> bool:
        """Whether an inner fit can serve both outer folds it leaves out: one feature matrix for every fold (one
        projection, one set of bins) and no early stopping (which would watch the fold it predicts)."""
        return not self.stops_early and all(m is per_fold[0] for m in per_fold)

    def outer_inner_cv(self, X: np.ndarray, y: np.ndarray, bg: np.ndarray, folds: SpatialFolds, k: int, *,
                       shared: bool) -> "_InnerCV":
        """Inner CV of outer fold ``k`` on the other outer folds: for each fold j != k, a model fitted without
        folds j and k predicts fold j. ``X``: the model inputs of every sample (row i is sample i). As
        :meth:`inner_cv` otherwise.

        ``shared``: the model fitted without folds j and k is the same fit for outer fold k and outer fold j
        (same rows, weights, projection, bins and seed), so it predicts both folds once and serves both: K outer
        folds cost K(K-1)/2 inner fits instead of K(K-1), with results identical to fitting each apart."""
        rows = None if self.binned is None else np.arange(y.shape[0])
        oof = np.full(y.shape[0], np.nan)
        rounds = []
        for j in self.inner_folds_of(k, folds.n_folds):
            tr = np.flatnonzero((folds.fold != j) & (folds.fold != k))
            te = np.flatnonzero(folds.fold == j)
            if not te.size or np.unique(y[tr]).size < 2:
                continue
            pair = (min(j, k), max(j, k))
            if pair not in self._pairs:
                scored = tuple(np.flatnonzero(folds.fold == f) for f in pair) if shared else te
                pred, r = self.fit_predict(X, y, bg, (tr, scored), rows)
                rounds += [r] if (r and np.unique(y[te]).size == 2) else []
                if not shared:
                    oof[te] = pred
                    continue
                full = np.full(y.shape[0], np.nan)
                full[np.concatenate(scored)] = pred
                self._pairs[pair] = (full, self._previous)
            oof[te] = self._pairs[pair][0][te]
            self._previous = self._pairs[pair][1]
        return self._inner_result(y[folds.fold != k], oof[folds.fold != k], rounds)

    def _inner_result(self, y: np.ndarray, oof: np.ndarray, rounds: list[int]) -> "_InnerCV":
        """The threshold the rule picks on a training part's inner out-of-fold predictions ``oof`` (nan: not
        predicted) and, with early stopping, the outer fit's rounds."""
        scored = np.isfinite(oof)
        t = self.rule.choose(y[scored], oof[scored]) if scored.any() else float("nan")
        n_rounds = int(np.ceil(1.1 * np.mean(rounds))) if (rounds and self.stops_early) else None
        if not np.isfinite(t):
            return _InnerCV(t, f"threshold undefined: inner out-of-fold predictions hold one class only ({self.rule} "
                               "rule)", n_rounds, oof)
        return _InnerCV(t, None, n_rounds, oof)


class _ProjectedInputs:
    """The model inputs of every row of ``X`` through ``projection``, indexed like a matrix: made on the first
    read, since LightGBM fits that score their binned rows read none (the 32 MB copy per species and feature set
    of a comparison); the components are computed once, for these inputs and for the bins."""

    def __init__(self, X: np.ndarray, projection: Projection):
        self.X, self.projection = X, projection
        self._components: np.ndarray | None = None
        self._inputs: np.ndarray | None = None

    def components(self) -> np.ndarray:
        if self._components is None:
            self._components = self.projection.components(self.X)
        return self._components

    def __getitem__(self, index) -> np.ndarray:
        if self._inputs is None:
            self._inputs = self.projection.transform(self.X, components=self.components())
        return self._inputs[index]


@dataclass
class _InnerCV:
    threshold: float
    note: str | None = None
    rounds: int | None = None
    oof: np.ndarray | None = None  # the inner out-of-fold predictions of the training part (nan: not predicted)


def _fold_matrices(X, n_folds: int) -> list[np.ndarray]:
    """One float32 matrix per outer fold (the same object for all folds when X is one matrix)."""
    if isinstance(X, np.ndarray) or not isinstance(X, (list, tuple)):
        shared = np.asarray(X, dtype=np.float32)
        return [shared] * n_folds
    if len(X) != n_folds:
        raise ValueError(f"got feature matrices for {len(X)} folds, the folds have {n_folds}")
    mats = [np.asarray(x, dtype=np.float32) for x in X]
    if len({m.shape for m in mats}) != 1:
        raise ValueError("per-fold feature matrices differ in shape")
    return mats


def _skip_reason(task: str, y_train: np.ndarray, y_test: np.ndarray) -> str | None:
    if y_test.size == 0:
        return "empty test fold"
    if task == "binary":
        if np.unique(y_train).size < 2:
            return "training folds hold one class only"
        if np.unique(y_test).size < 2:
            return "test fold holds " + ("presences only" if y_test[0] > 0 else "no presence")
    elif np.ptp(y_train) == 0:
        return "training folds hold one abundance value only"
    return None
