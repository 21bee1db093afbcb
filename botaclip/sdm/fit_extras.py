"""What `sdm fit` adds around one model's cross-validation: the members of an ensemble, permutation importance,
the area of applicability of the final model, and response curves. Kept apart from :mod:`botaclip.sdm.fit` so
that each piece stays small; see :mod:`~botaclip.sdm.ensemble`, :mod:`~botaclip.sdm.importance`,
:mod:`~botaclip.sdm.aoa` and :mod:`~botaclip.sdm.response`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from botaclip.errors import InvalidInputError, param
from botaclip.sdm.config import FitConfig
from botaclip.sdm.ensemble import EnsembleModel, MemberRecorder, RankScale, ensemble_cv, member_weights
from botaclip.sdm.evaluate import CVResult, cross_validate
from botaclip.sdm.importance import PermutationImportance, check_groups, column_weights


@dataclass
class FitExtras:
    """Per-model CVs (the members of an ensemble, or the one model) and their permutation importance."""

    members: dict[str, CVResult] = field(default_factory=dict)
    importance: dict[str, dict] = field(default_factory=dict)  # model -> group -> {'mean', 'sd', 'folds'}
    groups: dict[str, np.ndarray] = field(default_factory=dict)  # group -> indices of the kept columns
    sets: list[tuple[str, list[str], bool]] = field(default_factory=list)  # (feature set, columns, is embedding)


def set_columns(source, names: list[str]) -> list[tuple[str, list[str], bool]]:
    """(name, columns, is an embedding) of each feature set, in join order."""
    out = []
    for n in names:
        info = source.store.info(n)
        dim = info.get("dim")
        out.append((n, [str(i) for i in range(int(dim))] if dim else list(info.get("columns") or []), dim is not None))
    return out


def check_fit(cfg: FitConfig, task: str, groups: dict[str, np.ndarray]) -> None:
    """Refuse, before any model is fitted, what cannot be made for this species' data."""
    if cfg.ensemble and task != "binary":
        raise InvalidInputError(f"{param('ensemble')} combines rank-normalised suitabilities of presence models; "
                                "abundance data are not supported")
    if cfg.evaluation.importance:
        check_groups(groups, f"--features {','.join(cfg.features)}")


def evaluate_models(X, lab, folds, cfg: FitConfig, embedding_columns: np.ndarray,
                    groups: dict[str, np.ndarray]) -> tuple[CVResult, FitExtras]:
    """Cross-validate the model (or every member and their ensemble) on the folds; importance per model."""
    ev = cfg.evaluation
    extras = FitExtras(groups=groups)
    recorders: dict[str, MemberRecorder] = {}
    for model in (cfg.models or (cfg.model,)) if cfg.ensemble else (cfg.model,):
        hooks = []
        if ev.importance:
            hooks.append(PermutationImportance(lab.y, groups, lab.task, ev.importance_repeats, ev.seed))
        if cfg.ensemble:
            recorders[model] = MemberRecorder()
            hooks.append(recorders[model])
        extras.members[model] = cross_validate(X, lab.y, folds, model, lab.task, lab.is_background, ev,
                                               embedding_columns=embedding_columns, on_fold=hooks)
        if ev.importance:
            extras.importance[model] = hooks[0].result()
    if not cfg.ensemble:
        return extras.members[cfg.model], extras
    members = {m: (cv, recorders[m]) for m, cv in extras.members.items()}
    return ensemble_cv(cfg.ensemble, members, lab.y, folds, ev.threshold), extras


def final_ensemble(cfg: FitConfig, y: np.ndarray, extras: FitExtras,
                   fit_member: Callable[[str, CVResult], object]) -> EnsembleModel:
    """The saved ensemble: each member fitted on every sample (``fit_member(name, its CV)``), ranked against and
    weighted by its outer out-of-fold predictions."""
    oofs = [extras.members[m].oof for m in extras.members]
    if not any(np.isfinite(o).any() for o in oofs):
        raise InvalidInputError("no fold could be scored, so the ensemble has no out-of-fold predictions to rank "
                                "its members against; use more data or fewer --folds")
    members = [fit_member(m, cv) for m, cv in extras.members.items()]
    scales = [RankScale.fit(o) for o in oofs]
    return EnsembleModel(members, scales, member_weights(cfg.ensemble, y, oofs), cfg.ensemble, cfg.evaluation.seed)


def aoa_weights(extras: FitExtras, n_columns: int) -> np.ndarray | None:
    """Per kept column, the mean over models of its group's permutation importance (None: not measured)."""
    if not extras.importance:
        return None
    return np.mean([column_weights(imp, extras.groups, n_columns) for imp in extras.importance.values()], axis=0)


def scalar_covariates(groups: dict[str, np.ndarray], sets: list[tuple[str, list[str], bool]]) -> dict[str, int]:
    """Label -> kept column index of every scalar covariate (embedding sets are left out)."""
    embedding = {n for n, _, is_emb in sets if is_emb}
    return {g: int(cols[0]) for g, cols in groups.items() if g not in embedding}


def write_figures(result, saved, X: np.ndarray, extras: FitExtras, cfg: FitConfig) -> None:
    """importance.png (when importance was measured) and response.png (``response_curves``) into ``cfg.out``
    (``X``: the samples' kept columns);
    their paths go to ``result.figures``, and a note says why curves were skipped."""
    from pathlib import Path

    out = Path(cfg.out)
    title = f"{result.species} — {result.model} on {'+'.join(result.feature_sets)}"
    metric = "AUC" if result.kind != "abundance" else "Spearman rho"
    if extras.importance:
        from botaclip.sdm.importance import importance_chart

        panels = {f"{title}\n{m}" if len(extras.importance) > 1 else title: imp
                  for m, imp in extras.importance.items()}
        result.figures.append(str(importance_chart(panels, out / "importance.png", metric)))
    if not cfg.response_curves:
        return
    from botaclip.sdm.response import response_curves, response_figure

    sets = extras.sets
    covariates = scalar_covariates(extras.groups, sets)
    embeddings = [n for n, _, is_emb in sets if is_emb]
    if embeddings:
        result.notes.append(f"response curves skipped for embedding set(s) {', '.join(embeddings)}: one dimension "
                            "of an embedding has no ecological meaning, and moving it alone leaves the data the "
                            "model was trained on")
    if not covariates:
        result.notes.append("no scalar covariate: no response curves drawn")
        return
    curves = response_curves(saved.estimator, X, covariates)
    rug = {g: X[:, j] for g, j in covariates.items()}
    ylabel = "suitability" if result.kind != "abundance" else "predicted abundance"
    result.figures.append(str(response_figure(curves, out / "response.png", title, ylabel, rug)))
