"""Comparing feature sets and models: every species x feature set x model on identical samples and folds, the
mean over species, and paired comparisons between feature sets (wins per species, Wilcoxon signed-rank test).

Fairness: for each species the samples are the cells that have features in *every* feature set compared, and the
spatial folds (and presence-only background) are drawn once, from a fixed seed, and reused for every feature set
and model.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from botaclip.config import build
from botaclip.errors import BotaclipError, InvalidInputError, param
from botaclip.sdm.binning import DEFAULT_MAX_BIN, BinnedFeatures, BinnedView
from botaclip.sdm.config import CompareConfig, EvaluationConfig, feature_set_names
from botaclip.sdm.crossfit import CrossFit
from botaclip.sdm.dataset import (
    IndexedCells,
    LabelledCells,
    StoreFeatures,
    drop_uninformative_columns,
    label_cells,
    uninformative_columns,
)
from botaclip.sdm.design import (
    SampleDesign,
    as_occurrences,
    cross_fits_of,
    design_folds,
    inputs_range,
    open_store,
    target_group_of,
)
from botaclip.sdm.engines import FeatureTables, LocalWorkers, run_tasks, worker_count
from botaclip.sdm.ensemble import MemberRecorder, ensemble_cv
from botaclip.sdm.evaluate import cross_validate, metric_names
from botaclip.sdm.fit import cv_notes
from botaclip.sdm.importance import PermutationImportance, check_groups, feature_groups
from botaclip.sdm.signed_rank import wilcoxon_p
from botaclip.sdm.thresholds import parse_threshold

#: What a worker process imports as it starts, before its first task: the fits' code, and LightGBM with the
#: projection's randomized SVD when LightGBM is compared (0.4 CPU-s more, wasted on other models).
WORKER_MODULES = ("botaclip.sdm.compare",)
LIGHTGBM_MODULES = ("lightgbm", "sklearn.utils.extmath")

# Metrics where smaller is better (wins are counted the other way round).
LOWER_IS_BETTER = {"mae"}


@dataclass
class ComparisonRow:
    """One species x feature set x model x metric: values on the scored folds, their mean and sd."""

    species: str
    features: str
    model: str
    metric: str
    values: list[float]
    mean: float
    sd: float


@dataclass
class PairedComparison:
    """Feature set ``a`` vs ``b`` for one model and metric, paired by species."""

    model: str
    metric: str
    a: str
    b: str
    n_species: int
    wins_a: int
    wins_b: int
    ties: int
    mean_a: float
    mean_b: float
    mean_difference: float  # mean over species of (a - b)
    p_value: float  # two-sided Wilcoxon signed-rank test; nan with fewer than 2 non-zero differences


@dataclass
class SpeciesInfo:
    species: str
    kind: str
    n_presences: int
    n_samples: int
    block_res: int
    n_blocks: int
    notes: list[str] = field(default_factory=list)
    folds: str = ""  # how the folds were made, in one line
    cross_fitted: list[str] = field(default_factory=list)


@dataclass
class ComparisonResult:
    """What `botaclip sdm compare` reports and writes."""

    kind: str
    feature_sets: list[str]
    models: list[str]
    metrics: list[str]
    rows: list[ComparisonRow]
    species: list[SpeciesInfo]
    skipped_species: dict[str, str]
    paired: list[PairedComparison]
    folds: int
    seed: int
    files: list[str] = field(default_factory=list)
    threshold_rule: str | None = None
    block_res: str = "auto"  # as asked: 'auto' or the forced resolution
    autocorrelation: dict | None = None  # the estimated range of the inputs, when blocks were chosen from it
    # (species, features, model) -> (sample cells uint64 [n], out-of-fold prediction [n], nan where a fold was
    # skipped): for callers that score the predictions against something else (the demo's true suitability).
    # Not written to the reports.
    predictions: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    # species -> features -> model -> group -> {'mean', 'sd', 'folds'}: permutation importance (when asked for)
    importance: dict = field(default_factory=dict)

    def table(self) -> list[dict]:
        """One record per species x feature set x model with '<metric>_mean' and '<metric>_sd' columns."""
        out: dict[tuple, dict] = {}
        info = {s.species: s for s in self.species}
        for r in self.rows:
            key = (r.species, r.features, r.model)
            rec = out.setdefault(key, {"species": r.species, "features": r.features, "model": r.model,
                                       "n_presences": info[r.species].n_presences,
                                       "n_samples": info[r.species].n_samples})
            rec[f"{r.metric}_mean"] = r.mean
            rec[f"{r.metric}_sd"] = r.sd
            rec[f"{r.metric}_folds"] = len(r.values)
        return list(out.values())

    def means(self) -> dict[str, dict[str, dict[str, float]]]:
        """metric -> 'features | model' -> {'mean', 'sd', 'n_species'} over species (of the per-species means)."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for metric in self.metrics:
            for fs in self.feature_sets:
                for model in self.models:
                    v = np.array([r.mean for r in self.rows
                                  if r.metric == metric and r.features == fs and r.model == model], dtype=float)
                    v = v[np.isfinite(v)]
                    out.setdefault(metric, {})[f"{fs} | {model}"] = {
                        "mean": float(v.mean()) if v.size else float("nan"),
                        "sd": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
                        "n_species": int(v.size),
                    }
        return out

    def to_dict(self) -> dict:
        per_species: dict = {}
        for r in self.rows:
            per_species.setdefault(r.species, {}).setdefault(r.features, {}).setdefault(r.model, {})[r.metric] = {
                "folds": r.values, "mean": r.mean, "sd": r.sd}
        return {
            "kind": self.kind, "feature_sets": self.feature_sets, "models": self.models, "metrics": self.metrics,
            "folds": self.folds, "seed": self.seed, "threshold_rule": self.threshold_rule,
            "block_res": self.block_res, "autocorrelation": self.autocorrelation,
            "species": [asdict(s) for s in self.species], "skipped_species": self.skipped_species,
            "results": per_species, "mean_over_species": self.means(),
            "paired": [asdict(p) for p in self.paired], "ranking": [r.to_dict() for r in self.rankings()],
        } | ({"importance": self.importance} if self.importance else {})

    def rankings(self) -> list:
        """The feature sets ranked per species, tested against the best and with a Friedman test, for every
        model and metric (:mod:`botaclip.sdm.ranking`)."""
        from botaclip.sdm.ranking import rankings

        return rankings(self)

    def write(self, out) -> list[str]:
        """Write comparison.csv, report.md and report.json into folder ``out``; returns the paths."""
        from botaclip.sdm.report import write_reports

        self.files = write_reports(self, out)
        return self.files


