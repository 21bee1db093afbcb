"""`botaclip sdm`: fit, compare and apply species distribution models on feature-store features.

Options map one to one onto the fields of :mod:`botaclip.sdm.config`; their defaults are read from there.
"""

from __future__ import annotations

import math
from pathlib import Path

import click

from botaclip.config import default
from botaclip.errors import InvalidInputError
from botaclip.sdm.binning import DEFAULT_MAX_BIN
from botaclip.sdm.config import (
    ENSEMBLE_RULES,
    CompareConfig,
    EvaluationConfig,
    FitConfig,
    OccurrenceColumns,
    PredictConfig,
    SamplingConfig,
)
from botaclip.sdm.maxent import MAX_PRODUCT_COLUMNS
from botaclip.sdm.models import MODEL_NAMES

_KINDS = ["presence-absence", "presence-only", "abundance"]


def _model_param_options() -> list:
    """The random forest's and the logistic model's hyperparameter options (config: rf_params, logistic_params)."""
    return [
        click.option("--rf-params", default=None,
                     help="Random forest hyperparameters over the defaults, KEY=VALUE separated by commas: "
                          "n_estimators (trees, 300), min_samples_leaf, max_samples (share of the rows per tree; "
                          "default: a bootstrap of all), engine (sklearn: exact splits, as in the paper; lightgbm: "
                          "LightGBM's rf boosting on 63 bins). E.g. 'max_samples=0.5'."),
        click.option("--logistic-params", default=None,
                     help="Logistic hyperparameters over the defaults, KEY=VALUE separated by commas: C (inverse "
                          "L2 penalty, 1), solver (newton-cholesky or lbfgs), tol, warm_start (start each fold's "
                          "fit from the previous one's coefficients: true or false). E.g. 'solver=lbfgs'."),
    ]


_INNER_FOLDS_HELP = ("Inner folds per outer fold on which the threshold (and LightGBM's rounds) are chosen: N of "
                     "the other outer folds, ring neighbours first, each predicted by a model fitted without it and "
                     "the test fold. Default: all K-1, each inner fit serving the 2 outer folds it leaves out "
                     "(K(K-1)/2 fits). Under 4 outer folds: the training part's blocks dealt into N (default 3).")


