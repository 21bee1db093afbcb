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