def paired_comparison(a_values: Sequence[float], b_values: Sequence[float], metric: str) -> dict:
    """Wins, ties and a two-sided Wilcoxon signed-rank p-value for paired per-species scores of a and b.

    Species where either score is undefined are left out. 'Win' means better: higher, or lower for MAE.
    """
    a = np.asarray(a_values, dtype=float)
    b = np.asarray(b_values, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    d = sign * (a - b)
    tol = 1e-12
    nonzero = np.abs(d) > tol
    p = float("nan")
    if nonzero.sum() >= 2:
        p = wilcoxon_p(a[nonzero], b[nonzero])
    return {
        "n_species": int(a.size), "wins_a": int(np.sum(d > tol)), "wins_b": int(np.sum(d < -tol)),
        "ties": int(np.sum(~nonzero)), "mean_a": float(a.mean()) if a.size else float("nan"),
        "mean_b": float(b.mean()) if b.size else float("nan"),
        "mean_difference": float((a - b).mean()) if a.size else float("nan"), "p_value": p,
    }


def compare(store, occurrences, feature_sets: Sequence[str | Sequence[str]], config: CompareConfig | None = None,
            *, cross_fit: dict[str, CrossFit] | None = None, progress=None, **options) -> ComparisonResult:
    """Cross-validate every species x feature set x model on identical samples and folds.

    ``feature_sets``: each item a name or a list of names joined on the cell ('a' or 'b,c'). ``config``: a
    :class:`~botaclip.sdm.config.CompareConfig`, or its fields as keyword ``options``: ``species`` (names, or
    None for every species with at least ``min_presences`` presences; others are listed as skipped),
    ``models``, ``out`` (comparison.csv, report.md, report.json), and the sampling and evaluation fields of
    :func:`botaclip.sdm.fit_species` (``kind``, ``folds``, ``block_res``, ``threshold``, ...). With 'auto' blocks
    the range is the largest over the feature sets compared, estimated once on the union of the species' cells,
    so every species and feature set shares one block size (a species may still fall back to finer blocks to keep
    >= 4 blocks per fold). ``progress``: optional callable taking a short status string.
    """
    cfg = build(CompareConfig, config, **options)
    groups = [list(feature_set_names(f)) for f in feature_sets]
    labels = _group_labels(groups)
    store = open_store(store, read_only=True)
    occ = as_occurrences(occurrences, cfg.sampling)
    source = StoreFeatures(store)
    all_names = sorted({n for g in groups for n in g})
    source.check(all_names)
    kind = cfg.sampling.kind or occ.infer_kind()
    labelled, skipped = _label_species(occ, kind, source, all_names, cfg)
    ev = cfg.evaluation
    # One task per species and feature set: twice as many tasks as species halve the time the last one can
    # leave the other workers idle. Local worker processes start now and import while the tables are read.
    workers = worker_count(ev.jobs, len(labelled) * len(groups))
    parallel = workers > 1 or cfg.engine == "ray"
    modules = WORKER_MODULES + (LIGHTGBM_MODULES if "lightgbm" in cfg.models else ())
    with LocalWorkers(workers, modules) if (parallel and cfg.engine == "local") else nullcontext() as pool:
        needed = np.unique(np.concatenate([lab.h3 for lab in labelled.values()]))
        cross_fits = cross_fits_of(source, all_names, cross_fit)
        tables = FeatureTables(_read_tables(source, all_names, cross_fits, needed))
        embedding_sets = {n for n in tables if source.embedding_columns([n]).size}
        _check_extras(cfg, kind, groups, tables, embedding_sets)
        range_ = _range_and_bins(tables, groups, needed, cfg, workers, binning=not cross_fits)
        # Split every species once (same folds for every feature set and model) before any model is fitted, so
        # bad folds or blocks fail before work is done.
        designs = {s: design_folds(lab.h3, lab.y, ev.folds, ev.block_resolution, ev.seed, cross_fits=cross_fits,
                                   range_=range_, is_background=lab.is_background)
                   for s, lab in labelled.items()}
        metrics = list(metric_names("regression" if kind == "abundance" else "binary"))
        # Tasks run in parallel with one thread per fit; one task at a time gets the threads instead.
        fit_ev = dataclasses.replace(ev, jobs=1) if parallel else ev
        tasks = [_SpeciesTask(lab, designs[s], [g], [label], needed, cfg.models, fit_ev, metrics, embedding_sets,
                              cfg.ensemble) for s, lab in labelled.items() for g, label in zip(groups, labels)]
        if cfg.engine == "local" and cross_fits:
            cross_fitted = [g for g in groups if any(task.design.uses_cross_fit(g) for task in tasks)]
            _bin_in_driver(tables, [g for g in groups if g not in cross_fitted], cfg.models, ev, workers)
        if progress:
            progress(f"{len(labelled)} species x {len(labels)} feature sets x {len(cfg.models)} models, "
                     f"{cfg.engine} engine")
        results = _merge_species(run_tasks(_compare_species, tasks, tables, jobs=ev.jobs, engine=cfg.engine,
                                           ray_address=cfg.ray_address, workers=pool,
                                           on_result=_species_progress(progress, tasks)), len(groups))
    rows = [row for species_rows, *_ in results for row in species_rows]
    infos = [r[1] for r in results]
    predictions = {key: value for r in results for key, value in r[2].items()}
    models = list(cfg.models) + ([f"ensemble-{cfg.ensemble}"] if cfg.ensemble else [])
    result = ComparisonResult(
        kind, labels, models, metrics, rows, infos, skipped, _paired(rows, infos, models, metrics, labels),
        ev.folds, ev.seed, threshold_rule=None if kind == "abundance" else str(parse_threshold(ev.threshold)),
        block_res=str(ev.block_res), autocorrelation=None if range_ is None else range_.to_dict(),
        predictions=predictions, importance={i.species: r[3] for i, r in zip(infos, results) if r[3]})
    if cfg.out is not None:
        result.write(cfg.out)
    return result


def _range_and_bins(tables: FeatureTables, groups: list[list[str]], needed: np.ndarray, cfg: CompareConfig,
                    threads: int, binning: bool):
    """The autocorrelation range of the inputs ('auto' blocks; else None), estimated in a second thread while
    this one bins the feature tables for the local workers (``binning``: no feature set is cross-fitted, so the
    bins do not depend on the folds; LightGBM bins outside the GIL)."""
    ev = cfg.evaluation
    with ThreadPoolExecutor(1) as pool:
        estimating = None
        if ev.block_resolution is None:
            estimating = pool.submit(inputs_range, needed, [join_tables(tables, g)[0] for g in groups], ev.seed)
        if cfg.engine == "local" and binning:
            _bin_in_driver(tables, groups, cfg.models, ev, threads)
        return None if estimating is None else estimating.result()


def _species_progress(progress, tasks: list["_SpeciesTask"]):
    """``on_result`` for :func:`run_tasks`: '<species>: done' once every feature set of a species is done."""
    left = Counter(task.labelled.species for task in tasks)

    def done(i: int, result) -> None:
        species = tasks[i].labelled.species
        left[species] -= 1
        if progress is not None and left[species] == 0:
            progress(f"{species}: done")
    return done


def _merge_species(results: list, n_groups: int) -> list[tuple[list[ComparisonRow], SpeciesInfo, dict, dict]]:
    """The results of each species' ``n_groups`` consecutive tasks (one per feature set) as one: rows in feature
    set order, the species' notes once each in the order first given."""
    out = []
    for i in range(0, len(results), n_groups):
        parts = results[i:i + n_groups]
        notes = [note for part in parts for note in part[1].notes]
        info = dataclasses.replace(parts[0][1], notes=list(dict.fromkeys(notes)))
        out.append(([row for part in parts for row in part[0]], info,
                    {k: v for part in parts for k, v in part[2].items()},
                    {k: v for part in parts for k, v in part[3].items()}))
    return out


def _check_extras(cfg: CompareConfig, kind: str, groups: list[list[str]], tables: dict, embedding_sets: set) -> None:
    """Ensembles and importance asked for where they cannot be made: refused before any model is fitted."""
    if cfg.ensemble and kind == "abundance":
        raise InvalidInputError(f"{param('ensemble')} combines rank-normalised suitabilities of presence models; "
                                "abundance data are not supported")
    if cfg.evaluation.importance:
        # Feature sets of one group get no importance (noted); refused only when no feature set has two.
        found = []
        for g in groups:
            sets = [(n, tables[n][1], n in embedding_sets) for n in g]
            found.append(feature_groups(sets, range(sum(len(c) for _, c, _ in sets))))
        if all(len(f) < 2 for f in found):
            check_groups(found[0], f"feature set {'+'.join(groups[0])}")


def _group_labels(groups: list[list[str]]) -> list[str]:
    if not groups:
        raise InvalidInputError(f"give at least one feature set in {param('feature_sets')}")
    labels = ["+".join(g) for g in groups]
    if len(set(labels)) != len(labels):
        raise InvalidInputError(f"feature set given twice: {', '.join(labels)}")
    return labels


def _label_species(occ, kind: str, source: StoreFeatures, names: list[str],
                   cfg: CompareConfig) -> tuple[dict[str, LabelledCells], dict[str, str]]:
    """Each species' labelled cells; without an explicit species list, species that fail are listed as skipped."""
    explicit = cfg.species is not None
    species_list = list(cfg.species) if explicit else occ.species_names()
    for s in species_list:
        occ.check_species(s)
    sampling = cfg.sampling
    indexed = IndexedCells.of(source, names)
    tg = target_group_of(sampling)
    labelled, skipped = {}, {}
    for s in species_list:
        try:
            labelled[s] = label_cells(occ, s, kind, indexed, sampling, target_group=tg, seed=cfg.evaluation.seed)
        except BotaclipError as exc:
            if explicit:
                raise
            skipped[s] = str(exc)
    if not labelled:
        raise InvalidInputError(
            f"no species in {occ.path} has at least {sampling.min_presences} presences on indexed cells "
            f"({param('min_presences')}); {len(skipped)} skipped"
        )
    return labelled, skipped


def _read_tables(source: StoreFeatures, names: list[str], cross_fits: dict[str, CrossFit],
                 cells: np.ndarray) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Each feature set (and each cross-fitted set's fold sets) read once for the union of the species' cells."""
    tables = {name: source.features([name], cells) for name in names}
    for cf in cross_fits.values():
        for name in cf.fold_sets:
            if name not in tables:
                tables[name] = source.features([name], cells)
    return tables


@dataclass
class _SpeciesTask:
    """One species' share of a comparison: its cells, folds, and what to fit (sent to a worker as is)."""

    labelled: LabelledCells
    design: SampleDesign
    groups: list[list[str]]
    labels: list[str]
    cells: np.ndarray  # rows of the feature tables
    models: tuple[str, ...]
    evaluation: EvaluationConfig
    metrics: list[str]
    embedding_sets: set[str]  # feature sets whose columns are embedding dimensions (projected with pca)
    ensemble: str | None = None  # 'mean' or 'weighted': also score the ensemble of ``models``


def _compare_species(task: _SpeciesTask, tables: dict) -> tuple[list[ComparisonRow], SpeciesInfo, dict, dict]:
    """Every feature set x model (and their ensemble) for one species, on its one set of folds (``tables``:
    feature set name -> (features of ``task.cells``, column names)); also the out-of-fold predictions by
    (species, label, model) and the permutation importance by label and model (when asked for)."""
    lab, design, ev = task.labelled, task.design, task.evaluation
    fs = design.folds
    rows_idx = np.searchsorted(task.cells, lab.h3)
    notes = list(lab.notes) + list(design.notes)
    rows: list[ComparisonRow] = []
    predictions = {}
    importance: dict = {}
    for g, label in zip(task.groups, task.labels):
        Xall, cols = join_tables(tables, g)
        X, kept, dropped = drop_uninformative_columns(Xall[rows_idx], cols)
        notes += [f"{label}: {d}" for d in dropped]
        binned = None
        if design.uses_cross_fit(g):
            X = [join_tables(tables, design.fold_names(g, k))[0][rows_idx][:, kept] for k in range(fs.n_folds)]
        else:
            binned = _shared_bins(tables, g, (Xall, kept), rows_idx, task)
        embedding = np.concatenate([np.full(tables[n][0].shape[1], n in task.embedding_sets) for n in g])
        groups = feature_groups([(n, tables[n][1], n in task.embedding_sets) for n in g], kept)
        if ev.importance and len(groups) < 2:
            notes.append(f"{label}: no permutation importance (one feature group: {', '.join(groups)})")
        members = {}
        for model in task.models:
            hooks = _hooks(task, lab, groups)
            cv = cross_validate(X, lab.y, fs, model, lab.task, lab.is_background, ev,
                                embedding_columns=np.flatnonzero(embedding[kept]), on_fold=list(hooks.values()),
                                binned=binned if model == "lightgbm" else None)
            members[model] = (cv, hooks.get("ensemble"))
            if "importance" in hooks:
                importance.setdefault(label, {})[model] = hooks["importance"].result()
        if task.ensemble:
            ens = ensemble_cv(task.ensemble, members, lab.y, fs, ev.threshold)
            members[ens.model] = (ens, None)
        for model, (cv, _) in members.items():
            predictions[(lab.species, label, model)] = (lab.h3, cv.oof)
            notes += cv_notes(cv, prefix=f"{label} | {model}: ")
            summary = cv.summary()
            rows += [ComparisonRow(lab.species, label, model, m, cv.values(m), summary[m]["mean"], summary[m]["sd"])
                     for m in task.metrics]
    info = SpeciesInfo(lab.species, lab.kind, lab.n_presences, int(lab.h3.size), fs.block_res, fs.n_blocks,
                       sorted(set(notes), key=notes.index), fs.describe(), list(design.cross_fitted))
    return rows, info, predictions, importance


def _shares_bins(models: Sequence[str], ev: EvaluationConfig) -> bool:
    """Whether a species' LightGBM fits take their bins from the feature table binned once (see
    :func:`_shared_bins`)."""
    return "lightgbm" in models and ev.bin_once and not ev.pca


def _bins_key(ev: EvaluationConfig, group: list[str], kept: list[int] | None) -> tuple:
    max_bin = int(ev.model_options("lightgbm").get("max_bin", DEFAULT_MAX_BIN))
    return ("lightgbm bins", tuple(group), None if kept is None else tuple(kept), max_bin)


def _bin_in_driver(tables: FeatureTables, groups: list[list[str]], models: Sequence[str], ev: EvaluationConfig,
                   threads: int) -> None:
    """Bin the feature tables of ``groups``, once, with ``threads`` threads, before any worker starts: each local
    worker then loads the bins (:meth:`FeatureTables.save_derived`) instead of binning the union of the species'
    cells itself (about 2 CPU-s per 768-d table of 100,000 cells). The columns are those informative on the
    union; a species that drops more (constant on its own cells), and cross-fitted sets (not given here), bin
    their own."""
    if not _shares_bins(models, ev):
        return
    for g in groups:
        X = join_tables(tables, g)[0]
        keep = np.flatnonzero(~np.logical_or(*uninformative_columns(X)))
        if keep.size == 0:
            continue
        every = keep.size == X.shape[1]
        key = _bins_key(ev, g, None if every else keep.tolist())
        tables.once(key, lambda X=X if every else X[:, keep], max_bin=key[-1]:
                    BinnedFeatures(X, max_bin=max_bin, threads=threads))


def _shared_bins(tables: FeatureTables, group: list[str], columns: tuple[np.ndarray, list[int]], rows: np.ndarray,
                 task: "_SpeciesTask") -> BinnedView | None:
    """LightGBM's bins of one feature set over the union of the compared species' cells, made once (by the
    driver, or else once per process) and shared by the species, as the view of this species' ``rows``.
    ``columns``: (the feature set's table, the columns this species keeps). None where each fit bins its own
    rows instead (no LightGBM, ``bin_once`` off, a projection, a cell sampled twice)."""
    if not _shares_bins(task.models, task.evaluation) or np.unique(rows).size != rows.size:
        return None
    Xall, kept = columns
    every = len(kept) == Xall.shape[1]
    key = _bins_key(task.evaluation, group, None if every else kept)
    full = tables.once(key, lambda: BinnedFeatures(Xall if every else Xall[:, kept], max_bin=key[-1]))
    return full.view(rows)


def _hooks(task: "_SpeciesTask", lab: LabelledCells, groups: dict) -> dict:
    """The fold callbacks one model's cross-validation needs: permutation importance, ensemble member records."""
    hooks: dict = {}
    if task.evaluation.importance and len(groups) >= 2:
        hooks["importance"] = PermutationImportance(lab.y, groups, lab.task, task.evaluation.importance_repeats,
                                                    task.evaluation.seed)
    if task.ensemble:
        hooks["ensemble"] = MemberRecorder()
    return hooks


def _paired(rows: list[ComparisonRow], infos: list[SpeciesInfo], models, metrics, labels) -> list[PairedComparison]:
    """Every pair of feature sets, per model and metric, paired by species."""
    paired: list[PairedComparison] = []
    sp = [i.species for i in infos]
    for model in models:
        for metric in metrics:
            lookup = {(r.species, r.features): r.mean for r in rows if r.model == model and r.metric == metric}
            for a, b in itertools.combinations(labels, 2):
                res = paired_comparison([lookup[(s, a)] for s in sp], [lookup[(s, b)] for s in sp], metric)
                paired.append(PairedComparison(model, metric, a, b, **res))
    return paired


def join_tables(tables: dict[str, tuple[np.ndarray, list[str]]], names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Feature sets joined on the cell (all read for the same cells), columns prefixed when there are several."""
    if len(names) == 1:
        return tables[names[0]]
    X = np.hstack([tables[n][0] for n in names])
    return X, [f"{n}.{c}" for n in names for c in tables[n][1]]
