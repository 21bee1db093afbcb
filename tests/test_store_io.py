"""Import of points/cells, covariate rasters per cell, export to GeoParquet/GeoPackage."""

from __future__ import annotations

import geopandas as gpd
import h3.api.basic_int as h3i
import numpy as np
import pandas as pd
import pytest
import rasterio
from pyproj import Transformer

from botaclip.errors import InvalidInputError
from botaclip.store import Store
from botaclip.store.io import add_raster, export, import_table


@pytest.fixture
def store(tmp_path):
    return Store.create(tmp_path / "s.store", resolution=9)


def test_import_points_in_lambert93(store, tmp_path):
    rng = np.random.default_rng(3)
    lat = 45.19 + rng.uniform(-0.01, 0.01, 300)
    lng = 5.72 + rng.uniform(-0.01, 0.01, 300)
    x, y = Transformer.from_crs(4326, 2154, always_xy=True).transform(lng, lat)
    vals = rng.normal(size=300)
    gdf = gpd.GeoDataFrame({"NDVI": vals, "Species Count": np.arange(300), "label": ["a"] * 300},
                           geometry=gpd.points_from_xy(x, y), crs="EPSG:2154")
    gdf.to_file(tmp_path / "pts.gpkg", driver="GPKG")
    r = import_table(store, "field", str(tmp_path / "pts.gpkg"))
    assert r["columns"] == ["ndvi", "species_count"]  # numeric columns only, SQL-safe names
    cells = np.array([h3i.latlng_to_cell(a, b, 9) for a, b in zip(lat, lng)], dtype=np.uint64)
    exp = pd.DataFrame({"h3": cells, "v": vals}).groupby("h3")["v"].agg(["mean", "count"])
    t = store.features("field", cells=exp.index.to_numpy(np.uint64)).to_pandas()
    assert np.allclose(t["ndvi"], exp["mean"], atol=1e-6)
    assert t["n_obs"].tolist() == exp["count"].tolist()
    # The same points as CSV with projected x/y and --crs
    pd.DataFrame({"x": x, "y": y, "ndvi": vals}).to_csv(tmp_path / "pts.csv", index=False)
    import_table(store, "field_csv", str(tmp_path / "pts.csv"), crs="EPSG:2154")
    t2 = store.features("field_csv", cells=exp.index.to_numpy(np.uint64)).to_pandas()
    assert np.allclose(t2["ndvi"], exp["mean"], atol=1e-6)
    with pytest.raises(InvalidInputError, match="out-of-range coordinates") as bad:
        import_table(store, "bad", str(tmp_path / "pts.csv"))
    assert bad.value.params == ["crs"]


def test_import_cells_as_embedding(store, tmp_path):
    cells = np.array(h3i.cell_to_children(h3i.latlng_to_cell(45.19, 5.72, 7), 9), dtype=np.uint64)
    rng = np.random.default_rng(0)
    A = rng.normal(size=(len(cells), 4))
    df = pd.DataFrame({"h3": [h3i.int_to_str(int(c)) for c in cells], **{f"A{i:02d}": A[:, i] for i in range(4)}})
    df.to_parquet(tmp_path / "alphaearth.parquet")
    r = import_table(store, "alphaearth", str(tmp_path / "alphaearth.parquet"), as_embedding=True)
    assert r["dim"] == 4 and store.info("alphaearth")["kind"] == "imported"
    fm = store.features_numpy("alphaearth", cells=cells)
    assert np.allclose(fm.X, A / np.linalg.norm(A, axis=1, keepdims=True), atol=1e-6)


def from_origin(west, north, xsize, ysize):
    return rasterio.Affine(xsize, 0.0, west, 0.0, -ysize, north)


def _write_raster(path, data, transform, crs, nodata=None):
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[0], width=data.shape[1], count=1,
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata) as ds:
        ds.write(data, 1)


