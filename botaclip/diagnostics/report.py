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
from botaclip.errors import BotaclipError
from botaclip.store.outputs import check_output_path

N_PAIRS = 100_000
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


def diagnose(
    store: Any,
    feature_sets: list[str] | None = None,
    labels: str | Path | CellLabels | None = None,
    label_col: str = "habitat",
    sample: int = 20_000,
    seed: int = 0,
    out_dir: str | Path | None = None,
    k: int = 10,
    n_pairs: int = N_PAIRS,
    umap: bool | None = None,
    centered: bool = False,
) -> DiagnosticsReport:
    """Embedding-space diagnostics of `feature_sets` on the cells they all cover.

    store: a `botaclip.store.Store` (opened read-only is enough) or a mapping {name: (h3 uint64[N], X[N, D])}.
    feature_sets: names; the first is the reference for "geometry kept" (default: every feature set in the store
        except SDM predictions, backbones first).
    labels: a CSV/Parquet file (h3 column, or latitude/longitude in degrees) with column `label_col`, or
        CellLabels; enables Davies–Bouldin, silhouette (cosine) and kNN accuracy.
    sample: cells drawn (fixed `seed`) for all metrics; the spatial sample for Moran's I is about as large.
    out_dir: when given, diagnostics.json, diagnostics.md and PNG figures are written there.
    umap: add a UMAP figure (default: when umap-learn is installed).
    centered: centred cosine: subtract each embedding set's mean vector (the store's, from the catalog; else the
        mean of the sampled cells, noted) before unit-normalising. Raw cosine over a nearly collinear set (a
        random-init backbone) is close to 1 everywhere; centred cosine shows its structure.
    """
    started = time.perf_counter()
    if feature_sets is not None and not list(feature_sets):
        raise BotaclipError("no feature set named (an empty --feature-sets); name some, or leave the option out "
                            "for every feature set")
    if int(seed) < 0:
        raise BotaclipError(f"--seed must be 0 or more, got {seed}")
    if out_dir is not None:
        check_output_path(out_dir, what="--out", is_dir=True)
    source: FeatureSource = as_source(store)
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
        raise BotaclipError(f"store {source.description} has no feature sets; run `botaclip index` first")
    unknown = [n for n in names if n not in available]
    if unknown:
        raise BotaclipError(
            f"unknown feature set {unknown[0]!r} in {source.description} "
            f"(available: {', '.join(available) or 'none'})"
        )
    if len(set(names)) != len(names):
        raise BotaclipError(f"feature set listed twice in {', '.join(names)}")
    if sample < k + 1:
        raise BotaclipError(f"--sample {sample} is too small; give at least {k + 1} cells")

    cells_by_set = {name: source.cells(name) for name in names}
    common = cells_by_set[names[0]]
    for name in names[1:]:
        common = np.intersect1d(common, cells_by_set[name], assume_unique=True)
    if common.shape[0] == 0:
        raise BotaclipError(f"feature sets {', '.join(names)} share no cells; compare sets indexed on one region")
    notes: list[str] = []

    labels_info = None
    population = common
    cell_labels = None
    if labels is not None:
        if not isinstance(labels, CellLabels):
            labels = read_labels(labels, label_col=label_col, resolution=source.resolution)
        labelled, labelled_values, n_not_in_store = _join_labels(labels, common)
        if labelled.shape[0] == 0:
            raise BotaclipError(
                f"none of the {len(labels)} labelled cells in {labels.source} is in feature sets "
                f"{', '.join(names)} (store resolution {source.resolution}); do the labels cover the indexed region?"
            )
        population = labelled
        cell_labels = (labelled, labelled_values)
        labels_info = {
            "source": labels.source,
            "column": labels.column,
            "n_rows": labels.n_rows,
            "n_rows_dropped": labels.n_rows_dropped,
            "n_cells": len(labels),
            "n_cells_in_store": int(labelled.shape[0]),
            "n_cells_not_in_store": n_not_in_store,
            "n_conflicting_cells": labels.n_conflicting_cells,
        }

    rng = np.random.default_rng(seed)
    main_cells = _sorted_sample(population, sample, rng)
    if main_cells.shape[0] < k + 1:
        raise BotaclipError(
            f"only {main_cells.shape[0]} {'labelled ' if labels is not None else ''}cells in common; "
            f"diagnostics need at least {k + 1}"
        )
    codes = classes = None
    if cell_labels is not None:
        pos = np.searchsorted(cell_labels[0], main_cells)
        classes, codes = np.unique(cell_labels[1][pos], return_inverse=True)
        if classes.shape[0] < 2:
            raise BotaclipError(
                f"labels column {label_col!r} has fewer than two classes on the sampled cells "
                f"(only {classes[0]!r}); label structure needs at least two"
            )
        counts = np.bincount(codes)
        labels_info.update(
            n_classes=int(classes.shape[0]),
            majority_share=float(counts.max() / counts.sum()),
            class_counts={str(c): int(n) for c, n in zip(classes, counts)},
        )
    spatial_cells = cluster_sample(common, sample, rng)
    spatial_i, spatial_j = h3_ring1_pairs(spatial_cells)
    if spatial_i.shape[0] == 0:
        notes.append("no two sampled cells are H3 neighbours, so Moran's I is undefined")
    pair_i, pair_j = sample_pairs(main_cells.shape[0], n_pairs, rng)
    union_cells = np.union1d(main_cells, spatial_cells)
    main_pos = np.searchsorted(union_cells, main_cells)
    spatial_pos = np.searchsorted(union_cells, spatial_cells)

    want_umap = importlib.util.find_spec("umap") is not None if umap is None else umap
    results: dict[str, dict[str, Any]] = {}
    knn_by_set: dict[str, np.ndarray] = {}
    dist_by_set: dict[str, np.ndarray] = {}
    pca_xy: dict[str, np.ndarray] = {}
    pca_axes: dict[str, tuple[str, str]] = {}
    umap_xy: dict[str, np.ndarray] = {}
    rgb: dict[str, np.ndarray] = {}
    variance: dict[str, np.ndarray] = {}
    for name in names:
        X = source.read(name, union_cells)
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
        X = unit_rows(X)
        X_main, X_spatial = X[main_pos], X[spatial_pos]
        del X
        knn_by_set[name] = cosine_knn(X_main, k=k)
        dist_by_set[name] = pair_cosine_distances(X_main, pair_i, pair_j)
        pca = fit_pca(X_spatial, N_MORAN_COMPONENTS)
        spatial_scores = pca.transform(X_spatial)
        spectrum = fit_pca(X_main, 1)
        result: dict[str, Any] = {
            "dim": int(X_main.shape[1]),
            "effective_dim": spectrum.effective_dim,
            "pc1_share": float(spectrum.explained_variance_ratio[0]),
            "mean_cosine": float(1.0 - dist_by_set[name].mean()),
            "standardised": not source.is_embedding(name),
            "n_cells": int(cells_by_set[name].shape[0]),
            "explained_variance_pc": [float(v) for v in pca.explained_variance_ratio],
        }
        for c in range(N_MORAN_COMPONENTS):
            result[f"morans_i_pc{c + 1}"] = (
                morans_i(spatial_scores[:, c], spatial_i, spatial_j) if c < spatial_scores.shape[1] else None
            )
        if codes is not None:
            result["davies_bouldin"] = davies_bouldin(X_main, codes)
            similarity = class_similarity_sums(X_main, codes, classes.shape[0])
            result["silhouette_cosine"] = silhouette_from_class_similarity(similarity, codes)
            result["knn_accuracy"] = knn_vote_accuracy(knn_by_set[name], codes)
        results[name] = result
        main_scores = pca.transform(X_main)
        pca_xy[name] = main_scores[:, :2]
        ratio = pca.explained_variance_ratio
        pca_axes[name] = tuple(f"PC{c + 1} ({100 * ratio[c]:.0f}% of variance)" if c < len(ratio) else f"PC{c + 1}"
                               for c in range(2))
        rgb[name] = spatial_scores
        variance[name] = ratio
        if want_umap and out_dir is not None:
            umap_xy[name] = _umap_2d(X_main, seed)

    reference = names[0]
    geometry = []
    for a_index, a in enumerate(names):
        for b in names[a_index + 1:]:
            geometry.append({
                "a": a,
                "b": b,
                "distance_spearman": distance_rank_correlation(dist_by_set[a], dist_by_set[b]),
                "neighbour_overlap": neighbourhood_overlap(knn_by_set[a], knn_by_set[b]),
            })
    for g in geometry:
        if g["a"] == reference:
            results[g["b"]]["distance_spearman"] = g["distance_spearman"]
            results[g["b"]]["neighbour_overlap"] = g["neighbour_overlap"]

    report = DiagnosticsReport(
        feature_sets=names,
        reference=reference,
        resolution=source.resolution,
        k=k,
        seed=seed,
        sample={
            "requested": sample,
            "n_cells_common": int(common.shape[0]),
            "n_sampled": int(main_cells.shape[0]),
            "n_spatial": int(spatial_cells.shape[0]),
            "n_spatial_pairs": int(spatial_i.shape[0]),
            "n_pairs": int(pair_i.shape[0]),
        },
        labels=labels_info,
        results=results,
        geometry=geometry,
        notes=notes,
        store=source.description,
        centered=centered,
    )
    if out_dir is not None:
        report.figures = _write_figures(
            Path(out_dir), pca_xy, pca_axes, umap_xy,
            None if codes is None else classes[codes], labels_info["column"] if labels_info else label_col,
            spatial_cells, rgb, variance,
        )
        if not want_umap:
            report.notes.append("UMAP figure skipped: install umap-learn to add it")
    report.elapsed_s = round(time.perf_counter() - started, 2)
    if out_dir is not None:
        report.write(out_dir)
    return report


