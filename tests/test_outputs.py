"""Outputs of `sdm predict`: Cloud Optimized GeoTIFFs (layout, overviews, projection, values) and map pages."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from cli_checks import one_line_error
from pyproj import Transformer
from rasterio.transform import from_origin

from botaclip.errors import InvalidInputError
from botaclip.sdm import predict
from botaclip.sdm.cells import cells_to_latlng
from botaclip.sdm.cog import cog_problems


def _pixel_values_at_cells(path, cells):
    """The raster's value at each cell's centre (lat, lng projected into the raster's CRS)."""
    lat, lng = cells_to_latlng(cells)
    with rasterio.open(path) as ds:
        x, y = Transformer.from_crs("EPSG:4326", ds.crs.to_wkt(), always_xy=True).transform(lng, lat)
        return np.array([v[0] for v in ds.sample(zip(x, y))])


@pytest.mark.parametrize("crs, epsg", [(None, 32632), ("EPSG:2154", 2154)])
def test_predict_tif_is_a_cog_with_overviews_in_the_chosen_crs(fitted, tmp_path, crs, epsg):
    store, model = fitted
    predict(model, store, tmp_path / "p.parquet")
    table = pq.read_table(tmp_path / "p.parquet")
    cells, expected = table.column("h3").to_numpy(), table.column("suitability").to_numpy()
    r = predict(model, store, tmp_path / "p.tif", pixel_m=20, crs=crs)
    assert r.extra["crs"] == f"EPSG:{epsg}"  # default: the UTM zone of the cells (6.1 deg E: zone 32N)
    assert cog_problems(tmp_path / "p.tif") == []
    with rasterio.open(tmp_path / "p.tif") as ds:
        assert ds.crs.to_epsg() == epsg and ds.res == (20.0, 20.0)
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.block_shapes == [(256, 256)] and ds.nodata == -9999.0
        factors = ds.overviews(1)
        assert factors[:2] == [2, 4] and max(ds.width, ds.height) / factors[-1] <= 256  # down to one tile
        full = ds.read(1, masked=True)
        smallest = ds.read(1, masked=True, out_shape=(ds.height // factors[-1], ds.width // factors[-1]))
        assert ds.tags(1)["name"] == "suitability"
    # Every cell's centre pixel holds that cell's prediction; overviews average suitabilities (nodata ignored).
    np.testing.assert_allclose(_pixel_values_at_cells(tmp_path / "p.tif", cells), expected, rtol=1e-6)
    assert 0 <= smallest.min() and smallest.max() <= 1 and smallest.count() > 0
    assert abs(float(smallest.mean()) - float(full.mean())) < 0.05


def test_cog_check_finds_what_is_not_cloud_optimized(tmp_path):
    profile = dict(driver="GTiff", width=700, height=600, count=1, dtype="float32", crs="EPSG:32632",
                   transform=from_origin(300_000, 5_000_000, 10, 10))
    data = np.random.default_rng(0).random((1, 600, 700), dtype=np.float32)
    with rasterio.open(tmp_path / "strips.tif", "w", **profile) as ds:  # the GeoTIFF default: strips
        ds.write(data)
    problems = cog_problems(tmp_path / "strips.tif")
    assert any("not tiled" in p for p in problems) and any("no overviews" in p for p in problems)
    with rasterio.open(tmp_path / "late.tif", "w", tiled=True, **profile) as ds:
        ds.write(data)
    with rasterio.open(tmp_path / "late.tif", "r+") as ds:  # overviews added afterwards: IFDs after the data
        ds.build_overviews([2, 4])
    problems = cog_problems(tmp_path / "late.tif")
    assert any("ghost header" in p for p in problems) and any("before the last IFD" in p for p in problems)


def test_predict_binary_tif_is_a_uint8_cog(fitted, tmp_path):
    store, model = fitted
    predict(model, store, tmp_path / "b.tif", pixel_m=20, binary=True)
    assert cog_problems(tmp_path / "b.tif") == []
    with rasterio.open(tmp_path / "b.tif") as ds:
        assert ds.dtypes == ("uint8",) and ds.nodata == 255 and ds.overviews(1)
        low = ds.read(1, masked=True, out_shape=(ds.height // 4, ds.width // 4))
    assert set(np.unique(low.compressed()).tolist()) <= {0, 1}  # nearest neighbour keeps classes


def test_predict_html_page(fitted, tmp_path):
    store, model = fitted
    r = predict(model, store, tmp_path / "p.html")
    page = (tmp_path / "p.html").read_text()
    assert r.format == "html" and r.n_cells > 1000
    assert '"name":"suitability"' in page and "dissimilarity index (AOA)" in page
    assert "http://" not in page and "https://" not in page


def test_bad_crs_and_crs_on_other_formats(fitted, tmp_path, cli_runner):
    store, model = fitted
    base = ["sdm", "predict", "--model", str(model), "--store", str(store)]
    one_line_error(cli_runner, base + ["--out", str(tmp_path / "x.tif"), "--crs", "not-a-crs"],
         "--crs 'not-a-crs' is not a coordinate reference system")
    one_line_error(cli_runner, base + ["--out", str(tmp_path / "x.tif"), "--crs", "EPSG:4326"],
         "is not a projected CRS in metres")
    one_line_error(cli_runner, base + ["--out", str(tmp_path / "x.parquet"), "--crs", "EPSG:2154"],
         "--crs sets the projection of a .tif")
    assert not list(tmp_path.iterdir())  # nothing written
    with pytest.raises(InvalidInputError, match="not a coordinate reference system"):
        predict(model, store, tmp_path / "x.tif", crs="EPSG:99999999")