def test_add_raster_means_by_pixel_centre(store, tmp_path):
    # 20 m pixels in UTM 31N over ~1 km: many pixels per resolution-9 cell (~0.1 km2).
    tr = Transformer.from_crs(4326, 32631, always_xy=True)
    x0, y0 = tr.transform(5.72, 45.19)
    transform = from_origin(x0, y0, 20.0, 20.0)
    rng = np.random.default_rng(5)
    data = rng.uniform(200, 3000, size=(50, 50)).astype(np.float32)
    data[0, :5] = -9999.0
    _write_raster(tmp_path / "Elevation.tif", data, transform, "EPSG:32631", nodata=-9999.0)
    r = add_raster(store, "terrain", [str(tmp_path / "Elevation.tif")])
    assert r["columns"] == ["elevation"]
    # by hand: pixel centres -> lat/lng -> cell, mean of valid pixels
    back = Transformer.from_crs(32631, 4326, always_xy=True)
    sums, counts = {}, {}
    for i in range(50):
        for j in range(50):
            if data[i, j] == -9999.0:
                continue
            lng, lat = back.transform(x0 + 20 * (j + 0.5), y0 - 20 * (i + 0.5))
            c = h3i.latlng_to_cell(lat, lng, 9)
            sums[c] = sums.get(c, 0.0) + float(data[i, j])
            counts[c] = counts.get(c, 0) + 1
    cells = np.array(sorted(sums), dtype=np.uint64)
    t = store.features("terrain", cells=cells).to_pandas()
    assert len(t) == len(cells) == store.info("terrain")["rows"]
    assert np.allclose(t["elevation"], [sums[c] / counts[c] for c in cells], rtol=1e-6)
    assert t["n_obs"].tolist() == [counts[c] for c in cells]
    # median
    add_raster(store, "terrain_med", [str(tmp_path / "Elevation.tif")], stat="median")
    c0 = int(cells[np.argmax([counts[c] for c in cells])])
    vals = [float(data[i, j]) for i in range(50) for j in range(50) if data[i, j] != -9999.0 and
            h3i.latlng_to_cell(*back.transform(x0 + 20 * (j + 0.5), y0 - 20 * (i + 0.5))[::-1], 9) == c0]
    med = store.features("terrain_med", cells=[c0]).column("elevation").to_pylist()[0]
    assert med == pytest.approx(float(np.median(vals)), rel=1e-6)


def test_add_raster_integer_raster_with_nodata(store, tmp_path):
    # uint8 classes with a nodata value: integers cannot hold NaN, so reading must widen them first.
    tr = Transformer.from_crs(4326, 32631, always_xy=True)
    x0, y0 = tr.transform(5.72, 45.19)
    data = np.full((30, 30), 3, dtype=np.uint8)
    data[:, 15:] = 7
    data[:2, :] = 255
    _write_raster(tmp_path / "classes.tif", data, from_origin(x0, y0, 20.0, 20.0), "EPSG:32631", nodata=255)
    add_raster(store, "classes", [str(tmp_path / "classes.tif")])
    values = store.features_numpy("classes").X[:, 0]
    assert values.size > 0 and values.min() >= 3 and values.max() <= 7  # nodata (255) never enters a mean
    assert np.any(values == 3) and np.any(values == 7)


