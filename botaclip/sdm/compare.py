"""Comparing feature sets and models: every species x feature set x model on identical samples and folds, the
mean over species, and paired comparisons between feature sets (wins per species, Wilcoxon signed-rank test).

Fairness: for each species the samples are the cells that have features in *every* feature set compared, and the
spatial folds (and presence-only background) are drawn once, from a fixed seed, and reused for every feature set
and model.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import stats

from botaclip.errors import BotaclipError
from botaclip.sdm.background import DEFAULT_BACKGROUND
from botaclip.sdm.dataset import (
    DEFAULT_MIN_PRESENCES,
    StoreFeatures,
    drop_uninformative_columns,
    extent_of,
    label_cells,
)
from botaclip.sdm.crossfit import CrossFit
from botaclip.sdm.evaluate import DEFAULT_INNER_FOLDS, cross_validate, metric_names
from botaclip.sdm.fit import (
    as_occurrences,
    check_block_res,
    check_inner_folds,
    check_model,
    cross_fits_of,
    design_folds,
    inputs_range,
    open_store,
    parse_feature_sets,
)
from botaclip.sdm.occurrences import KINDS
from botaclip.sdm.thresholds import ThresholdRule, parse_threshold

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
            "paired": [asdict(p) for p in self.paired],
        }


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
        p = float(stats.wilcoxon(a[nonzero], b[nonzero], zero_method="wilcox", alternative="two-sided").pvalue)
    return {
        "n_species": int(a.size), "wins_a": int(np.sum(d > tol)), "wins_b": int(np.sum(d < -tol)),
        "ties": int(np.sum(~nonzero)), "mean_a": float(a.mean()) if a.size else float("nan"),
        "mean_b": float(b.mean()) if b.size else float("nan"),
        "mean_difference": float((a - b).mean()) if a.size else float("nan"), "p_value": p,
    }


def compare(
    store,
    occurrences,
    feature_sets: Sequence[str | Sequence[str]],
    *,
    species: Sequence[str] | None = None,
    kind: str | None = None,
    models: Sequence[str] = ("lightgbm",),
    folds: int = 5,
    block_res: int | str | None = "auto",
    threshold: str | float | ThresholdRule | None = "maxtss",
    inner_folds: int = DEFAULT_INNER_FOLDS,
    cross_fit: dict[str, CrossFit] | None = None,
    background: int = DEFAULT_BACKGROUND,
    target_group=None,
    max_uncertainty: float | None = None,
    min_presences: int = DEFAULT_MIN_PRESENCES,
    seed: int = 0,
    out: str | Path | None = None,
    n_jobs: int = 1,
    columns: dict | None = None,
    progress=None,
) -> ComparisonResult:
    """Cross-validate every species x feature set x model on identical samples and folds.

    ``feature_sets``: each item a name or a list of names joined on the cell ('a' or 'b,c'); ``species``: names,
    or None for every species with at least ``min_presences`` presences (others are listed as skipped).
    Writes comparison.csv, report.md and report.json into ``out`` when given. ``progress``: optional callable
    taking a short status string. ``block_res``, ``threshold``, ``inner_folds`` and ``cross_fit`` as in
    :func:`botaclip.sdm.fit_species`; with 'auto' blocks the range is the largest over the feature sets compared,
    estimated once on the union of the species' cells, so every species and feature set shares one block size
    (each species may still fall back to finer blocks to keep >= 4 blocks per fold).
    """
    block_res = check_block_res(block_res)
    rule = parse_threshold(threshold)
    check_inner_folds(inner_folds)
    groups = [parse_feature_sets(f) for f in feature_sets]
    if not groups:
        raise BotaclipError("give at least one feature set with --features")
    labels = ["+".join(g) for g in groups]
    if len(set(labels)) != len(labels):
        raise BotaclipError(f"feature set given twice: {', '.join(labels)}")
    models = [check_model(m) for m in models]
    if not models:
        raise BotaclipError("give at least one model with --models")
    if kind is not None and kind not in KINDS:
        raise BotaclipError(f"unknown --kind {kind!r}; choose from {', '.join(KINDS)}")
    store = open_store(store, read_only=True)
    occ = as_occurrences(occurrences, **(columns or {}))
    source = StoreFeatures(store)
    all_names = sorted({n for g in groups for n in g})
    source.check(all_names)
    kind = kind or occ.infer_kind()
    explicit = species is not None and len(species) > 0
    species_list = list(species) if explicit else occ.species_names()
    for s in species_list:
        occ.check_species(s)
    tg = as_occurrences(target_group, **(columns or {})) if target_group is not None else None
    indexed = source.indexed_cells(all_names)
    extent = extent_of(indexed)
    feature_label = f"{'+'.join(all_names)!r} of {source.label}"

    labelled, skipped = {}, {}
    for s in species_list:
        try:
            labelled[s] = label_cells(occ, s, kind, indexed, source.resolution, feature_label,
                                      background=background, target_group=tg, max_uncertainty=max_uncertainty,
                                      min_presences=min_presences, extent=extent, seed=seed)
        except BotaclipError as exc:
            if explicit:
                raise
            skipped[s] = str(exc)
    if not labelled:
        raise BotaclipError(
            f"no species in {occ.path} has at least {min_presences} presences on indexed cells "
            f"(--min-presences); {len(skipped)} skipped"
        )
    # Read each feature set once for the union of all species' cells (and each fold's set if cross-fitted).
    needed = np.unique(np.concatenate([lab.h3 for lab in labelled.values()]))
    cross_fits = cross_fits_of(source, all_names, cross_fit)
    tables = {name: source.features([name], needed) for name in all_names}
    for cf in cross_fits.values():
        for name in cf.fold_sets:
            if name not in tables:
                tables[name] = source.features([name], needed)
    group_tables = {label: _join(tables, g) for g, label in zip(groups, labels)}
    range_ = None
    if block_res is None:
        range_ = inputs_range(needed, [X for X, _ in group_tables.values()], seed)
    # Split every species once (same folds for every feature set and model), before any model is fitted, so a
    # bad --block-res/--folds fails before work is done.
    designs = {s: design_folds(lab.h3, lab.y, folds, block_res, seed, cross_fits=cross_fits, range_=range_,
                               is_background=lab.is_background)
               for s, lab in labelled.items()}

    metrics = list(metric_names("regression" if kind == "abundance" else "binary"))
    rows: list[ComparisonRow] = []
    infos: list[SpeciesInfo] = []
    for s, lab in labelled.items():
        design = designs[s]
        fs = design.folds
        rows_idx = np.searchsorted(needed, lab.h3)
        notes = list(lab.notes) + list(design.notes)
        for g, label in zip(groups, labels):
            Xall, cols = group_tables[label]
            X, kept, dropped = drop_uninformative_columns(Xall[rows_idx], cols)
            notes += [f"{label}: {d}" for d in dropped]
            if any(n in design.cross_fitted for n in g):
                X = [_join(tables, _fold_group(g, design, k))[0][rows_idx][:, kept] for k in range(fs.n_folds)]
            for model in models:
                if progress:
                    progress(f"{s} | {label} | {model}")
                cv = cross_validate(X, lab.y, fs, model, lab.task, lab.is_background, seed, n_jobs,
                                    threshold=rule, inner_folds=inner_folds)
                for f in cv.folds:
                    if f.skipped:
                        notes.append(f"{label} | {model}: fold {f.fold} skipped: {f.skipped}")
                    elif f.note:
                        notes.append(f"{label} | {model}: fold {f.fold}: {f.note}")
                summary = cv.summary()
                for m in metrics:
                    rows.append(ComparisonRow(s, label, model, m, cv.values(m), summary[m]["mean"],
                                              summary[m]["sd"]))
        infos.append(SpeciesInfo(s, kind, lab.n_presences, int(lab.h3.size), fs.block_res, fs.n_blocks,
                                 sorted(set(notes), key=notes.index), fs.describe(), list(design.cross_fitted)))

    paired: list[PairedComparison] = []
    sp = [i.species for i in infos]
    for model in models:
        for metric in metrics:
            lookup = {(r.species, r.features): r.mean for r in rows if r.model == model and r.metric == metric}
            for a, b in itertools.combinations(labels, 2):
                res = paired_comparison([lookup[(s, a)] for s in sp], [lookup[(s, b)] for s in sp], metric)
                paired.append(PairedComparison(model, metric, a, b, **res))

    result = ComparisonResult(kind, labels, models, metrics, rows, infos, skipped, paired, folds, seed,
                              threshold_rule=None if kind == "abundance" else str(rule),
                              block_res="auto" if block_res is None else str(block_res),
                              autocorrelation=None if range_ is None else range_.to_dict())
    if out is not None:
        result.files = write_reports(result, out)
    return result


def _join(tables: dict[str, tuple[np.ndarray, list[str]]], names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Feature sets joined on the cell (all read for the same cells), columns prefixed when there are several."""
    if len(names) == 1:
        return tables[names[0]]
    X = np.hstack([tables[n][0] for n in names])
    return X, [f"{n}.{c}" for n in names for c in tables[n][1]]


