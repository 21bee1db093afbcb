"""Permutation importance on the held-out folds, grouped per feature set.

For each scored outer fold, the fold's model predicts its test cells once as they are and then with the columns
of one group permuted across the test cells (the same row permutation for every column of the group, so an
embedding's dimensions stay together); importance is the drop in the fold's score — ROC AUC for
presence/absence and presence/background, Spearman rho for abundance — averaged over ``repeats`` permutations.
Reported: the mean and sd over folds. Groups: an embedding feature set is one group (its dimensions mean nothing
one by one); each column of a scalar covariate set is its own group. The test fold never trained the model, so
this measures what the model uses *and* what transfers to held-out blocks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from botaclip.errors import InvalidInputError, param
from botaclip.sdm import metrics as M


def feature_groups(sets: Sequence[tuple[str, Sequence[str], bool]], kept: Sequence[int]) -> dict[str, np.ndarray]:
    """Group label -> indices into the kept columns. ``sets``: (feature set name, its columns, is an embedding)
    in the order the columns are joined; ``kept``: indices of the joined columns the model uses."""
    labels = []
    for name, columns, embedding in sets:
        labels += [name if embedding else f"{name}.{c}" for c in columns]
    groups: dict[str, list[int]] = {}
    for i, j in enumerate(kept):
        groups.setdefault(labels[j], []).append(i)
    return {g: np.asarray(ix, dtype=np.int64) for g, ix in groups.items()}


def check_groups(groups: dict[str, np.ndarray], what: str) -> None:
    """Permutation importance compares features: refuse a model with one."""
    if len(groups) < 2:
        only = next(iter(groups), "none")
        raise InvalidInputError(f"{param('importance')} needs a model with at least two features to compare; {what} "
                                f"has one ({only}); join another feature set (e.g. --features {only},elevation) "
                                f"or drop {param('importance')}")


def _score(task: str, y: np.ndarray, s: np.ndarray) -> float:
    return M.roc_auc(y, s) if task == "binary" else M.spearman(y, s)


class PermutationImportance:
    """An ``on_fold`` callable for :func:`botaclip.sdm.evaluate.cross_validate` collecting each group's drop in
    score per fold."""

    needs_inner = False

    def __init__(self, y: np.ndarray, groups: dict[str, np.ndarray], task: str, repeats: int = 3, seed: int = 0):
        self.y, self.groups, self.task, self.repeats = np.asarray(y, dtype=np.float64), groups, task, int(repeats)
        self.rng = np.random.default_rng(seed)
        self.drops: dict[str, list[float]] = {g: [] for g in groups}

    def __call__(self, ctx) -> None:
        y = self.y[ctx.test]
        base = _score(self.task, y, ctx.predict(ctx.X_test))
        if not np.isfinite(base):
            return
        for g, cols in self.groups.items():
            drops = []
            for _ in range(self.repeats):
                X = np.array(ctx.X_test, copy=True)
                X[:, cols] = X[self.rng.permutation(X.shape[0])][:, cols]
                drops.append(base - _score(self.task, y, ctx.predict(X)))
            self.drops[g].append(float(np.nanmean(drops)))

    def result(self) -> dict[str, dict]:
        """Group -> {'mean', 'sd', 'folds'} (drop in AUC or Spearman), most important first."""
        out = {}
        for g, v in self.drops.items():
            a = np.asarray(v, dtype=np.float64)
            a = a[np.isfinite(a)]
            out[g] = {"mean": float(a.mean()) if a.size else float("nan"),
                      "sd": float(a.std(ddof=1)) if a.size > 1 else float("nan"), "folds": [float(x) for x in v]}
        return dict(sorted(out.items(), key=lambda kv: -np.nan_to_num(kv[1]["mean"], nan=-np.inf)))


def column_weights(importance: dict[str, dict], groups: dict[str, np.ndarray], n_columns: int) -> np.ndarray:
    """Per kept column, the mean importance of its group (for the area of applicability's feature weights)."""
    w = np.zeros(n_columns)
    for g, cols in groups.items():
        w[cols] = np.nan_to_num(importance.get(g, {}).get("mean", 0.0), nan=0.0)
    return w


def importance_chart(panels: dict[str, dict[str, dict]], out_png: str | Path, metric: str = "AUC") -> Path:
    """A horizontal bar chart per panel (title -> group -> {'mean', 'sd'}): drop in ``metric`` when the group is
    permuted, error bars one sd over folds (or species)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from botaclip.sdm.maps import save_png

    out_png = Path(out_png)
    n = max(1, len(panels))
    ncol = min(4 if n > 4 else 2 if n > 1 else 1, n)
    nrow = int(np.ceil(n / ncol))
    height = max(2.5, 0.35 * max((len(v) for v in panels.values()), default=1) + 1.2)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, height * nrow), dpi=110, squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    for ax, (title, groups) in zip(axes.ravel(), panels.items()):
        names = list(groups)[::-1]
        means = np.array([groups[g]["mean"] for g in names], dtype=float)
        sds = np.nan_to_num(np.array([groups[g]["sd"] for g in names], dtype=float))
        ax.barh(names, np.nan_to_num(means), xerr=sds, color=np.where(means > 0, "#2c7fb8", "#bdbdbd"),
                ecolor="0.3", capsize=2)
        ax.axvline(0, color="0.2", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"drop in {metric} when permuted (held-out folds)", fontsize=8)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    return save_png(fig, out_png)


def markdown_lines(importance: dict, metric: str) -> list[str]:
    """report.md section: per feature set and model, each group's drop (mean over species of the per-species
    mean over folds, and its sd over species)."""
    lines = ["", "## Permutation importance", "",
             f"Drop in {metric} on the held-out folds when a group's columns are permuted (an embedding set is one "
             "group; each scalar covariate its own). Mean over species (sd over species); see importance.png.", "",
             "| features | model | group | drop | sd | species |", "|---|---|---|---|---|---|"]
    for (features, model), groups in mean_over_species(importance).items():
        for g, v in groups.items():
            lines.append(f"| {features} | {model} | {g} | {v['mean']:.4f} | {v['sd']:.4f} | {v['n']} |")
    return lines


def mean_over_species(importance: dict) -> dict[tuple[str, str], dict[str, dict]]:
    """importance[species][features][model][group]['mean'] -> (features, model) -> group -> mean, sd, n."""
    acc: dict[tuple[str, str], dict[str, list[float]]] = {}
    for by_features in importance.values():
        for features, by_model in by_features.items():
            for model, groups in by_model.items():
                for g, v in groups.items():
                    acc.setdefault((features, model), {}).setdefault(g, []).append(v["mean"])
    out = {}
    for key, groups in acc.items():
        rows = {}
        for g, vals in groups.items():
            a = np.asarray(vals, dtype=float)
            a = a[np.isfinite(a)]
            rows[g] = {"mean": float(a.mean()) if a.size else float("nan"),
                       "sd": float(a.std(ddof=1)) if a.size > 1 else float("nan"), "n": int(a.size)}
        out[key] = dict(sorted(rows.items(), key=lambda kv: -np.nan_to_num(kv[1]["mean"], nan=-np.inf)))
    return out