def _occurrence_options(f):
    """Options shared by fit and compare: sampling, evaluation and occurrence columns."""
    s, e = SamplingConfig, EvaluationConfig
    opts = [
        click.option("--kind", type=click.Choice(_KINDS), default=None,
                     help="Kind of data [default: inferred: relevé/site tables -> presence-absence (abundance if "
                          "the value column is a count), absences in the status column -> presence-absence, "
                          "else presence-only]."),
        click.option("--folds", type=int, default=default(e, "folds"), show_default=True,
                     help="Number of spatial CV folds."),
        click.option("--block-res", default=default(e, "block_res"), show_default=True,
                     help="H3 resolution of the spatial blocks, or 'auto': the resolution whose cell edge is closest "
                          "to the autocorrelation range of the features (variogram of their leading principal "
                          "components), keeping >= 4 blocks per fold."),
        click.option("--threshold", default=default(e, "threshold"), show_default=True,
                     help="Threshold rule for TSS, sensitivity, specificity, F1 and binary maps: maxtss, senspec "
                          "(sensitivity = specificity), p10 (10th percentile of presences) or a value in [0, 1]; "
                          "chosen on out-of-fold predictions, never in-sample."),
        click.option("--inner-folds", type=int, default=default(e, "inner_folds"), help=_INNER_FOLDS_HELP),
        click.option("--early-stopping/--no-early-stopping", default=default(e, "early_stopping"),
                     show_default=True,
                     help="LightGBM: stop boosting when the inner CV's held-out AUC has not improved for 30 rounds "
                          "(at most n_estimators); without it, n_estimators rounds (150, see --lightgbm-params)."),
        click.option("--lightgbm-params", default=None,
                     help="LightGBM hyperparameters over the defaults, KEY=VALUE separated by commas: n_estimators "
                          "(rounds), learning_rate, num_leaves, min_child_samples, subsample, colsample_bytree, "
                          f"reg_lambda, max_bin (histogram bins per feature, default {DEFAULT_MAX_BIN}), neg_subsample "
                          "(share of the background per tree, presence-only), min_neg_per_tree (its floor in cells, "
                          "default 500; 0: "
                          "none), early_stopping_rounds (patience), stop_on (auc or loss). E.g. "
                          "'max_bin=255,n_estimators=300'."),
        *_model_param_options(),
        click.option("--bin-once/--bin-per-fit", default=default(e, "bin_once"), show_default=True,
                     help="LightGBM: bin each feature set once (bin edges from all the samples, no labels; in sdm "
                          "compare over every species' cells) and reuse the bins for every fit of the "
                          "cross-validation, or bin each fit's rows anew."),
        click.option("--background", type=int, default=default(s, "background"), show_default=True,
                     help="Background cells for presence-only data (all indexed cells if fewer)."),
        click.option("--target-group", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Occurrence file whose cells are the background (target-group background)."),
        click.option("--max-uncertainty", type=float, default=None,
                     help="Drop records with coordinate uncertainty above this (metres)."),
        click.option("--min-presences", type=int, default=default(s, "min_presences"), show_default=True,
                     help="Fewest presence cells (after cleaning) a species needs."),
        click.option("--seed", type=int, default=default(e, "seed"), show_default=True,
                     help="Seed of folds, background and models (>= 0)."),
        click.option("--jobs", type=int, default=default(e, "jobs"),
                     help="Parallel jobs: worker processes over species x feature sets (compare) or threads of a "
                          "fit (fit) [default: all cores]."),
        click.option("--pca", type=int, default=default(e, "pca"),
                     show_default=True,
                     help="Fit models on this many leading principal components of the embedding feature sets "
                          "(fitted on each training part only; scalar covariates are kept as they are); 0: all "
                          "dimensions."),
        click.option("--extra-pcs", type=int, default=default(e, "extra_pcs"), show_default=True,
                     help="LightGBM: add this many leading principal components of the embeddings (fitted on "
                          "each training part only) as columns next to the embedding columns; 0: none; not with --pca."),
        click.option("--maxent-features", default=default(e, "maxent_features"), show_default=True,
                     help="Maxent feature classes: 'auto' (maxnet's rule from the number of presences, no products "
                          f"above {MAX_PRODUCT_COLUMNS} columns) or letters of l (linear), q (quadratic), "
                          "p (product), h (hinge), t (threshold)."),
        click.option("--maxent-beta", type=float, default=default(e, "maxent_beta"), show_default=True,
                     help="Maxent regularisation multiplier (higher: smoother, fewer features)."),
        click.option("--importance", is_flag=True, default=default(e, "importance"),
                     help="Permutation importance on the held-out folds: an embedding set is one group, each scalar "
                          "covariate its own (report, importance.png; weights the area of applicability)."),
        click.option("--importance-repeats", type=int, default=default(e, "importance_repeats"),
                     show_default=True, help="Permutations per group and fold."),
        click.option("--lat-col", default=None, help="Latitude (or northing with --crs) column."),
        click.option("--lng-col", default=None, help="Longitude (or easting with --crs) column."),
        click.option("--species-col", default=None, help="Species column [default: species/scientificName]."),
        click.option("--value-col", default=None,
                     help="Value column (count or cover) [default: individualCount/cover]."),
        click.option("--status-col", default=None, help="Presence/absence column [default: occurrenceStatus]."),
        click.option("--site-col", default=None, help="Plot/site id column [default: releve_id/plot_id/site_id]."),
        click.option("--crs", default=None, help="CRS of the coordinate columns, e.g. EPSG:2154 [default: WGS84]."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _sampling_and_evaluation(kw: dict) -> dict:
    """The options that are fields of the sampling, evaluation and column configs (by name)."""
    from dataclasses import fields

    names = {f.name for cls in (SamplingConfig, EvaluationConfig, OccurrenceColumns) for f in fields(cls)}
    return {k: v for k, v in kw.items() if k in names and k != "columns"}


def _fmt(v, digits=3) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


@click.group()
def sdm() -> None:
    """Fit, compare and apply species distribution models (spatial-block CV, LightGBM/RF/logistic/Maxent and
    their ensembles)."""


@sdm.command("fit")
@click.option("--store", "store_path", required=True, type=click.Path(path_type=Path), help="Feature store directory.")
@click.option("--occurrences", required=True, type=click.Path(path_type=Path),
              help="Occurrence file: CSV/TSV, Parquet, GeoParquet or GeoPackage (Darwin Core names recognised).")
@click.option("--species", required=True, help="Species to model (exact name in the file).")
@click.option("--features", default="botaclip", show_default=True,
              help="Feature set(s) of the store, comma-separated to join them on the cell.")
@click.option("--model", type=click.Choice(list(MODEL_NAMES)), default=default(FitConfig, "model"),
              show_default=True,
              help="Model: gradient boosting, random forest, standardised L2 logistic regression, or Maxent "
                   "(elapid; pip install 'botaclip[maxent]').")
@click.option("--models", default=None,
              help="With --ensemble: the members, comma-separated [default: lightgbm,rf,logistic].")
@click.option("--ensemble", type=click.Choice(list(ENSEMBLE_RULES)), default=None,
              help="Fit and save an ensemble of --models: the mean (or CV-AUC-weighted mean) of their "
                   "rank-normalised suitabilities.")
@click.option("--response-curves", is_flag=True,
              help="Draw response.png: suitability along each scalar covariate, others at their medians.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output directory for the model, CV metrics and map [default: sdm_<species>_<model>].")
@click.option("--predictions", "predictions_name", default=None,
              help="Name of the predictions table written to the store [default: sdm_<species>].")
@click.option("--no-predictions", is_flag=True, help="Do not write predictions into the store.")
@click.option("--no-map", is_flag=True, help="Do not draw map.png.")
@_occurrence_options
def fit_cmd(store_path, occurrences, species, features, model, models, ensemble, response_curves, out,
            predictions_name, no_predictions, no_map, **kw):
    """Cross-validate and fit an SDM for one species; save the model, predictions and a map."""
    from botaclip.sdm import fit_species
    from botaclip.sdm.fit import slug

    res = fit_species(
        store_path, occurrences, species, features=features, model=model, models=models, ensemble=ensemble,
        response_curves=response_curves, out=out or Path(f"sdm_{slug(species)}_{ensemble and 'ensemble' or model}"),
        predictions=False if no_predictions else (predictions_name or True), write_map=not no_map,
        **_sampling_and_evaluation(kw),
    )
    _print_fit(res, store_path)


def _print_fit(res, store_path) -> None:
    negatives = (f"{res.n_background} background cells" if res.kind == "presence-only"
                 else f"{res.n_absences} absence cells")
    click.echo(f"{res.species}: {res.kind}, {res.model} on {'+'.join(res.feature_sets)} ({res.n_features} features)")
    if res.kind == "abundance":
        click.echo(f"{res.n_presences + res.n_absences} sample cells ({res.n_presences} with the species)")
    else:
        click.echo(f"{res.n_presences} presence cells, {negatives}")
    for line in res.cleaning.lines():
        click.echo(line)
    click.echo(res.folds_description)
    names = list(res.summary())
    click.echo("fold  n_test  pres  " + "  ".join(f"{m:>11}" for m in names))
    for f in res.cv.folds:
        vals = "  ".join(f"{_fmt(f.metrics.get(m)):>11}" for m in names) if not f.skipped else f"skipped: {f.skipped}"
        click.echo(f"{f.fold:>4}  {f.n_test:>6}  {f.n_test_presences:>4}  {vals}")
    summ = res.summary()
    click.echo("mean              " + "  ".join(f"{_fmt(summ[m]['mean']) + ' ± ' + _fmt(summ[m]['sd'], 2):>11}"
                                                 for m in names))
    for note in res.notes:
        click.echo(f"note: {note}")
    if res.threshold_rule is not None:
        click.echo(f"threshold rule {res.threshold_rule}: chosen per fold on inner out-of-fold predictions; "
                   f"final model {_fmt(res.threshold, 4)} (on the outer out-of-fold predictions)")
    for model, groups in res.importance.items():
        click.echo(f"permutation importance ({model}, drop in {'AUC' if res.kind != 'abundance' else 'Spearman'} "
                   "on held-out folds): " + ", ".join(f"{g} {_fmt(v['mean'])}" for g, v in groups.items()))
    if res.aoa:
        click.echo(f"area of applicability: DI threshold {_fmt(res.aoa['threshold'])} (training cells inside "
                   f"{100 * res.aoa['train_inside']:.0f} %)")
    click.echo(f"model: {res.out_dir}")
    for fig in res.figures:
        click.echo(f"figure: {fig}")
    if res.predictions_table:
        click.echo(f"predictions: table {res.predictions_table} in {store_path} ({res.n_predicted} cells)")
    if res.map_path:
        click.echo(f"map: {res.map_path}")


@sdm.command("compare")
@click.option("--store", "store_path", required=True, type=click.Path(path_type=Path), help="Feature store directory.")
@click.option("--occurrences", required=True, type=click.Path(path_type=Path),
              help="Occurrence file: CSV/TSV, Parquet, GeoParquet or GeoPackage (Darwin Core names recognised).")
@click.option("--species", "species", multiple=True, help="Species to compare on (repeat for several).")
@click.option("--all", "all_species", is_flag=True,
              help="Every species with at least --min-presences presences (others are listed as skipped).")
@click.option("--features", "features", multiple=True, required=True,
              help="A feature set to compare; repeat for each, comma-separated names are joined on the cell.")
@click.option("--models", default=",".join(default(CompareConfig, "models")), show_default=True,
              help="Comma-separated models: lightgbm, rf, logistic, maxent.")
@click.option("--ensemble", type=click.Choice(list(ENSEMBLE_RULES)), default=None,
              help="Also score the ensemble of --models: mean or CV-AUC-weighted mean of rank-normalised "
                   "suitabilities (weights from training folds only).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("sdm_compare"),
              show_default=True, help="Directory for comparison.csv, report.md and report.json.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default=default(CompareConfig, "engine"),
              show_default=True, help="local: species over worker processes here; ray: over a Ray cluster.")
@click.option("--ray-address", default=None,
              help="With --engine ray: the cluster to join (host:port or 'auto') [default: start a local one].")
@_occurrence_options
def compare_cmd(store_path, occurrences, species, all_species, features, models, ensemble, out, engine, ray_address,
                **kw):
    """Compare feature sets and models over species on identical spatial folds; write a report."""
    from botaclip.sdm import compare

    if species and all_species:
        raise InvalidInputError("give --species NAME ... or --all, not both")
    if not species and not all_species:
        raise InvalidInputError("name the species to compare with --species NAME (repeatable) or use --all")
    res = compare(store_path, occurrences, list(features), species=list(species) or None, models=models,
                  ensemble=ensemble, out=out,
                  engine=engine, ray_address=ray_address, progress=lambda msg: click.echo(f"  {msg}", err=True),
                  **_sampling_and_evaluation(kw))
    _print_comparison(res)
    from botaclip.sdm.ranking import summary_lines

    for line in summary_lines(res):  # the representation benchmark (tables in report.md)
        click.echo(line)


def _print_comparison(res) -> None:
    metrics = res.metrics
    click.echo(f"{len(res.species)} species, {res.kind}, {res.folds}-fold spatial block CV, identical folds"
               + (f", threshold rule {res.threshold_rule}" if res.threshold_rule else ""))
    if res.autocorrelation is not None:
        from botaclip.sdm.autocorrelation import format_distance

        click.echo(f"autocorrelation range of the inputs: {format_distance(res.autocorrelation['range_m'])}")
    for how in sorted({s.folds for s in res.species}):
        click.echo(f"  {how}")
    w = max(9, *(len(m) for m in res.models))
    head = f"{'species':<28} {'features':<20} {'model':<{w}} " + " ".join(f"{m:>13}" for m in metrics)
    click.echo(head)
    for rec in res.table():
        vals = " ".join(f"{_fmt(rec.get(m + '_mean')) + '±' + _fmt(rec.get(m + '_sd'), 2):>13}" for m in metrics)
        click.echo(f"{rec['species'][:28]:<28} {rec['features'][:20]:<20} {rec['model']:<{w}} {vals}")
    click.echo("mean over species:")
    means = res.means()
    for fs in res.feature_sets:
        for model in res.models:
            vals = " ".join(f"{_fmt(means[m][f'{fs} | {model}']['mean']):>13}" for m in metrics)
            click.echo(f"{'':<28} {fs[:20]:<20} {model:<{w}} {vals}")
    headline = {"auc", "tss", "boyce", "spearman", "mae"}
    for p in (p for p in res.paired if p.metric in headline):
        click.echo(f"{p.model} {p.metric}: {p.a} vs {p.b}: wins {p.wins_a}-{p.wins_b} (ties {p.ties}), "
                   f"mean diff {_fmt(p.mean_difference)}, Wilcoxon p = {_fmt(p.p_value, 4)}")
    for s, why in res.skipped_species.items():
        click.echo(f"skipped {s}: {why}")
    click.echo(f"wrote {', '.join(res.files)} (every metric and paired test in report.md)")


@sdm.command("predict")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model directory written by `botaclip sdm fit --out`.")
@click.option("--store", "store_path", required=True, type=click.Path(path_type=Path), help="Feature store directory.")
@click.option("--region", default=default(PredictConfig, "region"),
              help="Only these cells: an H3 cell, a bbox west,south,east,north (WGS84 degrees), or a polygon file.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output file: .parquet (cells), .gpkg (hexagons), .tif (Cloud Optimized GeoTIFF), .png (map) "
                   "or .html (interactive map page, self-contained).")
@click.option("--pixel-m", type=float, default=default(PredictConfig, "pixel_m"),
              help="Pixel size of a .tif in metres [default: half the H3 edge length].")
@click.option("--crs", default=default(PredictConfig, "crs"),
              help="Projection of a .tif: a projected CRS in metres (EPSG:2154, EPSG:3035, WKT or PROJ string) "
                   "[default: the UTM zone of the cells' centre].")
@click.option("--binary", is_flag=True,
              help="Write 0/1 presence (column 'presence', uint8 raster) instead of suitability, at the model's "
                   "stored threshold.")
@click.option("--threshold", default=default(PredictConfig, "threshold"),
              help="With --binary: a rule (maxtss, senspec, p10: its out-of-fold value stored with the model) or a "
                   "value in [0, 1] instead of the stored threshold.")
@click.option("--force", is_flag=True, help="Write a .tif even above 100 million pixels.")
@click.option("--aoa/--no-aoa", default=default(PredictConfig, "aoa"), show_default=True,
              help="Dissimilarity index 'di' and flag 'inside_aoa' per cell (area of applicability, Meyer & "
                   "Pebesma 2021) in .parquet/.gpkg; cells outside are grey and hatched on a .png.")
def predict_cmd(model_dir, store_path, region, out, pixel_m, crs, binary, threshold, force, aoa):
    """Predict suitability (or presence, --binary) for every indexed cell with a saved model, streaming partition
    by partition."""
    from botaclip.sdm import predict

    config = PredictConfig(region=region, pixel_m=pixel_m, binary=binary, threshold=threshold, force=force, aoa=aoa,
                           crs=crs)
    res = predict(model_dir, store_path, out, config)
    extra = "".join(f", {k} {v}" for k, v in res.extra.items())
    what = "share present" if binary else "mean suitability"
    click.echo(f"wrote {res.path}: {res.n_cells} cells, {what} {res.mean:.4f}{extra}")
