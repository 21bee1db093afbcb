"""The reports of `sdm compare`: comparison.csv (one row per species x feature set x model), report.json (every
fold value and paired test) and report.md (the tables a paper needs, and how folds, blocks and thresholds were
chosen)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from botaclip.atomic import write_json, write_text
from botaclip.sdm.compare import ComparisonResult
from botaclip.sdm.design import check_out_dir
from botaclip.sdm.ranking import markdown_lines


def _f(v, digits: int = 3) -> str:
    return "nan" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def write_reports(result: ComparisonResult, out: str | Path) -> list[str]:
    """Write comparison.csv, report.md and report.json into ``out`` (each written atomically)."""
    out = check_out_dir(out)
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
    write_text(out / "comparison.csv", buf.getvalue())
    write_json(out / "report.json", result.to_dict())
    write_text(out / "report.md", markdown_report(result))
    files = [str(out / n) for n in ("comparison.csv", "report.md", "report.json")]
    if result.importance:
        from botaclip.sdm.importance import importance_chart, mean_over_species

        panels = {f"{fs} | {model}": groups for (fs, model), groups in mean_over_species(result.importance).items()}
        files.append(str(importance_chart(panels, out / "importance.png", _importance_metric(result))))
    return files


def _importance_metric(result: ComparisonResult) -> str:
    return "Spearman rho" if result.kind == "abundance" else "AUC"


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
    lines += markdown_lines(result)  # the representation benchmark: ranks, tests against the best, Friedman
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
    if result.importance:
        from botaclip.sdm.importance import markdown_lines as importance_lines

        lines += importance_lines(result.importance, _importance_metric(result))
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
