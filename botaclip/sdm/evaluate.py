"""Spatial-block cross-validation of one model on one species' table.

For each fold: fit on the other folds, predict the held-out blocks, and score. Binary tasks: ROC AUC; TSS,
sensitivity, specificity and F1 at the threshold that maximises TSS on the *training* folds (predicted in-sample),
applied to the test fold; and the continuous Boyce index (test presences vs all test cells). Abundance: Spearman
rho and MAE. A fold whose training or test part holds one class only is reported as skipped, never fatal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from botaclip.sdm import metrics as M
from botaclip.sdm.folds import SpatialFolds
from botaclip.sdm.models import make_model

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


@dataclass
class CVResult:
    """Cross-validation of one model on one feature set: per-fold results and their mean/sd per metric."""

    model: str
    task: str
    folds: list[FoldResult]
    oof: np.ndarray  # out-of-fold prediction per sample (nan where its fold was skipped)

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
        return {"model": self.model, "task": self.task, "folds": [asdict(f) for f in self.folds],
                "summary": self.summary()}


def training_weights(y: np.ndarray, is_background: np.ndarray) -> np.ndarray | None:
    """Weights that give background as much total weight as presences (presence-only data); None otherwise."""
    if not is_background.any():
        return None
    n_pres = float(np.sum(y > 0))
    n_bg = float(np.sum(is_background))
    w = np.ones(y.shape[0])
    w[is_background] = n_pres / n_bg if n_bg else 1.0
    return w


def score_binary(y_test, s_test, threshold: float) -> dict[str, float]:
    """All binary metrics for one test fold, at a threshold chosen elsewhere (on training data)."""
    out = {"auc": M.roc_auc(y_test, s_test)}
    out |= M.threshold_metrics(y_test, s_test, threshold)
    out["boyce"] = M.boyce_index(s_test[y_test > 0], s_test)
    return {k: out[k] for k in BINARY_METRICS}


def score_regression(y_test, p_test) -> dict[str, float]:
    return {"spearman": M.spearman(y_test, p_test), "mae": M.mae(y_test, p_test)}


def cross_validate(
    X: np.ndarray,
    y: np.ndarray,
    folds: SpatialFolds,
    model: str = "lightgbm",
    task: str = "binary",
    is_background: np.ndarray | None = None,
    seed: int = 0,
    n_jobs: int = 1,
) -> CVResult:
    """Spatial-block cross-validation of ``model`` on (X, y) with the given folds.

    ``is_background`` marks background cells of presence-only data: they are down-weighted in training (equal
    total weight to the presences) and treated as the 'absences' of the evaluation.
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.float64)
    bg = np.zeros(y.shape[0], dtype=bool) if is_background is None else np.asarray(is_background, dtype=bool)
    weights = training_weights(y, bg) if task == "binary" else None
    oof = np.full(y.shape[0], np.nan)
    results: list[FoldResult] = []
    for k in range(folds.n_folds):
        train, test = folds.split(k)
        y_train, y_test = y[train], y[test]
        res = FoldResult(k, int(train.size), int(test.size), int(np.sum(y_test > 0)))
        reason = _skip_reason(task, y_train, y_test)
        if reason:
            res.skipped = reason
            results.append(res)
            continue
        est = make_model(model, task=task, seed=seed, n_jobs=n_jobs)
        est.fit(X[train], y_train, sample_weight=None if weights is None else weights[train])
        pred = est.predict(X[test])
        oof[test] = pred
        if task == "binary":
            res.threshold = M.best_tss_threshold(y_train, est.predict(X[train]))
            res.metrics = score_binary(y_test, pred, res.threshold)
        else:
            res.metrics = score_regression(y_test, pred)
        results.append(res)
    return CVResult(model, task, results, oof)


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
