"""The representation benchmark: feature sets ranked per task (species), for each model and metric.

For each model and metric, every species (a task) ranks the feature sets by its mean over folds (1 = best;
ties share the average rank). Over the species that scored every set:

- the mean rank of each set, and the best set (lowest mean rank; the higher mean score breaks a tie);
- each other set against the best: wins/losses per species and a two-sided Wilcoxon signed-rank p-value, with a
  Holm adjustment over those k - 1 comparisons;
- a Friedman test that all sets rank alike (k >= 3 sets, >= 2 species; with two sets the paired test says it).

The species are the replicates: the comparison is paired because every set was scored on the same cells and the
same spatial folds of a species (see :mod:`botaclip.sdm.compare`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
from scipy import stats

from botaclip.sdm.compare import LOWER_IS_BETTER
from botaclip.sdm.signed_rank import wilcoxon_p


@dataclass
class RankedSet:
    """One feature set in a ranking."""

    features: str
    mean_rank: float
    mean: float  # mean over the ranked species of the per-species mean score
    wins: int = 0  # species where it beats the best set
    losses: int = 0
    ties: int = 0
    p_vs_best: float = float("nan")  # two-sided Wilcoxon signed-rank test against the best set
    p_vs_best_holm: float = float("nan")


@dataclass
class Ranking:
    """The feature sets ranked over species for one model and metric."""

    model: str
    metric: str
    n_species: int  # species that scored every feature set (the others are left out of the ranking)
    best: str | None
    friedman_statistic: float
    friedman_p: float
    sets: list[RankedSet]  # best first
    ranks: dict[str, dict[str, float]] = field(default_factory=dict)  # species -> feature set -> rank
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def rank_sets(scores: dict[str, dict[str, float]], labels: Sequence[str], metric: str, model: str = "") -> Ranking:
    """Rank ``labels`` over species from ``scores`` (species -> feature set -> mean score; nan = not scored)."""
    labels = list(labels)
    species = [s for s, row in scores.items() if all(np.isfinite(row.get(f, np.nan)) for f in labels)]
    if not species:
        return Ranking(model, metric, 0, None, math.nan, math.nan, [], note="no species scored every feature set")
    M = np.array([[scores[s][f] for f in labels] for s in species], dtype=float)  # species x sets
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0  # rank 1 = best
    R = np.vstack([stats.rankdata(sign * row, method="average") for row in M])
    mean_rank, mean = R.mean(axis=0), M.mean(axis=0)
    order = sorted(range(len(labels)), key=lambda j: (mean_rank[j], sign * mean[j]))
    b = order[0]
    sets = [RankedSet(labels[j], float(mean_rank[j]), float(mean[j])) for j in order]
    for rs, j in zip(sets[1:], order[1:]):
        d = -sign * (M[:, j] - M[:, b])  # > 0: this set is better than the best on that species
        nz = np.abs(d) > 1e-12
        rs.wins, rs.losses, rs.ties = int((d > 1e-12).sum()), int((d < -1e-12).sum()), int((~nz).sum())
        if nz.sum() >= 2:
            rs.p_vs_best = wilcoxon_p(M[nz, j], M[nz, b])
    _holm(sets[1:])
    stat, p, note = math.nan, math.nan, ""
    if len(labels) >= 3 and len(species) >= 2:
        if np.ptp(R, axis=1).any():
            stat, p = (float(v) for v in stats.friedmanchisquare(*M.T))
        else:
            note = "every species ranks the sets alike up to ties: Friedman test undefined"
    elif len(labels) < 3:
        note = "Friedman test needs 3 or more feature sets; the paired test against the best says it for 2"
    else:
        note = "Friedman test needs 2 or more species"
    ranks = {s: {f: float(R[i, j]) for j, f in enumerate(labels)} for i, s in enumerate(species)}
    return Ranking(model, metric, len(species), labels[b], stat, p, sets, ranks, note)


def _holm(sets: list[RankedSet]) -> None:
    """Holm's step-down adjustment of the p-values against the best (nan ones left out)."""
    idx = sorted((i for i, s in enumerate(sets) if np.isfinite(s.p_vs_best)), key=lambda i: sets[i].p_vs_best)
    m, running = len(idx), 0.0
    for k, i in enumerate(idx):
        running = max(running, min(1.0, (m - k) * sets[i].p_vs_best))
        sets[i].p_vs_best_holm = running


def rankings(result) -> list[Ranking]:
    """Every model x metric ranking of a :class:`~botaclip.sdm.compare.ComparisonResult` (empty for one set)."""
    if len(result.feature_sets) < 2:
        return []
    out = []
    for model in result.models:
        for metric in result.metrics:
            scores: dict[str, dict[str, float]] = {}
            for r in result.rows:
                if r.model == model and r.metric == metric:
                    scores.setdefault(r.species, {})[r.features] = r.mean
            out.append(rank_sets(scores, result.feature_sets, metric, model))
    return out


def _f(v, digits: int = 3) -> str:
    return "nan" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _p(v) -> str:
    """A p-value: 4 decimals, or two significant digits below 1e-4 (never a bare 0.0000)."""
    return _f(v, 4) if v is None or not np.isfinite(v) or v >= 1e-4 else f"{v:.1e}"


def markdown_lines(result) -> list[str]:
    """The ranking tables of report.md: one per model x metric, best set first."""
    ranked = rankings(result)
    if not ranked:
        return []
    lines = ["", "## Ranking of feature sets", "",
             "Per species, the feature sets are ranked by their mean over folds (1 = best, ties averaged); mean rank "
             "over the species that scored every set. Each set is tested against the best one (two-sided Wilcoxon "
             "signed-rank test on the per-species means, Holm-adjusted over the sets); the Friedman test asks "
             "whether all sets rank alike."]
    for r in ranked:
        head = f"### {r.model} | {r.metric}: best {r.best}, {r.n_species} species"
        if np.isfinite(r.friedman_p):
            head += f"; Friedman chi2 = {_f(r.friedman_statistic, 2)}, p = {_p(r.friedman_p)}"
        lines += ["", head, ""] + ([f"{r.note}.", ""] if r.note else [])
        lines += ["| rank | features | mean rank | mean | wins-losses-ties vs best | p vs best | p (Holm) |",
                  "|---|---|---|---|---|---|---|"]
        for i, s in enumerate(r.sets, 1):
            wlt = "best" if i == 1 else f"{s.wins}-{s.losses}-{s.ties}"
            lines.append(f"| {i} | {s.features} | {_f(s.mean_rank, 2)} | {_f(s.mean)} | {wlt} | "
                         f"{_p(s.p_vs_best) if i > 1 else ''} | {_p(s.p_vs_best_holm) if i > 1 else ''} |")
    return lines


def summary_lines(result, metrics: Sequence[str] = ("auc", "tss", "boyce", "spearman", "mae")) -> list[str]:
    """One line per model and headline metric: the sets best first with mean ranks, and the Friedman p."""
    lines = []
    for r in rankings(result):
        if r.metric not in metrics or not r.sets:
            continue
        order = " > ".join(f"{s.features} ({_f(s.mean_rank, 2)})" for s in r.sets)
        friedman = f"; Friedman p = {_p(r.friedman_p)}" if np.isfinite(r.friedman_p) else ""
        lines.append(f"ranking {r.model} {r.metric} over {r.n_species} species (mean rank): {order}{friedman}")
    return lines
