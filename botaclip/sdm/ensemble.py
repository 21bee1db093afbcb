"""Ensembles of SDMs: the (weighted) mean of the members' rank-normalised suitabilities.

Members predict on different scales (a random forest's vote share, Maxent's cloglog, a logistic probability), so
each member's prediction is first mapped to its rank among that member's *out-of-fold* predictions of training
cells — an empirical CDF in [0, 1], stored as RANK_LEVELS quantiles and interpolated, so new cells are ranked
one at a time while streaming. The ensemble is Σ w_m r_m(x) / Σ w_m.

Rules: ``mean`` (w_m = 1) and ``weighted`` (w_m = max(AUC_m - 0.5, 0): a member no better than random gets no
weight; equal weights if none is better). Everything comes from training data only:

- in outer fold k, each member's ranks and AUC come from its inner spatial-block out-of-fold predictions of the
  fold's training part (the same inner CV that chooses thresholds); the threshold rule is applied to the
  ensemble of those inner predictions; the ensemble of the members' outer models is then scored on the test
  fold like any model;
- the saved ensemble (``sdm fit --ensemble``) ranks and weighs each member by its outer out-of-fold predictions
  and takes its threshold from the ensemble's out-of-fold predictions, as single models do.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from botaclip.sdm import metrics as M
from botaclip.sdm.evaluate import CVResult, FoldResult, score_binary
from botaclip.sdm.models import SDMEstimator, model_from_state
from botaclip.sdm.thresholds import parse_threshold

RANK_LEVELS = 1001


class RankScale:
    """Empirical CDF of a reference sample of predictions, as quantiles: x -> share of the reference below x
    (ties counted half, values outside the reference clipped to 0 or 1)."""

    def __init__(self, quantiles: np.ndarray, levels: np.ndarray):
        self.quantiles = np.asarray(quantiles, dtype=np.float64)
        self.levels = np.asarray(levels, dtype=np.float64)

    @classmethod
    def fit(cls, reference: np.ndarray, n_levels: int = RANK_LEVELS) -> "RankScale":
        ref = np.asarray(reference, dtype=np.float64)
        ref = np.sort(ref[np.isfinite(ref)])
        if not ref.size:
            raise ValueError("no finite reference prediction to rank against")
        q = np.quantile(ref, np.linspace(0.0, 1.0, n_levels))
        uniq = np.unique(q)
        # mid-rank of each distinct quantile value, so a constant member maps to 0.5 rather than to 0 or 1
        lo = np.searchsorted(ref, uniq, side="left")
        hi = np.searchsorted(ref, uniq, side="right")
        return cls(uniq, (lo + hi) / (2.0 * ref.size))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.quantiles.size == 1:
            return np.where(x > self.quantiles[0], 1.0, np.where(x < self.quantiles[0], 0.0, 0.5))
        return np.interp(x, self.quantiles, self.levels, left=0.0, right=1.0)


def member_weights(rule: str, y: np.ndarray, predictions: Sequence[np.ndarray]) -> np.ndarray:
    """Weights of the members from their out-of-fold predictions on training cells (nan: not predicted)."""
    if rule == "mean":
        return np.ones(len(predictions))
    w = []
    for p in predictions:
        ok = np.isfinite(p)
        auc = M.roc_auc(y[ok], p[ok]) if ok.any() else float("nan")
        w.append(max(auc - 0.5, 0.0) if np.isfinite(auc) else 0.0)
    w = np.asarray(w)
    return w if w.sum() > 0 else np.ones(len(predictions))


def combine(scales: Sequence[RankScale], weights: np.ndarray, predictions: Sequence[np.ndarray]) -> np.ndarray:
    """Σ w_m r_m(p_m) / Σ w_m."""
    total = np.zeros(np.asarray(predictions[0]).shape[0])
    for scale, w, p in zip(scales, weights, predictions):
        total += w * scale(p)
    return total / float(np.sum(weights))


class MemberRecorder:
    """An ``on_fold`` callable for :func:`cross_validate` keeping each fold's inner out-of-fold predictions."""

    needs_inner = True

    def __init__(self):
        self.inner: dict[int, np.ndarray] = {}

    def __call__(self, ctx) -> None:
        if ctx.inner_oof is not None:
            self.inner[ctx.fold] = ctx.inner_oof


