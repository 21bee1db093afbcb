"""PNG figures of the diagnostics (matplotlib, Agg backend; nothing is shown on screen).

- `plot_embedding_2d`: one panel per feature set, cells placed by a 2-D projection (PCA, or UMAP when
  umap-learn is installed), coloured by label.
- `plot_region_rgb`: one panel per feature set, the region in longitude/latitude with each cell coloured by its
  first three principal components as red, green, blue (hexagons for small samples, cell centres otherwise).
"""

from __future__ import annotations

import math
from pathlib import Path

import h3.api.basic_int as h3i
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

# More classes than this and the rarest are pooled as "other" so the legend stays readable.
MAX_LEGEND_CLASSES = 19
# Up to this many cells the region map draws hexagons; beyond, cell centres (polygons get slow and invisible).
MAX_HEXAGONS = 8000


def _grid(n_panels: int) -> tuple[int, int]:
    cols = min(3, n_panels)
    return math.ceil(n_panels / cols), cols


def _class_colours(labels: np.ndarray) -> tuple[np.ndarray, list[tuple[str, tuple]]]:
    """Per-point RGBA colours and the legend entries (class name, colour), most frequent class first."""
    classes, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    by_count = np.argsort(-counts, kind="stable")
    shown = by_count[:MAX_LEGEND_CLASSES] if len(classes) > MAX_LEGEND_CLASSES + 1 else by_count
    palette = plt.get_cmap("tab20" if len(shown) > 10 else "tab10")
    colour_of_class = np.tile(np.array([0.6, 0.6, 0.6, 1.0]), (len(classes), 1))  # grey = "other"
    legend = []
    for slot, cls in enumerate(shown):
        colour_of_class[cls] = palette(slot % palette.N)
        legend.append((str(classes[cls]), tuple(colour_of_class[cls])))
    if len(shown) < len(classes):
        legend.append((f"other ({len(classes) - len(shown)} classes)", (0.6, 0.6, 0.6, 1.0)))
    return colour_of_class[codes], legend


def plot_embedding_2d(
    projections: dict[str, np.ndarray],
    axis_labels: dict[str, tuple[str, str]],
    labels: np.ndarray | None,
    method: str,
    path: str | Path,
    label_name: str = "label",
) -> Path:
    """Scatter of each feature set's 2-D projection (N, 2), coloured by `labels` (N,) when given; writes PNG."""
    rows, cols = _grid(len(projections))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.8 * rows + 0.9), squeeze=False)
    colours, legend = (None, []) if labels is None else _class_colours(np.asarray(labels).astype(str))
    n = next(iter(projections.values())).shape[0]
    size = float(np.clip(3000.0 / max(n, 1), 1.0, 20.0))
    for ax, (name, xy) in zip(axes.flat, projections.items()):
        ax.scatter(xy[:, 0], xy[:, 1], s=size, c=colours if colours is not None else "tab:blue",
                   alpha=0.7, linewidths=0, rasterized=True)
        ax.set_title(f"{name} — {method}")
        ax.set_xlabel(axis_labels[name][0])
        ax.set_ylabel(axis_labels[name][1])
    for ax in list(axes.flat)[len(projections):]:
        ax.set_axis_off()
    if legend:
        handles = [Line2D([], [], marker="o", linestyle="", markersize=7, color=c) for _, c in legend]
        legend_rows = math.ceil(len(legend) / 5)
        fig.legend(handles, [name for name, _ in legend], title=label_name, loc="lower center",
                   ncol=math.ceil(len(legend) / legend_rows), frameon=False)
    else:
        handles = [Line2D([], [], marker="o", linestyle="", markersize=7, color="tab:blue")]
        fig.legend(handles, [f"sampled cell (n = {n}); no labels given"], loc="lower center", frameon=False)
    legend_rows = math.ceil(max(len(legend), 1) / 5)
    fig.suptitle(f"Embedding space, 2-D {method} projection ({n} cells)")
    fig.tight_layout(rect=(0, min(0.35, 0.06 + 0.035 * legend_rows), 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pcs_to_rgb(scores: np.ndarray) -> np.ndarray:
    """(N, 3) principal component scores -> RGB in [0, 1], each component stretched between its 2nd and 98th
    percentile (so a few outliers do not wash out the map)."""
    scores = np.asarray(scores, dtype=np.float64)
    rgb = np.zeros((scores.shape[0], 3))
    for c in range(min(3, scores.shape[1])):
        lo, hi = np.percentile(scores[:, c], [2, 98])
        rgb[:, c] = 0.5 if hi <= lo else np.clip((scores[:, c] - lo) / (hi - lo), 0, 1)
    return rgb


def plot_region_rgb(
    cells: np.ndarray,
    rgb_by_set: dict[str, np.ndarray],
    variance_by_set: dict[str, np.ndarray],
    path: str | Path,
) -> Path:
    """Map of `cells` (uint64 H3) in longitude/latitude (degrees), one panel per feature set, each cell coloured by
    that set's RGB (N, 3) from its first three principal components; writes PNG."""
    cells = np.asarray(cells, dtype=np.uint64)
    centres = np.array([h3i.cell_to_latlng(c) for c in cells.tolist()]).reshape(-1, 2)  # (lat, lng)
    hexagons = None
    if cells.shape[0] <= MAX_HEXAGONS:
        # boundary is (lat, lng) pairs; matplotlib wants (x=lng, y=lat)
        hexagons = [np.array(h3i.cell_to_boundary(c))[:, ::-1] for c in cells.tolist()]
    rows, cols = _grid(len(rgb_by_set))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 5.0 * rows + 0.6), squeeze=False)
    mean_lat = float(centres[:, 0].mean()) if len(centres) else 0.0
    for ax, (name, rgb) in zip(axes.flat, rgb_by_set.items()):
        if hexagons is not None:
            ax.add_collection(PolyCollection(hexagons, facecolors=rgb, edgecolors="none"))
            ax.autoscale_view()
        else:
            ax.scatter(centres[:, 1], centres[:, 0], c=rgb, s=4, linewidths=0, rasterized=True)
        ax.set_aspect(1.0 / max(math.cos(math.radians(mean_lat)), 1e-6))
        ax.set_title(f"{name} — first 3 PCs as RGB")
        ax.set_xlabel("longitude (°)")
        ax.set_ylabel("latitude (°)")
        ax.ticklabel_format(useOffset=False, style="plain")
        ratio = variance_by_set[name]
        handles = [Patch(color=colour) for colour in ("red", "green", "blue")[: len(ratio)]]
        ax.legend(handles, [f"PC{c + 1} ({100 * r:.0f}% var.)" for c, r in enumerate(ratio)],
                  loc="upper right", fontsize=8, framealpha=0.8)
    for ax in list(axes.flat)[len(rgb_by_set):]:
        ax.set_axis_off()
    kind = "hexagons" if hexagons is not None else "cell centres"
    fig.suptitle(f"Region map, {cells.shape[0]} H3 cells ({kind})")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
