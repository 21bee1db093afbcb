"""botaclip.sdm: species distribution models on feature-store embeddings.

Occurrences (CSV, Parquet, GeoParquet, GeoPackage; Darwin Core names) -> cleaned H3 cells -> features joined from
the store -> spatial-block cross-validation from the H3 hierarchy -> LightGBM / random forest / logistic models ->
metrics (ROC AUC, TSS, F1, continuous Boyce index, Spearman, MAE) -> comparisons, predictions, maps.

    from botaclip.sdm import fit_species, compare, predict
    res = fit_species("alps.store", "plots.csv", "Carex firma", features="botaclip", out="carex")
    cmp = compare("alps.store", "plots.csv", [["dofa"], ["botaclip"]], models=["lightgbm", "rf"], out="cmp")
    predict("carex", "alps.store", "carex.tif", pixel_m=50)
"""

from __future__ import annotations

from pathlib import Path

from botaclip.sdm.autocorrelation import AutocorrelationRange, autocorrelation_range
from botaclip.sdm.compare import ComparisonResult, PairedComparison, compare, paired_comparison
from botaclip.sdm.config import (
    CompareConfig,
    EvaluationConfig,
    FitConfig,
    OccurrenceColumns,
    PredictConfig,
    SamplingConfig,
)
from botaclip.sdm.crossfit import CrossFit
from botaclip.sdm.evaluate import CVResult, FoldResult, cross_validate
from botaclip.sdm.fit import FitResult, fit_species
from botaclip.sdm.folds import SpatialFolds, spatial_folds
from botaclip.sdm.metrics import (
    best_tss_threshold,
    boyce_curve,
    boyce_index,
    mae,
    p10_threshold,
    roc_auc,
    sens_spec_threshold,
    spearman,
    threshold_metrics,
    tss,
)
from botaclip.sdm.models import MODEL_NAMES, make_model
from botaclip.sdm.occurrences import KINDS, Occurrences, read_occurrences
from botaclip.sdm.persist import SavedModel, load_model, save_model
from botaclip.sdm.predict import PredictResult, Region
from botaclip.sdm.thresholds import THRESHOLD_RULES, ThresholdRule, parse_threshold


def predict(model_dir: str | Path, store, out: str | Path, config: PredictConfig | None = None,
            **options) -> PredictResult:
    """Apply the model saved in ``model_dir`` to every indexed cell of ``store`` and write ``out``: .parquet (h3,
    suitability), .gpkg (hexagons), .tif (Cloud Optimized GeoTIFF, ``pixel_m`` metres, local UTM or ``crs``),
    .png (map) or .html (interactive map page). Streams partition
    by partition. Settings: a :class:`PredictConfig` and/or its fields as keywords (they override ``config``):
    ``region`` (an H3 cell, a box 'west,south,east,north' in degrees, or a polygon file), ``pixel_m``,
    ``binary`` (0/1 presence instead of suitability, at the model's stored threshold or ``threshold``: a rule
    name, 'maxtss', 'senspec', 'p10', whose out-of-fold value was stored with the model, or a value in [0, 1]),
    ``force`` (a .tif above 100 million pixels is refused without it).
    """
    from botaclip.config import build
    from botaclip.sdm.design import open_store
    from botaclip.sdm.predict import predict_to_file

    cfg = build(PredictConfig, config, **options)
    saved = load_model(model_dir)
    st = open_store(store, read_only=True)
    return predict_to_file(saved, st, out, cfg)


__all__ = [
    "fit_species", "compare", "predict", "FitResult", "ComparisonResult", "PairedComparison", "PredictResult",
    "paired_comparison", "cross_validate", "CVResult", "FoldResult", "spatial_folds", "SpatialFolds",
    "roc_auc", "tss", "best_tss_threshold", "threshold_metrics", "boyce_index", "boyce_curve", "spearman", "mae",
    "make_model", "MODEL_NAMES", "read_occurrences", "Occurrences", "KINDS", "load_model", "save_model",
    "SavedModel", "Region", "sens_spec_threshold", "p10_threshold", "THRESHOLD_RULES", "ThresholdRule",
    "parse_threshold", "autocorrelation_range", "AutocorrelationRange", "CrossFit", "FitConfig", "CompareConfig", "PredictConfig",
    "SamplingConfig", "EvaluationConfig", "OccurrenceColumns",
]