def ensemble_cv(rule: str, members: dict[str, tuple[CVResult, MemberRecorder]], y: np.ndarray, folds,
                threshold_rule: str | float) -> CVResult:
    """Score the ensemble of ``members`` (name -> (its CV, its recorder)) on the members' folds."""
    threshold = parse_threshold(threshold_rule)
    oof = np.full(y.shape[0], np.nan)
    results = []
    for k in range(folds.n_folds):
        train, test = folds.split(k)
        ref = next(iter(members.values()))[0].folds[k]
        res = FoldResult(k, ref.n_train, ref.n_test, ref.n_test_presences, skipped=ref.skipped)
        inner = [rec.inner.get(k) for _, rec in members.values()]
        if res.skipped is None and any(i is None or not np.isfinite(i).any() for i in inner):
            res.skipped = "a member has no inner out-of-fold predictions in this fold"
        if res.skipped is None:
            scales = [RankScale.fit(i) for i in inner]
            weights = member_weights(rule, y[train], inner)
            both = np.all([np.isfinite(i) for i in inner], axis=0)
            ens_inner = combine(scales, weights, [np.where(both, i, 0.0) for i in inner])
            res.threshold = threshold.choose(y[train][both], ens_inner[both])
            oof[test] = combine(scales, weights, [cv.oof[test] for cv, _ in members.values()])
            res.metrics = score_binary(y[test], oof[test], res.threshold)
            if rule == "weighted":
                res.note = "weights " + ", ".join(f"{m} {w / weights.sum():.2f}" for m, w in zip(members, weights))
        results.append(res)
    return CVResult(f"ensemble-{rule}", "binary", results, oof, str(threshold))


class EnsembleModel(SDMEstimator):
    """Fitted members, each with its rank scale (from its out-of-fold predictions) and weight."""

    name = "ensemble"

    def __init__(self, members: Sequence[SDMEstimator], scales: Sequence[RankScale], weights: np.ndarray,
                 rule: str, seed: int = 0):
        super().__init__("binary", seed, members[0].n_jobs if members else 1)
        self.members, self.scales = list(members), list(scales)
        self.weights, self.rule = np.asarray(weights, dtype=np.float64), rule
        self.n_features_ = members[0].n_features_ if members else None

    @property
    def member_names(self) -> list[str]:
        return [m.name for m in self.members]

    @property
    def projection(self):
        """The members' principal-component projection (all are fitted on the same data), or None."""
        return getattr(self.members[0], "projection", None) if self.members else None

    def predict(self, X) -> np.ndarray:
        if self.n_features_ is None:
            raise RuntimeError("model is not fitted")
        return combine(self.scales, self.weights, [m.predict(X) for m in self.members])

    def state(self):
        metas, arrays, text = [], {}, None
        for i, (member, scale) in enumerate(zip(self.members, self.scales)):
            meta, arr, txt = member.state()
            metas.append(meta)
            arrays |= {f"m{i}.{k}": v for k, v in arr.items()}
            arrays[f"m{i}.rank_quantiles"], arrays[f"m{i}.rank_levels"] = scale.quantiles, scale.levels
            if txt is not None:
                text = txt  # only LightGBM has a text model, and members are distinct models
        meta = {"model": "ensemble", "task": "binary", "seed": self.seed, "n_features": self.n_features_,
                "rule": self.rule, "weights": self.weights.tolist(), "members": metas}
        return meta, arrays, text

    @classmethod
    def from_state(cls, meta, arrays, text):
        members, scales = [], []
        for i, m in enumerate(meta["members"]):
            prefix = f"m{i}."
            own = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            q, lv = own.pop("rank_quantiles"), own.pop("rank_levels")
            if m.get("model") == "ensemble":
                raise ValueError("an ensemble member cannot be an ensemble")
            members.append(model_from_state(m, own, text if m.get("model") == "lightgbm" else None))
            scales.append(RankScale(q, lv))
        if len(meta["weights"]) != len(members) or not members:
            raise ValueError("ensemble weights and members differ in number")
        return cls(members, scales, np.asarray(meta["weights"], dtype=np.float64), meta["rule"], meta["seed"])
