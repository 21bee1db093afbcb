"""`store import --embedding` of embedding tables as published: GeoParquet with one vector column per row and
point or polygon geometry (Major TOM, Clay, Earth Index)."""

from __future__ import annotations

import geopandas as gpd
import h3.api.basic_int as h3i
import numpy as np
import pytest
import shapely
from pyproj import Transformer

from botaclip.cli import cli
from botaclip.errors import InvalidInputError
from botaclip.store import Store
from botaclip.store.io import import_table

RES = 9


@pytest.fixture
def store(tmp_path):
    return Store.create(tmp_path / "s.store", resolution=RES)


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_points_with_a_vector_column(store, tmp_path):
    rng = np.random.default_rng(0)
    lat, lng = 45.19 + rng.uniform(-0.01, 0.01, 200), 5.72 + rng.uniform(-0.01, 0.01, 200)
    vecs = rng.normal(size=(200, 16)).astype(np.float32)
    gdf = gpd.GeoDataFrame({"embedding": list(vecs), "chip_id": [f"c{i}" for i in range(200)]},
                           geometry=gpd.points_from_xy(lng, lat), crs="EPSG:4326")
    gdf.to_parquet(tmp_path / "clay.parquet")
    r = import_table(store, "clay", str(tmp_path / "clay.parquet"), as_embedding=True, kind="external")
    assert r["dim"] == 16
    by_cell: dict[int, list] = {}
    for a, b, v in zip(lat, lng, vecs):
        by_cell.setdefault(h3i.latlng_to_cell(a, b, RES), []).append(v)
    cells = np.array(sorted(by_cell), dtype=np.uint64)
    t = store.features("clay", cells=cells).to_pandas()
    fm = store.features_numpy("clay", cells=cells)
    np.testing.assert_allclose(fm.X, unit([np.mean(by_cell[int(c)], axis=0) for c in cells]), atol=1e-6)
    assert t["n_obs"].tolist() == [len(by_cell[int(c)]) for c in cells]
    assert store.info("clay")["kind"] == "external"


def test_polygons_go_to_the_cells_whose_centres_they_contain(store, tmp_path):
    # Two square chips (UTM 31N, 1.2 km and 600 m) and one far smaller than a cell.
    to_utm = Transformer.from_crs(4326, 32631, always_xy=True)
    x0, y0 = to_utm.transform(5.72, 45.19)
    chips = [shapely.box(x0, y0, x0 + 1200, y0 + 1200), shapely.box(x0 + 1200, y0, x0 + 1800, y0 + 600),
             shapely.box(x0 + 3000, y0, x0 + 3010, y0 + 10)]
    vecs = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    gdf = gpd.GeoDataFrame({"vector": [v for v in vecs]}, geometry=chips, crs="EPSG:32631")
    gdf.to_parquet(tmp_path / "chips.parquet")
    import_table(store, "chips", str(tmp_path / "chips.parquet"), as_embedding=True)
    # by hand: cell centres (in UTM) inside each chip
    back = Transformer.from_crs(4326, 32631, always_xy=True)
    expected: dict[int, list] = {}
    for i, chip in enumerate(chips[:2]):
        for c in h3i.cell_to_children(h3i.latlng_to_cell(45.19, 5.72, RES - 3), RES) + list(
                h3i.grid_disk(h3i.latlng_to_cell(45.195, 5.735, RES), 12)):
            lat, lng = h3i.cell_to_latlng(c)
            if shapely.contains_xy(chip, *back.transform(lng, lat)):
                expected.setdefault(c, set()).add(i)
    tiny = chips[2].centroid
    lng_t, lat_t = Transformer.from_crs(32631, 4326, always_xy=True).transform(tiny.x, tiny.y)
    expected.setdefault(h3i.latlng_to_cell(lat_t, lng_t, RES), set()).add(2)
    fm = store.features_numpy("chips")
    assert set(map(int, fm.h3)) == set(expected)
    for c, x in zip(fm.h3, fm.X):
        np.testing.assert_allclose(x, unit(vecs[sorted(expected[int(c)])].mean(axis=0)), atol=1e-6)
    assert len(expected) > 10 and "polygon contains the cell centre" in store.info("chips")["provenance"]["aggregation"]


def test_bad_vector_tables(store, tmp_path):
    pts = gpd.points_from_xy([5.72, 5.73], [45.19, 45.2])
    ragged = gpd.GeoDataFrame({"embedding": [np.ones(4), np.ones(3)]}, geometry=pts, crs="EPSG:4326")
    ragged.to_parquet(tmp_path / "ragged.parquet")
    with pytest.raises(InvalidInputError, match="lengths 3 to 4"):
        import_table(store, "x", str(tmp_path / "ragged.parquet"), as_embedding=True)
    two = gpd.GeoDataFrame({"a": [np.ones(4)] * 2, "b": [np.ones(4)] * 2}, geometry=pts, crs="EPSG:4326")
    two.to_parquet(tmp_path / "two.parquet")
    with pytest.raises(InvalidInputError, match="several vector columns") as bad:
        import_table(store, "x", str(tmp_path / "two.parquet"), as_embedding=True)
    assert bad.value.params == ["columns"]
    import_table(store, "x", str(tmp_path / "two.parquet"), as_embedding=True, columns=["b"])
    assert store.info("x")["dim"] == 4
    with pytest.raises(InvalidInputError, match=r"columns \['emb'\] not in"):
        import_table(store, "y", str(tmp_path / "two.parquet"), as_embedding=True, columns=["emb"])


def test_cli_import_vector_table(store, tmp_path, cli_runner):
    gdf = gpd.GeoDataFrame({"embedding": [np.arange(8, dtype=float) + 1] * 3},
                           geometry=gpd.points_from_xy([5.72, 5.73, 5.74], [45.19, 45.2, 45.21]), crs="EPSG:4326")
    gdf.to_parquet(tmp_path / "t.parquet")
    r = cli_runner.invoke(cli, ["store", "import", str(store.path), str(tmp_path / "t.parquet"), "--name", "mt",
                                "--embedding", "--kind", "external"])
    assert r.exit_code == 0, r.output
    assert "(an embedding of dim 8)" in r.stdout
    r = cli_runner.invoke(cli, ["store", "import", str(store.path), str(tmp_path / "t.parquet"), "--name", "mt2",
                                "--embedding", "--columns", "vec"])
    assert r.exit_code != 0 and "columns ['vec'] not in" in r.stderr and len(r.stderr.strip().splitlines()) == 1
