"""Shared fixtures. Tests build their own small data and models; nothing is downloaded."""

from __future__ import annotations

import os

# Tests share two cores; one intra-op thread per process keeps them from oversubscribing.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402


@pytest.fixture
def cli_runner() -> CliRunner:
    """A Click runner for `botaclip` commands; stderr is kept separate from stdout."""
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 always separates the streams
        return CliRunner()


@pytest.fixture
def write_raster(tmp_path):
    """Write a GeoTIFF with rasterio: ``write_raster(name, data[C,H,W], crs, transform, nodata=None) -> path``.

    ``transform`` is a rasterio Affine (e.g. ``rasterio.transform.from_origin(west, north, xres, yres)``);
    ``crs=None`` writes a raster without a CRS.
    """
    import rasterio

    def write(name, data, crs, transform, nodata=None, driver="GTiff"):
        path = tmp_path / name
        count, height, width = data.shape
        with rasterio.open(
            path, "w", driver=driver, width=width, height=height, count=count, dtype=str(data.dtype),
            crs=crs, transform=transform, nodata=nodata,
        ) as ds:
            ds.write(data)
        return str(path)

    return write


# ---------------------------------------------------------------- a tiny landscape with relevés (training tests)

X0, Y0, SIDE = 900_000.0, 6_450_000.0, 600  # Lambert-93 corner (west, north), metres; 1 m pixels
CELL = 60  # habitat patches, metres
HABITATS = 3
SPECIES = {
    0: ["Festuca rubra", "Nardus stricta", "Arnica montana"],
    1: ["Carex flacca", "Bromus erectus", "Briza media"],
    2: ["Vaccinium myrtillus", "Picea abies", "Oxalis acetosella"],
}
SHARED = ["Poa alpina", "Trifolium repens"]


def _habitat_grid(rng):
    n = SIDE // CELL
    return rng.integers(0, HABITATS, size=(n, n))


@pytest.fixture(scope="session")
def releve_landscape(tmp_path_factory):
    """A 600 m x 600 m 4-band orthophoto (EPSG:2154, 1 m, nodata 0) with three habitats in 60 m patches, and
    relevés whose species follow the habitat under each plot; three plots lie outside the image."""
    import rasterio
    from pyproj import Transformer
    from rasterio.transform import from_origin

    root = tmp_path_factory.mktemp("landscape")
    rng = np.random.default_rng(0)
    grid = _habitat_grid(rng)
    colours = np.array([[60, 140, 60, 200], [170, 160, 90, 120], [30, 70, 40, 90]], dtype=float)
    hab = np.kron(grid, np.ones((CELL, CELL), dtype=int))
    img = colours[hab].transpose(2, 0, 1) + rng.normal(0, 12, size=(4, SIDE, SIDE))
    img = np.clip(img, 1, 255).astype(np.uint8)
    tif = root / "ortho.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=SIDE, height=SIDE, count=4, dtype="uint8", crs="EPSG:2154",
                       transform=from_origin(X0, Y0, 1.0, 1.0), nodata=0) as dst:
        dst.write(img)

    to_wgs = Transformer.from_crs(2154, 4326, always_xy=True)
    rows, plots = [], []
    n_plots = 160
    for i in range(n_plots):
        if i < 3:  # outside the image
            x, y = X0 + SIDE + 500 + 30 * i, Y0 - 300
        else:
            x, y = X0 + rng.uniform(25, SIDE - 25), Y0 - rng.uniform(25, SIDE - 25)
        lng, lat = to_wgs.transform(x, y)
        h = grid[int((Y0 - y) // CELL) % grid.shape[0], int((x - X0) // CELL) % grid.shape[1]]
        rid = f"R{i:04d}"
        plots.append({"releve_id": rid, "decimalLatitude": lat, "decimalLongitude": lng, "x_l93": x, "y_l93": y})
        for sp in SPECIES[h] + SHARED:
            if rng.random() < 0.85:
                rows.append({"releve_id": rid, "decimalLatitude": lat, "decimalLongitude": lng, "species": sp,
                             "cover": float(rng.integers(1, 60))})
    long = pd.DataFrame(rows)
    releves_csv = root / "releves.csv"
    long.to_csv(releves_csv, index=False)
    plots_csv = root / "plots.csv"
    pd.DataFrame(plots).to_csv(plots_csv, index=False)
    return {"root": root, "tif": tif, "releves": releves_csv, "plots": plots_csv, "long": long,
            "plots_df": pd.DataFrame(plots)}
