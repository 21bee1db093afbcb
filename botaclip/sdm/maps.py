"""PNG maps of predicted suitability: H3 hexagons coloured by suitability, occurrences on top, a colour bar and
a scale bar. Drawn in the local UTM zone (metres), with matplotlib's Agg backend (no display needed).

Above ``max_hexagons`` cells, hexagons are merged into their parents (mean suitability) until few enough remain,
so a map of millions of cells stays light to draw and to look at.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from botaclip.atomic import atomic_write
from botaclip.sdm.cells import cell_boundaries, cell_to_parent, cells_to_latlng, resolution_of

MAX_HEXAGONS = 60_000


def utm_crs(lat: float, lng: float) -> str:
    """EPSG code of the UTM zone containing (lat, lng) in degrees."""
    zone = int((lng + 180) // 6) % 60 + 1
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


def coarsen(h3: np.ndarray, values: np.ndarray, max_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge cells into parents (mean value) until at most ``max_cells`` remain."""
    h3 = np.asarray(h3, dtype=np.uint64)
    values = np.asarray(values, dtype=np.float64)
    res = int(resolution_of(h3[:1])[0]) if h3.size else 0
    while h3.size > max_cells and res > 0:
        res -= 1
        parents = cell_to_parent(h3, res)
        uniq, inv = np.unique(parents, return_inverse=True)
        sums = np.bincount(inv, weights=values, minlength=uniq.size)
        counts = np.bincount(inv, minlength=uniq.size)
        h3, values = uniq, sums / counts
    return h3, values


def _nice_length(span_m: float) -> float:
    """A round length (1, 2 or 5 x 10^k metres) close to a fifth of ``span_m``."""
    target = max(span_m / 5.0, 1e-9)
    exp = math.floor(math.log10(target))
    for m in (5, 2, 1):
        if m * 10**exp <= target:
            return m * 10**exp
    return 10**exp


def _colour_scale(values: np.ndarray, label: str):
    """Colour map and range: 0..1 for suitabilities and presence (two classes), else the values' range."""
    finite = values[np.isfinite(values)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if label == "suitability" and vmin >= 0 and vmax <= 1:
        vmin, vmax = 0.0, 1.0
    cmap = "viridis"
    if label == "presence":
        from matplotlib.colors import LinearSegmentedColormap

        # Two classes; where many cells are merged into one hexagon the colour is the share present.
        cmap = LinearSegmentedColormap.from_list("presence", ["#d9d9d9", "#1a9850"])
        vmin, vmax = 0.0, 1.0
    return cmap, vmin, vmax


def _frame_and_scale_bar(ax, allxy: np.ndarray) -> None:
    """Fit the axes to the hexagons (vertices ``allxy``, metres) with a margin; scale bar bottom left."""
    from matplotlib.patches import Rectangle

    x0, y0 = allxy.min(axis=0)
    x1, y1 = allxy.max(axis=0)
    pad = 0.03 * max(x1 - x0, y1 - y0, 1.0)
    ax.set_xlim(x0 - pad, x1 + pad)
    ax.set_ylim(y0 - pad, y1 + pad)
    length = _nice_length(x1 - x0)
    bx, by = x0 + pad, y0 + pad
    ax.add_patch(Rectangle((bx, by), length, 0.012 * (y1 - y0 + 2 * pad), color="black", zorder=4))
    text = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    ax.text(bx + length / 2, by + 0.025 * (y1 - y0 + 2 * pad), text, ha="center", va="bottom", zorder=4,
            fontsize=9, bbox=dict(facecolor="white", alpha=0.7, edgecolor="none", pad=1))


def _draw_outside(ax, polys: list) -> None:
    """Cells outside the area of applicability: light grey, hatched, with a legend entry."""
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    ax.add_collection(PolyCollection(polys, facecolors="#d9d9d9", edgecolors="#969696", linewidths=0.2,
                                     hatch="////"))
    # add_artist: a later legend (occurrences) must not replace this one
    ax.add_artist(ax.legend(handles=[Patch(facecolor="#d9d9d9", edgecolor="#969696", hatch="////",
                                           label="outside area of applicability")], loc="lower right", fontsize=8))


def save_png(fig, out_png: Path) -> Path:
    """Write matplotlib figure ``fig`` to ``out_png`` atomically (a PNG is never seen half-written), then close it."""
    import matplotlib.pyplot as plt

    try:
        atomic_write(out_png, lambda tmp: fig.savefig(tmp, format="png"), suffix=".png")
    finally:
        plt.close(fig)
    return out_png


def suitability_map(
    h3: np.ndarray,
    suitability: np.ndarray,
    out_png: str | Path,
    *,
    presences: tuple[np.ndarray, np.ndarray] | None = None,
    absences: tuple[np.ndarray, np.ndarray] | None = None,
    title: str = "",
    label: str = "suitability",
    max_hexagons: int = MAX_HEXAGONS,
) -> Path:
    """Draw the map and write it to ``out_png``.

    ``h3``/``suitability``: cells and their predictions; ``presences``/``absences``: (lat, lng) arrays in degrees
    drawn on top. A masked array of suitability marks the cells outside the model's area of applicability: they
    are drawn grey and hatched (a merged hexagon is outside when most of its cells are). Returns the path
    written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection
    from pyproj import Transformer

    out_png = Path(out_png)
    outside = np.ma.getmaskarray(suitability) if np.ma.isMaskedArray(suitability) else None
    cells, values = coarsen(h3, np.ma.getdata(suitability), max_hexagons)
    out_mask = None if outside is None else coarsen(h3, outside.astype(np.float64), max_hexagons)[1] > 0.5
    lat, lng = cells_to_latlng(cells)
    crs = utm_crs(float(np.median(lat)), float(np.median(lng))) if cells.size else "EPSG:3857"
    to_m = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    polys = []
    for ring in cell_boundaries(cells):
        x, y = to_m.transform(ring[:, 1], ring[:, 0])
        polys.append(np.column_stack([x, y]))

    fig, ax = plt.subplots(figsize=(8, 7), dpi=120)
    cmap, vmin, vmax = _colour_scale(values, label)
    inside = np.ones(len(polys), dtype=bool) if out_mask is None else ~out_mask
    coll = PolyCollection([p for p, i in zip(polys, inside) if i], array=values[inside], cmap=cmap,
                          edgecolors="face", linewidths=0.2)
    coll.set_clim(vmin, vmax)
    ax.add_collection(coll)
    if out_mask is not None and out_mask.any():
        _draw_outside(ax, [p for p, o in zip(polys, out_mask) if o])
    bar = fig.colorbar(coll, ax=ax, shrink=0.75, label=label)
    if label == "presence":
        bar.set_ticks([0.0, 1.0], labels=["absent", "present"])
    for pts, style in ((absences, dict(marker="x", c="0.35", s=10, linewidths=0.7, label="absence")),
                       (presences, dict(marker="o", facecolors="none", edgecolors="red", s=14, linewidths=0.9,
                                        label="presence"))):
        if pts is not None and len(pts[0]):
            px, py = to_m.transform(np.asarray(pts[1]), np.asarray(pts[0]))
            ax.scatter(px, py, zorder=3, **style)
    if polys:
        _frame_and_scale_bar(ax, np.concatenate(polys))
    ax.set_aspect("equal")
    ax.set_xlabel(f"easting (m, {crs})")
    ax.set_ylabel("northing (m)")
    ax.ticklabel_format(style="plain", useOffset=False)
    ax.tick_params(labelsize=7)
    if (presences is not None and len(presences[0])) or (absences is not None and len(absences[0])):
        ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    return save_png(fig, out_png)
