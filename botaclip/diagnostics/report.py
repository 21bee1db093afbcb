"""`diagnose`: the embedding-space diagnostics of several feature sets on the same cells, as one report.

Steps: find the cells every feature set covers -> draw a fixed-seed sample of them (labelled cells only when labels
are given) and a clustered spatial sample for Moran's I -> read only those cells, one feature set at a time ->
metrics on unit-normalised rows (cosine geometry) -> geometry kept against the reference (first) feature set ->
table, JSON, Markdown and PNG figures. Memory is bounded by the sample size, not by the store size.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from botaclip.config import build
from botaclip.diagnostics.config import N_PAIRS, DiagnoseConfig
from botaclip.diagnostics.labels import CellLabels, read_labels
from botaclip.diagnostics.metrics import (
    davies_bouldin,
    distance_rank_correlation,
    fit_pca,
    knn_vote_accuracy,
    neighbourhood_overlap,
    pair_cosine_distances,
    sample_pairs,
    silhouette_from_class_similarity,
)
from botaclip.diagnostics.neighbours import class_similarity_sums, cosine_knn, unit_rows
from botaclip.diagnostics.sources import FeatureSource, as_source
from botaclip.diagnostics.spatial import cluster_sample, h3_ring1_pairs, morans_i
from botaclip.errors import InvalidInputError, MissingDependencyError, param
from botaclip.progress import Progress, Silent
from botaclip.store.outputs import check_output_path

__all__ = ["N_PAIRS", "DiagnoseConfig", "DiagnosticsReport", "diagnose", "json_safe"]

N_MORAN_COMPONENTS = 3

# (key, column title, format) of the printed table, in order.
TABLE_COLUMNS = [
    ("dim", "dim", "{:d}"),
    ("effective_dim", "eff dim", "{:.2f}"),
    ("pc1_share", "PC1 share", "{:.3f}"),
    ("mean_cosine", "mean cos", "{:.3f}"),
    ("davies_bouldin", "Davies-Bouldin", "{:.3f}"),
    ("silhouette_cosine", "silhouette", "{:.3f}"),
    ("knn_accuracy", "kNN acc", "{:.3f}"),
    ("distance_spearman", "dist rho", "{:.3f}"),
    ("neighbour_overlap", "kNN overlap", "{:.3f}"),
    ("morans_i_pc1", "Moran PC1", "{:.3f}"),
    ("morans_i_pc2", "Moran PC2", "{:.3f}"),
    ("morans_i_pc3", "Moran PC3", "{:.3f}"),
]


def json_safe(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return fmt.format(value)


@dataclass
class DiagnosticsReport:
    """Diagnostics of feature sets on one sample of cells; `to_dict()` for JSON, `to_markdown()` for reports."""

    feature_sets: list[str]
    reference: str
    resolution: int | None
    k: int
    seed: int
    sample: dict[str, Any]
    labels: dict[str, Any] | None
    results: dict[str, dict[str, Any]]
    geometry: list[dict[str, Any]]
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    store: str | None = None
    elapsed_s: float = 0.0
    centered: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (NaN as null)."""
        return json_safe(asdict(self))

    def table_rows(self) -> list[list[str]]:
        """Header row then one row per feature set, values formatted as strings."""
        # Columns no feature set has (label metrics without labels, geometry with one set) are left out.
        columns = [(key, title, fmt) for key, title, fmt in TABLE_COLUMNS
                   if any(self.results[name].get(key) is not None for name in self.feature_sets)]
        rows = [["feature set"] + [title for _, title, _ in columns]]
        for name in self.feature_sets:
            result = self.results[name]
            rows.append([name] + [_fmt(result.get(key), fmt) for key, _, fmt in columns])
        return rows

    def to_table(self) -> str:
        """Fixed-width text table (feature set x diagnostic) for the terminal."""
        rows = self.table_rows()
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths)))
                 for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def key(self) -> str:
        """What the table's columns mean, one line per group of columns shown."""
        lines = [f"eff dim: participation ratio (sum l)^2 / sum l^2 of the PCA spectrum of the sampled "
                 f"{'centred ' if self.centered else ''}unit embeddings (D for an isotropic cloud, 1 when one axis "
                 "holds all variance); PC1 share: that axis' share of the variance; mean cos: mean cosine "
                 "similarity of random pairs of cells (near 1: a nearly collinear set, where raw cosine says little)."]
        if self.labels:
            lines.append(f"Davies-Bouldin (lower = classes better separated), silhouette (cosine, -1..1), kNN acc "
                         f"(k = {self.k}, leave-one-out, cosine; chance = {self.labels['majority_share']:.3f}).")
        if len(self.feature_sets) > 1:
            lines.append(f"dist rho (Spearman of pairwise cosine distances) and kNN overlap (share of the {self.k} "
                         f"nearest neighbours kept) against the reference {self.reference}; 1 = geometry kept.")
        lines.append("Moran PC1-3: Moran's I of the first principal components over H3 ring-1 neighbours "
                     "(about 0 = spatial noise, towards 1 = smooth over the landscape).")
        return "\n".join(lines)

    def summary_lines(self) -> list[str]:
        """Short lines on what was sampled and how labels joined."""
        s = self.sample
        lines = [
            f"cells common to {', '.join(self.feature_sets)}: {s['n_cells_common']}; sampled {s['n_sampled']} "
            f"(seed {self.seed}); spatial sample {s['n_spatial']} cells with {s['n_spatial_pairs']} H3 "
            f"neighbour pairs; {s['n_pairs']} cell pairs for distance correlation; k = {self.k}; "
            f"reference for geometry: {self.reference}"
            + ("; cosine centred (each set's mean vector subtracted first)" if self.centered else ""),
        ]
        if self.labels:
            lab = self.labels
            lines.append(
                f"labels: column {lab['column']!r} from {lab['source']}: {lab['n_rows']} rows "
                f"({lab['n_rows_dropped']} without label or location), {lab['n_cells']} cells, "
                f"{lab['n_cells_not_in_store']} of them not in the store (skipped), "
                f"{lab['n_conflicting_cells']} with conflicting labels (majority kept); "
                f"{lab['n_classes']} classes in the sample; kNN chance level (majority class) "
                f"{lab['majority_share']:.3f}"
            )
        return lines + list(self.notes)

    def to_markdown(self, heading_level: int = 2, relative_to: str | Path | None = None) -> str:
        """Markdown section: summary, the table, the pairwise geometry and the figures.

        Figure links are file names (for DIR/diagnostics.md) or, with `relative_to`, paths relative to that
        directory (for a report written elsewhere).
        """
        rows = self.table_rows()
        out = ["#" * heading_level + " Embedding-space diagnostics", ""]
        out += [f"- {line}" for line in self.summary_lines()]
        out += ["", "| " + " | ".join(rows[0]) + " |", "|" + "|".join(["---"] + ["---:"] * (len(rows[0]) - 1)) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        for line in self.key().splitlines():
            out += ["", line]
        if len(self.geometry) > 1:
            out += ["", "| feature set A | feature set B | distance Spearman | kNN overlap |", "|---|---|---:|---:|"]
            out += [f"| {g['a']} | {g['b']} | {_fmt(g['distance_spearman'], '{:.3f}')} | "
                    f"{_fmt(g['neighbour_overlap'], '{:.3f}')} |" for g in self.geometry]
        if self.figures:
            links = [Path(f).name if relative_to is None else os.path.relpath(f, relative_to) for f in self.figures]
            out += [""] + [f"![{Path(f).stem}]({link})" for f, link in zip(self.figures, links)]
        return "\n".join(out) + "\n"

    def write(self, out_dir: str | Path) -> list[Path]:
        """Write DIR/diagnostics.json and DIR/diagnostics.md; returns their paths."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path = out_dir / "diagnostics.json"
        md_path = out_dir / "diagnostics.md"
        json_path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        md_path.write_text(self.to_markdown())
        return [json_path, md_path]


def _sorted_sample(population: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if population.shape[0] <= n:
        return population
    return np.sort(population[rng.choice(population.shape[0], size=n, replace=False)])


def _join_labels(labels: CellLabels, common: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Labelled cells that are in `common` (sorted), their labels, and how many labelled cells are not."""
    in_store = np.isin(labels.h3, common)
    return labels.h3[in_store], labels.labels[in_store], int((~in_store).sum())


def diagnose(store: Any, feature_sets: list[str] | None = None, config: DiagnoseConfig | None = None, *,
             progress: Progress | None = None, **options: Any) -> DiagnosticsReport:
    """Embedding-space diagnostics of `feature_sets` on the cells they all cover.

    store: a `botaclip.store.Store` (opened read-only is enough) or a mapping {name: (h3 uint64[N], X[N, D])}.
    feature_sets: names; the first is the reference for "geometry kept" (default: every feature set in the store
        except SDM predictions, backbones first).
    config: a :class:`~botaclip.diagnostics.config.DiagnoseConfig` (default: its defaults); keyword ``options``
        set its fields by name: ``labels``, ``label_col``, ``sample``, ``seed``, ``k``, ``n_pairs``,
        ``centered``, ``umap``, ``out_dir``. Raw cosine over a nearly collinear set (a random-init backbone) is
        close to 1 everywhere; ``centered=True`` shows its structure.
    progress: a :class:`botaclip.progress.Progress` reporter (one counter step per feature set; default: silent).

    A bad option raises :class:`~botaclip.errors.InvalidInputError` naming it in ``.params``; an unknown one
    raises TypeError.
    """
    started = time.perf_counter()
    cfg = build(DiagnoseConfig, config, **options)
    progress = progress if progress is not None else Silent()
    if cfg.out_dir is not None:
        check_output_path(cfg.out_dir, what=param("out_dir"), is_dir=True)
    source: FeatureSource = as_source(store)
    names = _feature_set_names(source, feature_sets)
    sample = _draw_sample(source, names, cfg)
    want_umap = importlib.util.find_spec("umap") is not None if cfg.umap is None else cfg.umap
    views: dict[str, _SetView] = {}
    with progress.bar(len(names), "feature sets", "diagnostics") as bar:
        for name in names:
            views[name] = _diagnose_set(source, name, sample, cfg, want_umap and cfg.out_dir is not None)
            bar.update(1)
    results = {name: view.result for name, view in views.items()}
    geometry = _geometry(names, views, results)
    report = DiagnosticsReport(
        feature_sets=names, reference=names[0], resolution=source.resolution, k=cfg.k, seed=cfg.seed,
        sample={"requested": cfg.sample, "n_cells_common": int(sample.common.shape[0]),
                "n_sampled": int(sample.main_cells.shape[0]), "n_spatial": int(sample.spatial_cells.shape[0]),
                "n_spatial_pairs": int(sample.spatial_i.shape[0]), "n_pairs": int(sample.pair_i.shape[0])},
        labels=sample.labels_info, results=results, geometry=geometry, notes=sample.notes,
        store=source.description, centered=cfg.centered,
    )
    if cfg.out_dir is not None:
        report.figures = _write_figures(Path(cfg.out_dir), views, sample, cfg.label_col)
        if not want_umap:
            report.notes.append("UMAP figure skipped: install umap-learn to add it")
    report.elapsed_s = round(time.perf_counter() - started, 2)
    if cfg.out_dir is not None:
        report.write(cfg.out_dir)
    return report


def _feature_set_names(source: FeatureSource, feature_sets: list[str] | None) -> list[str]:
    """The feature sets to compare, checked against the source (default: all but predictions, backbones first)."""
    if feature_sets is not None and not list(feature_sets):
        raise InvalidInputError(f"no feature set named (an empty {param('feature_sets')}); name some, or leave it "
                                "out for every feature set")
    available = source.names()
    if feature_sets:
        names = list(feature_sets)
    else:
        # Backbones first, so that the default reference for "geometry kept" is the frozen backbone; SDM
        # predictions are outputs, not features.
        rank = {"backbone": 0, "botaclip": 1, "imported": 2, "covariates": 3}
        names = sorted((n for n in available if source.kind(n) != "predictions"),
                       key=lambda n: rank.get(source.kind(n), 2))
    if not names:
        raise InvalidInputError(f"store {source.description} has no feature sets; run `botaclip index` first")
    unknown = [n for n in names if n not in available]
    if unknown:
        raise InvalidInputError(
            f"unknown feature set {unknown[0]!r} in {source.description} "
            f"(available: {', '.join(available) or 'none'})"
        )
    if len(set(names)) != len(names):
        raise InvalidInputError(f"feature set listed twice in {', '.join(names)}")
    return names


@dataclass
class _Sample:
    """The cells every feature set is read on: the main sample (labels, kNN, pairs), the spatial sample (Moran's
    I) and their union (read once per set)."""

    cells_by_set: dict[str, np.ndarray]
    common: np.ndarray
    main_cells: np.ndarray
    spatial_cells: np.ndarray
    spatial_i: np.ndarray
    spatial_j: np.ndarray
    pair_i: np.ndarray
    pair_j: np.ndarray
    union_cells: np.ndarray
    main_pos: np.ndarray
    spatial_pos: np.ndarray
    codes: np.ndarray | None = None  # class code of each main cell (with labels)
    classes: np.ndarray | None = None
    labels_info: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _common_cells(source: FeatureSource, names: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    cells_by_set = {name: source.cells(name) for name in names}
    common = cells_by_set[names[0]]
    for name in names[1:]:
        common = np.intersect1d(common, cells_by_set[name], assume_unique=True)
    if common.shape[0] == 0:
        raise InvalidInputError(f"feature sets {', '.join(names)} share no cells; compare sets indexed on one region")
    return cells_by_set, common


def _draw_sample(source: FeatureSource, names: list[str], cfg: DiagnoseConfig) -> _Sample:
    """The fixed-seed samples of the common cells (of the labelled ones, with labels)."""
    cells_by_set, common = _common_cells(source, names)
    labels = cfg.labels
    population, labelled, labels_info = common, None, None
    if labels is not None:
        if not isinstance(labels, CellLabels):
            labels = read_labels(labels, label_col=cfg.label_col, resolution=source.resolution)
        labelled, labels_info = _labelled_cells(labels, common, names, source.resolution)
        population = labelled[0]
    rng = np.random.default_rng(cfg.seed)
    main_cells = _sorted_sample(population, cfg.sample, rng)
    if main_cells.shape[0] < cfg.k + 1:
        raise InvalidInputError(
            f"only {main_cells.shape[0]} {'labelled ' if labels is not None else ''}cells in common; "
            f"diagnostics need at least {cfg.k + 1}"
        )
    codes = classes = None
    if labelled is not None:
        codes, classes = _classes(labelled, main_cells, cfg.label_col, labels_info)
    spatial_cells = cluster_sample(common, cfg.sample, rng)
    spatial_i, spatial_j = h3_ring1_pairs(spatial_cells)
    pair_i, pair_j = sample_pairs(main_cells.shape[0], cfg.n_pairs, rng)
    union_cells = np.union1d(main_cells, spatial_cells)
    sample = _Sample(cells_by_set, common, main_cells, spatial_cells, spatial_i, spatial_j, pair_i, pair_j,
                     union_cells, np.searchsorted(union_cells, main_cells), np.searchsorted(union_cells, spatial_cells),
                     codes, classes, labels_info)
    if spatial_i.shape[0] == 0:
        sample.notes.append("no two sampled cells are H3 neighbours, so Moran's I is undefined")
    return sample


def _labelled_cells(labels: CellLabels, common: np.ndarray, names: list[str], resolution: int | None
                    ) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """The labelled cells among ``common`` and their labels, and what the report says about the join."""
    labelled, labelled_values, n_not_in_store = _join_labels(labels, common)
    if labelled.shape[0] == 0:
        raise InvalidInputError(
            f"none of the {len(labels)} labelled cells in {labels.source} is in feature sets "
            f"{', '.join(names)} (store resolution {resolution}); do the labels cover the indexed region?"
        )
    info = {
        "source": labels.source,
        "column": labels.column,
        "n_rows": labels.n_rows,
        "n_rows_dropped": labels.n_rows_dropped,
        "n_cells": len(labels),
        "n_cells_in_store": int(labelled.shape[0]),
        "n_cells_not_in_store": n_not_in_store,
        "n_conflicting_cells": labels.n_conflicting_cells,
    }
    return (labelled, labelled_values), info


def _classes(labelled: tuple[np.ndarray, np.ndarray], main_cells: np.ndarray, label_col: str,
             labels_info: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Class codes of the sampled cells and the classes (at least two); class counts go into ``labels_info``."""
    pos = np.searchsorted(labelled[0], main_cells)
    classes, codes = np.unique(labelled[1][pos], return_inverse=True)
    if classes.shape[0] < 2:
        raise InvalidInputError(
            f"labels column {label_col!r} has fewer than two classes on the sampled cells "
            f"(only {classes[0]!r}); label structure needs at least two"
        )
    counts = np.bincount(codes)
    labels_info.update(
        n_classes=int(classes.shape[0]),
        majority_share=float(counts.max() / counts.sum()),
        class_counts={str(c): int(n) for c, n in zip(classes, counts)},
    )
    return codes, classes


@dataclass
class _SetView:
    """One feature set's metrics and what its figures and the pairwise geometry need."""

    result: dict[str, Any]
    knn: np.ndarray
    distances: np.ndarray
    pca_xy: np.ndarray
    pca_axes: tuple[str, str]
    spatial_scores: np.ndarray
    variance: np.ndarray
    umap_xy: np.ndarray | None = None


def _unit_features(source: FeatureSource, name: str, cells: np.ndarray, centered: bool, notes: list[str]
                   ) -> np.ndarray:
    """The unit-normalised rows of feature set ``name`` on ``cells`` (covariates standardised first, missing
    values at the column mean, embeddings centred when ``centered``)."""
    X = source.read(name, cells)
    if not source.is_embedding(name):
        # Named columns (covariates) come in different units; cosine geometry needs them on one scale.
        mean, std = np.nanmean(X, axis=0), np.nanstd(X, axis=0)
        X = (X - mean) / np.where(std > 0, std, 1.0)
    missing = ~np.isfinite(X)
    if missing.any():
        # Missing covariate values sit at the (standardised) column mean rather than dropping the cell,
        # so that every feature set is still compared on the same cells.
        notes.append(f"{name}: {int(missing.any(axis=1).sum())} sampled cells with missing values, "
                     "filled with the column mean")
        with np.errstate(all="ignore"):
            fill = 0.0 if not source.is_embedding(name) else np.nanmean(X, axis=0)
        X = np.nan_to_num(np.where(missing, fill, X), nan=0.0, posinf=0.0, neginf=0.0)
    if centered and source.is_embedding(name):
        mean = getattr(source, "mean", lambda _: None)(name)
        if mean is None:
            mean = unit_rows(X).mean(axis=0)
            notes.append(f"{name}: no stored mean vector; centred by the mean of the sampled cells")
        X = unit_rows(X) - np.asarray(mean, dtype=np.float32)
    return unit_rows(X)


def _diagnose_set(source: FeatureSource, name: str, sample: _Sample, cfg: DiagnoseConfig, umap: bool) -> _SetView:
    """The metrics of one feature set on the sample (label metrics with labels; a UMAP layout when ``umap``)."""
    X = _unit_features(source, name, sample.union_cells, cfg.centered, sample.notes)
    X_main, X_spatial = X[sample.main_pos], X[sample.spatial_pos]
    del X
    knn = cosine_knn(X_main, k=cfg.k)
    distances = pair_cosine_distances(X_main, sample.pair_i, sample.pair_j)
    pca = fit_pca(X_spatial, N_MORAN_COMPONENTS)
    spatial_scores = pca.transform(X_spatial)
    spectrum = fit_pca(X_main, 1)
    result: dict[str, Any] = {
        "dim": int(X_main.shape[1]),
        "effective_dim": spectrum.effective_dim,
        "pc1_share": float(spectrum.explained_variance_ratio[0]),
        "mean_cosine": float(1.0 - distances.mean()),
        "standardised": not source.is_embedding(name),
        "n_cells": int(sample.cells_by_set[name].shape[0]),
        "explained_variance_pc": [float(v) for v in pca.explained_variance_ratio],
    }
    for c in range(N_MORAN_COMPONENTS):
        result[f"morans_i_pc{c + 1}"] = (
            morans_i(spatial_scores[:, c], sample.spatial_i, sample.spatial_j) if c < spatial_scores.shape[1]
            else None
        )
    if sample.codes is not None:
        result["davies_bouldin"] = davies_bouldin(X_main, sample.codes)
        similarity = class_similarity_sums(X_main, sample.codes, sample.classes.shape[0])
        result["silhouette_cosine"] = silhouette_from_class_similarity(similarity, sample.codes)
        result["knn_accuracy"] = knn_vote_accuracy(knn, sample.codes)
    ratio = pca.explained_variance_ratio
    axes = tuple(f"PC{c + 1} ({100 * ratio[c]:.0f}% of variance)" if c < len(ratio) else f"PC{c + 1}"
                 for c in range(2))
    return _SetView(result, knn, distances, pca.transform(X_main)[:, :2], axes, spatial_scores, ratio,
                    _umap_2d(X_main, cfg.seed) if umap else None)


def _geometry(names: list[str], views: Mapping[str, _SetView], results: dict[str, dict[str, Any]]
              ) -> list[dict[str, Any]]:
    """Geometry kept between every pair of feature sets; against the reference (first) also in ``results``."""
    geometry = []
    for a_index, a in enumerate(names):
        for b in names[a_index + 1:]:
            geometry.append({
                "a": a,
                "b": b,
                "distance_spearman": distance_rank_correlation(views[a].distances, views[b].distances),
                "neighbour_overlap": neighbourhood_overlap(views[a].knn, views[b].knn),
            })
    for g in geometry:
        if g["a"] == names[0]:
            results[g["b"]]["distance_spearman"] = g["distance_spearman"]
            results[g["b"]]["neighbour_overlap"] = g["neighbour_overlap"]
    return geometry


def _umap_2d(X: np.ndarray, seed: int) -> np.ndarray:
    try:
        import umap  # optional dependency
    except ImportError:
        raise MissingDependencyError("the UMAP figure needs umap-learn: pip install 'botaclip[umap]' (or "
                                     "umap-learn)") from None

    return umap.UMAP(n_components=2, metric="cosine", random_state=seed).fit_transform(X)


def _write_figures(out_dir: Path, views: Mapping[str, _SetView], sample: _Sample, label_col: str) -> list[str]:
    # Imported here so that computing diagnostics never pays for matplotlib.
    from botaclip.diagnostics.figures import pcs_to_rgb, plot_embedding_2d, plot_region_rgb

    labels = None if sample.codes is None else sample.classes[sample.codes]
    label_name = sample.labels_info["column"] if sample.labels_info else label_col
    out_dir.mkdir(parents=True, exist_ok=True)
    pca_xy = {name: v.pca_xy for name, v in views.items()}
    pca_axes = {name: v.pca_axes for name, v in views.items()}
    paths = [plot_embedding_2d(pca_xy, pca_axes, labels, "PCA", out_dir / "embedding_pca.png", label_name)]
    umap_xy = {name: v.umap_xy for name, v in views.items() if v.umap_xy is not None}
    if umap_xy:
        axes = {name: ("UMAP 1", "UMAP 2") for name in umap_xy}
        paths.append(plot_embedding_2d(umap_xy, axes, labels, "UMAP", out_dir / "embedding_umap.png", label_name))
    rgb = {name: pcs_to_rgb(v.spatial_scores) for name, v in views.items()}
    variance = {name: v.variance for name, v in views.items()}
    paths.append(plot_region_rgb(sample.spatial_cells, rgb, variance, out_dir / "region_pca_rgb.png"))
    return [str(p) for p in paths]
