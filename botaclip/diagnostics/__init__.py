"""Embedding-space diagnostics: do habitats separate, is the backbone's geometry kept, is the embedding smooth
over the landscape? Reads features through the store (never runs the network, never imports torch).

    from botaclip.diagnostics import diagnose
    report = diagnose(store, ["dofa", "botaclip"], labels="cells.parquet", out_dir="diag")
    print(report.to_table()); report.to_dict()
"""

from botaclip.diagnostics.config import DiagnoseConfig
from botaclip.diagnostics.labels import CellLabels, read_labels
from botaclip.diagnostics.metrics import (
    PCA,
    davies_bouldin,
    distance_rank_correlation,
    fit_pca,
    geometry_kept,
    knn_label_accuracy,
    neighbourhood_overlap,
    silhouette_cosine,
)
from botaclip.diagnostics.report import DiagnosticsReport, diagnose
from botaclip.diagnostics.spatial import h3_ring1_pairs, morans_i

__all__ = [
    "PCA",
    "CellLabels",
    "DiagnoseConfig",
    "DiagnosticsReport",
    "davies_bouldin",
    "diagnose",
    "distance_rank_correlation",
    "fit_pca",
    "geometry_kept",
    "h3_ring1_pairs",
    "knn_label_accuracy",
    "morans_i",
    "neighbourhood_overlap",
    "read_labels",
    "silhouette_cosine",
]
