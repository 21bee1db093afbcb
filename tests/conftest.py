"""Shared fixtures. Tests build their own small data and models; nothing is downloaded."""

from __future__ import annotations

import os

# Tests share two cores; one intra-op thread per process keeps them from oversubscribing.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

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


@pytest.fixture
def two_sets(tmp_path):
    """A real store with an 8-d embedding set `emb` and a covariate set `cov` on the same 200 cells, which lie
    in two partitions (100 each): ``(store, cells)``."""
    import h3.api.basic_int as h3i
    import numpy as np

    from botaclip.store import Store

    store = Store.create(tmp_path / "s.store")
    cells = np.array([c for lat in (45.19, 45.5) for c in sorted(h3i.cell_to_children(
        h3i.latlng_to_cell(lat, 5.72, 6), 10))[:100]], dtype=np.uint64)
    rng = np.random.default_rng(0)
    with store.writer("emb", kind="backbone", dim=8, provenance={"model": "test"}) as w:
        w.write(cells, rng.normal(size=(len(cells), 8)), valid_fraction=np.ones(len(cells)))
    with store.writer("cov", kind="covariates", columns=["a"]) as w:
        w.write(cells, columns={"a": rng.normal(size=len(cells))})
    return store, cells


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A resolution-9 store with a 4-d embedding set `emb` (~1,300 cells) and a logistic SDM fitted on it
    (presence-only): ``(store path, model directory)``. Shared by a module: tests must not change them."""
    import h3
    import numpy as np
    import pandas as pd

    from botaclip.sdm import fit_species
    from botaclip.sdm.cells import cells_to_latlng
    from botaclip.store import Store

    root = tmp_path_factory.mktemp("fitted")
    rng = np.random.default_rng(1)
    cells = np.array(sorted(h3.str_to_int(c) for c in h3.grid_disk(h3.latlng_to_cell(45.2, 6.1, 9), 20)),
                     dtype=np.uint64)
    lat, lng = cells_to_latlng(cells)
    store = Store.create(root / "s.store", resolution=9)
    with store.writer("emb", kind="backbone", dim=4) as w:
        w.write(cells, np.column_stack([lat - 45.2, lng - 6.1, rng.normal(size=(len(cells), 2))]))
    pick = rng.choice(len(cells), 60, replace=False)
    pd.DataFrame({"species": "P a", "decimalLatitude": lat[pick], "decimalLongitude": lng[pick]}).to_csv(
        root / "po.csv", index=False)
    fit_species(store.path, root / "po.csv", "P a", features="emb", model="logistic", folds=3,
                out=root / "model", predictions=False, write_map=False)
    return store.path, root / "model"