def test_add_raster_coarse_uses_centre_sample(store, tmp_path):
    # 0.05 degree pixels (~5 km) are far coarser than resolution-9 cells: every cell takes its centre's pixel.
    data = np.arange(4, dtype=np.float32).reshape(2, 2)
    _write_raster(tmp_path / "clim.tif", data, from_origin(5.70, 45.20, 0.05, 0.05), "EPSG:4326")
    cells = np.array(h3i.cell_to_children(h3i.latlng_to_cell(45.17, 5.73, 6), 9), dtype=np.uint64)
    with store.writer("base", kind="covariates", columns=["one"]) as w:
        w.write(cells, columns={"one": np.ones(len(cells))})
    add_raster(store, "clim", [str(tmp_path / "clim.tif")], like="base")
    fm = store.features_numpy("clim", cells=cells)
    for c, v, ok in zip(cells, fm.X[:, 0], fm.found):
        lat, lng = h3i.cell_to_latlng(int(c))
        row, col = int((45.20 - lat) // 0.05), int((lng - 5.70) // 0.05)
        inside = 0 <= row < 2 and 0 <= col < 2
        assert ok == inside
        if inside:
            assert v == data[row, col]


def test_export_is_geoparquet_1_1_with_bbox_covering(store, tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import shapely

    cells = np.array([c for lat in (45.19, 45.6) for c in h3i.cell_to_children(h3i.latlng_to_cell(lat, 5.72, 7), 9)],
                     dtype=np.uint64)
    with store.writer("t", kind="covariates", columns=["a"]) as w:
        w.write(cells, columns={"a": np.arange(len(cells), dtype=float)})
    export(store, "t", str(tmp_path / "t.parquet"))
    schema = pq.read_schema(tmp_path / "t.parquet")
    geo = json.loads(schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    col = geo["columns"]["geometry"]
    assert col["encoding"] == "WKB" and col["geometry_types"] == ["Polygon"] and "crs" not in col  # OGC:CRS84
    assert col["covering"] == {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}}
    assert schema.field("bbox").type == pa.struct([(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")])
    table = pq.read_table(tmp_path / "t.parquet")
    bounds = shapely.bounds(shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False)))
    box = np.column_stack([pc.struct_field(table.column("bbox"), k).to_numpy() for k in range(4)])
    np.testing.assert_array_equal(box, bounds)  # each row's box is its hexagon's bounds
    assert pq.ParquetFile(tmp_path / "t.parquet").metadata.num_row_groups == 2  # one per partition
    # geopandas reads it back, and its bbox filter uses the covering: only the southern cluster is in the box.
    g = gpd.read_parquet(tmp_path / "t.parquet", bbox=(5.5, 45.0, 6.0, 45.4))
    assert g.crs.equals("OGC:CRS84") and 0 < len(g) == len(cells) // 2
    assert g.geometry.bounds["maxy"].max() < 45.4


def test_export_geoparquet_and_gpkg(store, tmp_path):
    cells = np.array(h3i.cell_to_children(h3i.latlng_to_cell(45.19, 5.72, 7), 9), dtype=np.uint64)
    with store.writer("e", kind="backbone", dim=3) as w:
        w.write(cells, np.tile([[1.0, 2.0, 2.0]], (len(cells), 1)))
    export(store, "e", str(tmp_path / "e.parquet"))
    g = gpd.read_parquet(tmp_path / "e.parquet")
    assert g.crs.equals("OGC:CRS84") and len(g) == len(cells)  # GeoParquet default: lng/lat WGS 84
    assert sorted(g["h3"].astype("uint64")) == sorted(cells.tolist())
    row = g.iloc[0]
    lat, lng = h3i.cell_to_latlng(int(row["h3"]))
    assert row.geometry.contains(gpd.points_from_xy([lng], [lat])[0])
    assert np.allclose(list(row["embedding"]), [1 / 3, 2 / 3, 2 / 3], atol=1e-6)
    export(store, "e", str(tmp_path / "e.gpkg"))
    g2 = gpd.read_file(tmp_path / "e.gpkg")
    assert len(g2) == len(cells) and isinstance(g2["h3"].iloc[0], str)
    assert sorted(int(s, 16) for s in g2["h3"]) == sorted(cells.tolist())
    assert list(g2.columns[:4]) == ["h3", "e0", "e1", "e2"]
    with pytest.raises(InvalidInputError, match="already exists"):
        export(store, "e", str(tmp_path / "e.gpkg"))
    with pytest.raises(InvalidInputError, match="use a .parquet"):
        export(store, "e", str(tmp_path / "e.shp"))