def _umap_2d(X: np.ndarray, seed: int) -> np.ndarray:
    try:
        import umap  # optional dependency
    except ImportError:
        raise BotaclipError("the UMAP figure needs umap-learn: pip install 'botaclip[umap]' (or umap-learn)") from None

    return umap.UMAP(n_components=2, metric="cosine", random_state=seed).fit_transform(X)


def _write_figures(
    out_dir: Path,
    pca_xy: Mapping[str, np.ndarray],
    pca_axes: Mapping[str, tuple[str, str]],
    umap_xy: Mapping[str, np.ndarray],
    labels: np.ndarray | None,
    label_name: str,
    spatial_cells: np.ndarray,
    spatial_scores: Mapping[str, np.ndarray],
    variance: Mapping[str, np.ndarray],
) -> list[str]:
    # Imported here so that computing diagnostics never pays for matplotlib.
    from botaclip.diagnostics.figures import pcs_to_rgb, plot_embedding_2d, plot_region_rgb

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [plot_embedding_2d(pca_xy, pca_axes, labels, "PCA", out_dir / "embedding_pca.png", label_name)]
    if umap_xy:
        axes = {name: ("UMAP 1", "UMAP 2") for name in umap_xy}
        paths.append(plot_embedding_2d(umap_xy, axes, labels, "UMAP", out_dir / "embedding_umap.png", label_name))
    rgb = {name: pcs_to_rgb(scores) for name, scores in spatial_scores.items()}
    paths.append(plot_region_rgb(spatial_cells, rgb, variance, out_dir / "region_pca_rgb.png"))
    return [str(p) for p in paths]