def _fold_group(names: Sequence[str], design, k: int) -> list[str]:
    """``names`` with every cross-fitted set replaced by fold k's."""
    out = list(names)
    for name in design.cross_fitted:
        out = design.cross_fit.fold_names(out, name, k)
    return out


def _f(v, digits: int = 3) -> str:
    return "nan" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def write_reports(result: ComparisonResult, out: str | Path) -> list[str]:
    """Write comparison.csv, report.md and report.json into ``out`` (each written atomically)."""
    from botaclip.sdm.persist import _atomic_write, _json_default

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BotaclipError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    table = result.table()
    header = ["species", "features", "model", "n_presences", "n_samples"]
    for m in result.metrics:
        header += [f"{m}_mean", f"{m}_sd", f"{m}_folds"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, extrasaction="ignore")
    w.writeheader()
    for rec in table:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) and np.isfinite(v) else ("" if isinstance(v, float)
                                                                                    else v))
                    for k, v in rec.items()})
    _atomic_write(out / "comparison.csv", lambda p: Path(p).write_text(buf.getvalue()))
    _atomic_write(out / "report.json",
                  lambda p: Path(p).write_text(json.dumps(result.to_dict(), indent=2, default=_json_default)))
    _atomic_write(out / "report.md", lambda p: Path(p).write_text(markdown_report(result)))
    return [str(out / n) for n in ("comparison.csv", "report.md", "report.json")]


