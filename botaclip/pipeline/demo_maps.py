"""The demo's pictures: the orthophoto, the habitat truth, and one species' predicted vs true suitability."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Habitat colours, in the order of the sample's habitat codes 1..7.
HABITAT_COLOURS = ["#6aa84f", "#274e13", "#d9ead3", "#b6d7a8", "#999999", "#3d85c6", "#cc0000"]
THUMBNAIL_PX = 900


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def imagery_thumbnail(ortho: Path, out_png: Path) -> Path:
    """The orthophoto's RGB bands, decimated to at most THUMBNAIL_PX pixels a side; nodata shown white."""
    import rasterio

    plt = _pyplot()
    with rasterio.open(ortho) as ds:
        scale = max(ds.width, ds.height) / THUMBNAIL_PX
        shape = (3, max(1, int(ds.height / scale)), max(1, int(ds.width / scale)))
        rgb = ds.read([1, 2, 3], out_shape=shape).transpose(1, 2, 0)
        valid = ds.read_masks(1, out_shape=shape[1:]) > 0
        extent_km = (ds.bounds.right - ds.bounds.left) / 1000, (ds.bounds.top - ds.bounds.bottom) / 1000
    rgb = np.where(valid[..., None], rgb, 255).astype(np.uint8)
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.imshow(rgb, extent=(0, extent_km[0], 0, extent_km[1]))
    ax.set(title="Sample orthophoto (RGB)", xlabel="easting (km from west edge)", ylabel="northing (km)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def habitat_map(habitat_tif: Path, habitat_csv: Path, out_png: Path) -> Path:
    """The true habitat of every pixel (nearest-neighbour decimation), with a legend."""
    import pandas as pd
    import rasterio
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    plt = _pyplot()
    names = pd.read_csv(habitat_csv).set_index("code")["name"].to_dict()
    with rasterio.open(habitat_tif) as ds:
        scale = max(ds.width, ds.height) / THUMBNAIL_PX
        codes = ds.read(1, out_shape=(max(1, int(ds.height / scale)), max(1, int(ds.width / scale))))
        nodata = ds.nodata
        extent_km = (ds.bounds.right - ds.bounds.left) / 1000, (ds.bounds.top - ds.bounds.bottom) / 1000
    shown = np.ma.masked_equal(codes, nodata) if nodata is not None else codes
    cmap = ListedColormap(HABITAT_COLOURS[: max(names)])
    fig, ax = plt.subplots(figsize=(8.5, 7))
    ax.imshow(shown, cmap=cmap, vmin=0.5, vmax=max(names) + 0.5, interpolation="nearest",
              extent=(0, extent_km[0], 0, extent_km[1]))
    handles = [Patch(color=HABITAT_COLOURS[c - 1], label=n.replace("_", " ")) for c, n in sorted(names.items())]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, title="habitat")
    ax.set(title="Habitat truth", xlabel="easting (km from west edge)", ylabel="northing (km)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def prediction_vs_truth(example: dict, out_png: Path) -> Path:
    """Hexagon maps side by side: the true suitability, then each compared feature set's prediction."""
    from matplotlib.collections import PolyCollection

    from botaclip.sdm.cells import cell_boundaries

    plt = _pyplot()
    cells = np.asarray(example["h3"], dtype=np.uint64)
    polys = [b[:, ::-1] for b in cell_boundaries(cells)]  # (lat, lng) -> (x=lng, y=lat)
    panels = [("true suitability", example["truth"])] + [
        (f"predicted, {name} (rho {example['rho'][name]:.2f})", pred) for name, pred in example["pred"].items()
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 5), sharex=True, sharey=True)
    xs = np.concatenate([p[:, 0] for p in polys])
    ys = np.concatenate([p[:, 1] for p in polys])
    for ax, (title, values) in zip(axes, panels):
        values = np.asarray(values, dtype=float)
        # Each panel on its own rank scale: a model's calibration is not what this picture compares.
        ranks = np.argsort(np.argsort(values)) / max(1, values.size - 1)
        coll = PolyCollection(polys, array=ranks, cmap="viridis", edgecolors="none")
        coll.set_clim(0, 1)
        ax.add_collection(coll)
        ax.set_xlim(xs.min(), xs.max())
        ax.set_ylim(ys.min(), ys.max())
        ax.set_aspect(1 / np.cos(np.deg2rad(ys.mean())))
        ax.set(title=title, xlabel="longitude (°)")
    axes[0].set_ylabel("latitude (°)")
    fig.colorbar(coll, ax=list(axes), shrink=0.8, label="rank within map (0 = lowest, 1 = highest)")
    fig.suptitle(f"{example['species']}: true vs predicted suitability")
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def interactive_map(store, sets: list[str], example: dict | None, out_html: Path) -> Path:
    """One self-contained HTML page (see :mod:`botaclip.mapview`): the plant example's true and predicted
    suitability, then each feature set of ``sets`` (embedding sets as their first three principal components,
    covariate sets by their first column). Returns the path written."""
    from botaclip.mapview import store_layer, values_layer, write_map_page

    layers = []
    if example is not None:
        cells = np.asarray(example["h3"], dtype=np.uint64)
        species = example["species"]
        layers.append(values_layer(f"{species}: true suitability", cells, example["truth"], "suitability"))
        for name, pred in example["pred"].items():
            layers.append(values_layer(f"{species}: predicted, {name}", cells, pred, "suitability"))
    for name in sets:
        spec = store.spec(name)
        layers.append(store_layer(store, name if spec.is_embedding else f"{name}:{spec.feature_names()[0]}"))
    write_map_page(layers, out_html, "botaclip demo: sample region")
    return out_html
