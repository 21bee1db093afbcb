"""Evaluation metrics for species distribution models.

Every function takes plain arrays and returns a float (``nan`` where the metric is undefined, e.g. a test fold
with one class), so a cross-validation loop can record "undefined" without special cases. The formulas are in
docs/sdm.md.

Conventions: ``y`` is 1 for a presence and 0 for an absence (or background cell); ``score`` is the predicted
suitability, larger meaning more suitable; a cell is predicted present when ``score >= threshold``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "roc_auc",
    "best_tss_threshold",
    "sens_spec_threshold",
    "p10_threshold",
    "confusion_at",
    "threshold_metrics",
    "tss",
    "BoyceCurve",
    "boyce_curve",
    "boyce_index",
    "spearman",
    "mae",
]


def _binary(y, score) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.float64).ravel()
    score = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != score.shape:
        raise ValueError(f"y and score differ in length: {y.shape[0]} vs {score.shape[0]}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y must hold only 0 (absence) and 1 (presence)")
    return y.astype(bool), score


def roc_auc(y, score) -> float:
    """Area under the ROC curve: P(score of a random presence > score of a random absence), ties counting 1/2.

    Computed from the Mann-Whitney U statistic with average ranks, so it equals scikit-learn's
    ``roc_auc_score`` including ties. Returns ``nan`` when ``y`` holds one class only.
    """
    y, score = _binary(y, score)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(score)  # average ranks for ties
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def best_tss_threshold(y, score) -> float:
    """The threshold that maximises TSS = sensitivity + specificity - 1 on (y, score).

    Candidates are the distinct scores (a cell is present when ``score >= t``). Among equally good thresholds the
    median one is returned, so the choice does not lean towards either end.
    Returns ``nan`` when ``y`` holds one class only. Choose it on out-of-sample predictions (see
    :mod:`botaclip.sdm.thresholds`) and apply it to test data.
    """
    y, score = _binary(y, score)
    if y.all() or not y.any():
        return float("nan")
    thresholds, sens, spec = _threshold_curve(y, score)
    return _median_of_best(thresholds, sens + spec - 1.0)


def _threshold_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(candidate thresholds, sensitivity, specificity) at every distinct score, highest first."""
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    order = np.argsort(-score, kind="mergesort")
    s_sorted = score[order]
    y_sorted = y[order]
    # Cumulative counts when predicting present everything down to position i, evaluated at the end of each tie run.
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    last_of_run = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    return s_sorted[last_of_run], tp[last_of_run] / n_pos, 1.0 - fp[last_of_run] / n_neg