def markdown_report(result: ComparisonResult) -> str:
    """The comparison as a Markdown document: settings, means over species, paired tests, per-species table."""
    lines = ["# SDM comparison", "",
             f"Kind: {result.kind}; feature sets: {', '.join(result.feature_sets)}; models: "
             f"{', '.join(result.models)}; {result.folds}-fold spatial block CV (seed {result.seed}); "
             f"{len(result.species)} species.", "",
             "Every feature set and model was evaluated on the same cells and the same spatial folds for each "
             "species. Values: mean over species of the per-species mean over folds (sd over species).", ""]
    lines += _design_lines(result)
    lines += ["## Mean over species", ""]
    means = result.means()
    lines.append("| features | model | " + " | ".join(result.metrics) + " |")
    lines.append("|---|---|" + "---|" * len(result.metrics))
    for fs in result.feature_sets:
        for model in result.models:
            cells = [f"{_f(means[m][f'{fs} | {model}']['mean'])} ({_f(means[m][f'{fs} | {model}']['sd'])})"
                     for m in result.metrics]
            lines.append(f"| {fs} | {model} | " + " | ".join(cells) + " |")
    if result.paired:
        lines += ["", "## Paired comparison between feature sets", "",
                  "Wins: species where the feature set scores better (lower for MAE). p: two-sided Wilcoxon "
                  "signed-rank test on the per-species means.", "",
                  "| model | metric | A | B | mean A | mean B | wins A | wins B | ties | p |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for p in result.paired:
            lines.append(f"| {p.model} | {p.metric} | {p.a} | {p.b} | {_f(p.mean_a)} | {_f(p.mean_b)} | "
                         f"{p.wins_a} | {p.wins_b} | {p.ties} | {_f(p.p_value, 4)} |")
    lines += ["", "## Per species", "",
              "| species | presences | features | model | " + " | ".join(result.metrics) + " |",
              "|---|---|---|---|" + "---|" * len(result.metrics)]
    for rec in result.table():
        vals = [f"{_f(rec.get(f'{m}_mean'))} ± {_f(rec.get(f'{m}_sd'))}" for m in result.metrics]
        lines.append(f"| {rec['species']} | {rec['n_presences']} | {rec['features']} | {rec['model']} | "
                     + " | ".join(vals) + " |")
    notes = [(s.species, n) for s in result.species for n in s.notes]
    if notes or result.skipped_species:
        lines += ["", "## Notes", ""]
        lines += [f"- {s}: {n}" for s, n in notes]
        lines += [f"- {s}: skipped ({why})" for s, why in result.skipped_species.items()]
    lines += ["", "## Spatial blocks", "", "| species | folds |", "|---|---|"]
    lines += [f"| {s.species} | {s.folds} |" for s in result.species]
    return "\n".join(lines) + "\n"


def _design_lines(result: ComparisonResult) -> list[str]:
    """How folds, blocks and thresholds were chosen, for the top of the report."""
    lines = []
    if result.threshold_rule is not None:
        lines.append(f"- Threshold (TSS, sensitivity, specificity, F1): rule `{result.threshold_rule}`, chosen in "
                     "each outer fold on inner spatial-block out-of-fold predictions of its training part, never "
                     "on in-sample scores.")
    auto = result.autocorrelation
    if result.block_res == "auto" and auto is not None:
        from botaclip.sdm.autocorrelation import format_distance

        lines.append(f"- Blocks: `--block-res auto`; estimated autocorrelation range of the inputs "
                     f"{format_distance(auto['range_m'])} (median over the leading principal components, exponential "
                     f"variogram, {auto['n_points']} cells); each species' resolution is below.")
    elif result.block_res == "auto":
        lines.append("- Blocks: `--block-res auto`, but no autocorrelation range could be estimated; the "
                     "coarsest resolution with >= 4 blocks per fold was used.")
    else:
        lines.append(f"- Blocks: H3 resolution {result.block_res} (given).")
    crossfitted = sorted({n for s in result.species for n in s.cross_fitted})
    if crossfitted:
        lines.append(f"- Cross-fitted: {', '.join(crossfitted)}: for species whose cells overlap the relevés that "
                     "trained the adapters, folds follow the adapters' folds and each test fold is scored on "
                     "features of the adapter that never saw it.")
    return lines + [""] if lines else []