def _median_of_best(thresholds: np.ndarray, objective: np.ndarray) -> float:
    best = np.flatnonzero(np.isclose(objective, objective.max(), rtol=0, atol=1e-12))
    # Optimal candidates may not be contiguous; take the median one (a stable, class-neutral choice).
    return float(thresholds[best[len(best) // 2]])


def sens_spec_threshold(y, score) -> float:
    """The threshold at which sensitivity equals specificity (the smallest |sensitivity - specificity| over the
    distinct scores; the median of equally good candidates). ``nan`` when ``y`` holds one class only."""
    y, score = _binary(y, score)
    if y.all() or not y.any():
        return float("nan")
    thresholds, sens, spec = _threshold_curve(y, score)
    return _median_of_best(thresholds, -np.abs(sens - spec))


def p10_threshold(presence_scores) -> float:
    """The 10th-percentile training presence threshold: the score that 90 % of the presences reach.

    With n presence scores sorted from highest to lowest, it is the k-th of them with k = ceil(0.9 n) (floor
    for n < 10, at least 1), as ENMeval's ``or.10p`` computes it: at most 10 % of the presences fall below it.
    ``nan`` without presences.
    """
    s = np.sort(np.asarray(presence_scores, dtype=np.float64).ravel())[::-1]
    s = s[np.isfinite(s)]
    n = s.size
    if n == 0:
        return float("nan")
    k = math.ceil(0.9 * n) if n >= 10 else max(1, math.floor(0.9 * n))
    return float(s[k - 1])


def confusion_at(y, score, threshold: float) -> tuple[int, int, int, int]:
    """(TP, FP, TN, FN) when a cell is predicted present iff ``score >= threshold``."""
    y, score = _binary(y, score)
    pred = score >= threshold
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    tn = int(np.sum(~pred & ~y))
    fn = int(np.sum(~pred & y))
    return tp, fp, tn, fn


def threshold_metrics(y, score, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity, TSS and F1 at ``threshold`` (``nan`` where a denominator is zero).

    sensitivity = TP/(TP+FN), specificity = TN/(TN+FP), TSS = sensitivity + specificity - 1,
    F1 = 2TP/(2TP+FP+FN).
    """
    if threshold is None or not np.isfinite(threshold):
        return {"sensitivity": float("nan"), "specificity": float("nan"), "tss": float("nan"), "f1": float("nan")}
    tp, fp, tn, fn = confusion_at(y, score, threshold)
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else float("nan")
    return {"sensitivity": float(sens), "specificity": float(spec), "tss": float(sens + spec - 1.0), "f1": float(f1)}


def tss(y, score, threshold: float | None = None) -> float:
    """True skill statistic = sensitivity + specificity - 1 at ``threshold``.

    Without a threshold the one maximising TSS on these same data is used (optimistic; in cross-validation pass
    a threshold chosen on out-of-sample predictions of the training part, as
    :func:`botaclip.sdm.evaluate.cross_validate` does).
    """
    if threshold is None:
        threshold = best_tss_threshold(y, score)
    return threshold_metrics(y, score, threshold)["tss"]


@dataclass(frozen=True)
class BoyceCurve:
    """The predicted/expected curve behind the continuous Boyce index.

    ``starts``/``ends``: window bounds (closed intervals, in suitability units); ``predicted``: fraction of the
    presences in each window; ``expected``: fraction of all evaluation cells in it; ``ratio`` = predicted/expected
    (``nan`` where ``expected`` is 0); ``kept``: windows used for the correlation (those with evaluation cells).
    """

    starts: np.ndarray
    ends: np.ndarray
    predicted: np.ndarray
    expected: np.ndarray
    ratio: np.ndarray
    kept: np.ndarray

    @property
    def centres(self) -> np.ndarray:
        return (self.starts + self.ends) / 2.0


def boyce_curve(
    presence_scores, evaluation_scores, n_windows: int = 100, window_fraction: float = 0.1
) -> BoyceCurve:
    """Moving-window predicted/expected ratios of the continuous Boyce index (Hirzel et al. 2006).

    The suitability range [lo, hi] spans all predictions (presences and evaluation cells). ``n_windows`` closed
    windows of width ``window_fraction * (hi - lo)`` start at evenly spaced positions from ``lo`` to
    ``hi - width``, so the first window starts at the lowest and the last one ends at the highest prediction: the
    highest-suitability window is always evaluated (ecospat's ``ecospat.boyce`` shifts its last window out of
    range and so drops it).
    """
    pres = np.asarray(presence_scores, dtype=np.float64).ravel()
    evals = np.asarray(evaluation_scores, dtype=np.float64).ravel()
    pres = pres[np.isfinite(pres)]
    evals = evals[np.isfinite(evals)]
    if n_windows < 2:
        raise ValueError("n_windows must be at least 2")
    if not 0 < window_fraction <= 1:
        raise ValueError("window_fraction must be in (0, 1]")
    if pres.size == 0 or evals.size == 0:
        empty = np.zeros(0)
        return BoyceCurve(empty, empty, empty, empty, empty, np.zeros(0, dtype=bool))
    lo = float(min(pres.min(), evals.min()))
    hi = float(max(pres.max(), evals.max()))
    width = window_fraction * (hi - lo)
    starts = np.linspace(lo, hi - width, n_windows)
    ends = starts + width
    if hi > lo:
        # Snap the last window's end to the exact maximum so float rounding never leaves the top cell out.
        ends[-1] = hi
    # Counts in closed windows [a, b] via sorted arrays: #(x <= b) - #(x < a).
    pres_sorted = np.sort(pres)
    eval_sorted = np.sort(evals)
    n_pres = np.searchsorted(pres_sorted, ends, side="right") - np.searchsorted(pres_sorted, starts, side="left")
    n_eval = np.searchsorted(eval_sorted, ends, side="right") - np.searchsorted(eval_sorted, starts, side="left")
    predicted = n_pres / pres.size
    expected = n_eval / evals.size
    kept = n_eval > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(kept, predicted / np.where(kept, expected, 1.0), np.nan)
    return BoyceCurve(starts, ends, predicted, expected, ratio, kept)


def boyce_index(
    presence_scores, evaluation_scores, n_windows: int = 100, window_fraction: float = 0.1
) -> float:
    """Continuous Boyce index: Spearman correlation between window position and predicted/expected ratio.

    ``presence_scores``: predictions at the evaluation presences; ``evaluation_scores``: predictions at all
    evaluation cells (the test cells, presences included, or the study area). Windows without evaluation cells are
    dropped; every other window is kept, including the highest-suitability ones and windows with equal
    neighbouring ratios (no ``rm.duplicate``). Ranges from -1 (presences concentrated where the model predicts
    low suitability) to 1 (perfect); ``nan`` when fewer than two windows remain or the ratios are constant.
    """
    curve = boyce_curve(presence_scores, evaluation_scores, n_windows, window_fraction)
    ratio = curve.ratio[curve.kept]
    centres = curve.centres[curve.kept]
    if ratio.size < 2 or np.ptp(ratio) == 0 or np.ptp(centres) == 0:
        return float("nan")
    return float(stats.spearmanr(centres, ratio)[0])


def spearman(y, prediction) -> float:
    """Spearman rank correlation between observed and predicted values (``nan`` if either is constant)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    prediction = np.asarray(prediction, dtype=np.float64).ravel()
    if y.size < 2 or np.ptp(y) == 0 or np.ptp(prediction) == 0:
        return float("nan")
    return float(stats.spearmanr(y, prediction)[0])


def mae(y, prediction) -> float:
    """Mean absolute error, in the units of the observed values (e.g. individuals per sample)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    prediction = np.asarray(prediction, dtype=np.float64).ravel()
    if y.size == 0:
        return float("nan")
    return float(np.mean(np.abs(y - prediction)))
