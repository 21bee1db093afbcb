"""Similarity search: exact (in memory and from Parquet, every storage dtype), the persistent ANN index (build,
open, query, stale after writes, dropped on overwrite), query by example and its filters, output formats, and the
bad inputs' one-line errors."""

from __future__ import annotations

import json
import sys

import geopandas as gpd
import h3.api.basic_int as h3i
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
from cli_checks import one_line_error

from botaclip.cli import cli
from botaclip.errors import InvalidInputError, MissingDependencyError
from botaclip.store import Store, ann
from botaclip.store.similarity import SimilaritySearch, similar

PARENTS = [h3i.latlng_to_cell(45.19, 5.72, 6), h3i.latlng_to_cell(45.30, 5.90, 6)]
DIM = 32


def children(parent: int) -> np.ndarray:
    return np.array(sorted(h3i.cell_to_children(parent, 10)), dtype=np.uint64)


def mixture(rng, n: int, clusters: int = 25) -> np.ndarray:
    centres = np.random.default_rng(0).normal(size=(clusters, DIM))
    return (centres[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, DIM))).astype(np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    """4,802 cells (two resolution-6 parents) of a 25-cluster Gaussian mixture, 32-d float32."""
    store = Store.create(tmp_path_factory.mktemp("search") / "s.store")
    cells = np.concatenate([children(p) for p in PARENTS])
    X = mixture(np.random.default_rng(1), len(cells))
    with store.writer("emb", kind="backbone", dim=DIM, provenance={"model": "m"}) as w:
        w.write(cells, X)
    return store, cells, unit(X)


def exact_top(X: np.ndarray, cells: np.ndarray, q: np.ndarray, k: int, exclude=()) -> list[int]:
    s = X @ q
    s[np.isin(cells, np.asarray(exclude, np.uint64))] = -np.inf
    return cells[np.lexsort((cells, -s))[:k]].tolist()


def _ok(cli_runner, args):
    r = cli_runner.invoke(cli, args)
    assert r.exit_code == 0, (r.output, r.stderr)
    return r


def test_exact_in_memory_and_from_parquet_match_numpy(clustered):
    store, cells, X = clustered
    rng = np.random.default_rng(2)
    with SimilaritySearch(store, "emb", method="exact", in_memory=True) as mem, \
            SimilaritySearch(store, "emb", method="exact") as disk:
        for i in rng.choice(len(cells), 5, replace=False):
            want = exact_top(X, cells, X[i], 10, [cells[i]])
            hm, sm = mem.query_vector(X[i], k=10, exclude=int(cells[i]))
            hd, sd = disk.query_vector(X[i], k=10, exclude=int(cells[i]))
            assert hm.tolist() == want and hd.tolist() == want
            row = {int(c): j for j, c in enumerate(cells)}
            np.testing.assert_allclose(sm, X[[row[int(c)] for c in hm]] @ X[i], atol=1e-5)
            np.testing.assert_array_equal(sm, sd)
        assert mem.answered_by.startswith("exact (in memory") and "Parquet" in disk.answered_by


@pytest.mark.parametrize("dtype,min_recall", [("float16", 0.95), ("int8", 0.85)])
def test_compact_dtypes_round_trip_and_search(tmp_path, clustered, dtype, min_recall):
    _, cells, X = clustered
    store = Store.create(tmp_path / "c.store")
    rng = np.random.default_rng(3)
    perm = rng.permutation(len(cells))
    with store.writer("emb", kind="backbone", dim=DIM, dtype=dtype) as w:
        w.write(cells[perm], X[perm] * 3.0)  # one write, any order, any norm
    fm = store.features_numpy("emb", cells=cells)
    assert fm.found.all() and np.abs(fm.X - X).max() < (1e-3 if dtype == "float16" else 1 / 127 + 1e-6)
    recalls = []
    with SimilaritySearch(store, "emb", method="exact", in_memory=True) as s:
        for i in rng.choice(len(cells), 20, replace=False):
            got = s.query_vector(X[i], k=10)[0].tolist()
            recalls.append(len(set(got) & set(exact_top(X, cells, X[i], 10))) / 10)
    assert np.mean(recalls) >= min_recall


def test_one_write_with_repeats_equals_partition_writes(tmp_path, clustered):
    _, cells, X = clustered
    a, b = Store.create(tmp_path / "a.store"), Store.create(tmp_path / "b.store")
    rng = np.random.default_rng(4)
    perm = rng.permutation(len(cells))
    dup = perm[:50]  # given twice: the later row wins
    with a.writer("emb", kind="backbone", dim=DIM) as w:
        w.write(np.r_[cells[perm], cells[dup]], np.r_[X[perm] * 0.0 + X[perm], X[dup][::-1]])
    Xb = X.copy()
    Xb[dup] = X[dup][::-1]
    with b.writer("emb", kind="backbone", dim=DIM) as w:
        for p in PARENTS:
            m = np.isin(cells, children(p))
            w.write(cells[m], Xb[m])
            w.finish_partition(p)
    for p in PARENTS:
        ta, tb = a.partition_table("emb", p), b.partition_table("emb", p)
        assert ta.column("h3").equals(tb.column("h3")) and ta.column("embedding").equals(tb.column("embedding"))
    assert a.verify().ok and b.verify().ok


def test_ann_build_query_recall_and_memory_map(tmp_path, clustered):
    src, cells, X = clustered
    store = Store.create(tmp_path / "a.store")
    with store.writer("emb", kind="backbone", dim=DIM) as w:
        w.write(cells, X)
    rec = ann.build(store, "emb", threads=1)
    st = ann.status(store, "emb")
    assert st["fresh"] and st["rows"] == len(cells) and st["path"].is_file()
    assert st["path"].is_relative_to(store.path / "ann" / "emb") and rec["index_type"].startswith("IVF")
    rng = np.random.default_rng(5)
    recalls = []
    with SimilaritySearch(store, "emb") as s:  # auto: the fresh index answers
        for i in rng.choice(len(cells), 50, replace=False):
            got = s.query_vector(X[i], k=10, exclude=int(cells[i]))[0].tolist()
            assert int(cells[i]) not in got and len(got) == 10
            recalls.append(len(set(got) & set(exact_top(X, cells, X[i], 10, [cells[i]]))) / 10)
        assert s.answered_by.startswith("ann (faiss IVF")
    assert np.mean(recalls) >= 0.95
    assert store.verify().ok


def test_ann_stale_after_write_rebuilt_and_dropped_on_overwrite(tmp_path, clustered):
    _, cells, X = clustered
    store = Store.create(tmp_path / "a.store")
    half = np.isin(cells, children(PARENTS[0]))
    with store.writer("emb", kind="backbone", dim=DIM) as w:
        w.write(cells[half], X[half])
    ann.build(store, "emb", threads=1)
    with store.writer("emb", kind="backbone", dim=DIM) as w:  # an append: the index no longer covers the set
        w.write(cells[~half], X[~half])
    assert ann.status(store, "emb")["fresh"] is False
    t = similar(store, "emb", cell=int(cells[0]), k=5)
    meta = t.schema.metadata[b"answered_by"].decode()
    assert meta.startswith("exact") and "stale" in meta
    with pytest.raises(InvalidInputError, match="stale"):
        similar(store, "emb", cell=int(cells[0]), k=5, method="ann")
    ann.build(store, "emb", threads=1)
    assert ann.status(store, "emb")["fresh"] and len(list((store.path / "ann" / "emb").iterdir())) == 1
    with store.writer("emb", kind="backbone", dim=DIM + 1, overwrite=True) as w:  # replacement
        w.write(cells[:100], np.ones((100, DIM + 1)))
    assert ann.status(store, "emb") is None and not (store.path / "ann" / "emb").exists()
    with pytest.raises(InvalidInputError, match="no ANN index"):
        similar(store, "emb", cell=int(cells[0]), k=5, method="ann")
    assert store.verify().ok


def test_ann_cli_build_info_similar_and_drop(cli_runner, tmp_path, clustered):
    _, cells, X = clustered
    store = Store.create(tmp_path / "a.store")
    with store.writer("emb", kind="backbone", dim=DIM) as w:
        w.write(cells, X)
    s = str(store.path)
    cell = format(int(cells[7]), "x")
    one_line_error(cli_runner, ["store", "similar", s, "--feature-set", "emb", "--cell", cell, "--ann"],
         "has no ANN index yet; build one with `botaclip store ann build")
    assert "no ANN index" in _ok(cli_runner, ["store", "ann", "info", s]).stdout
    assert "built IVF" in _ok(cli_runner, ["store", "ann", "build", s, "--feature-set", "emb", "--threads", "1"]).stdout
    assert "fresh" in _ok(cli_runner, ["store", "ann", "info", s]).stdout
    r = _ok(cli_runner, ["store", "similar", s, "--feature-set", "emb", "--cell", cell, "--format", "json"])
    assert "answered by ann (faiss IVF" in r.stderr
    by_ann = [row["h3_string"] for row in json.loads(r.stdout)]
    r = _ok(cli_runner, ["store", "similar", s, "--feature-set", "emb", "--cell", cell, "--exact", "--format", "json"])
    assert "answered by exact" in r.stderr
    by_exact = [row["h3_string"] for row in json.loads(r.stdout)]
    assert len(set(by_ann) & set(by_exact)) >= 8
    one_line_error(cli_runner, ["store", "similar", s, "--feature-set", "emb", "--cell", cell, "--exact", "--ann"],
         "not both")
    assert "dropped" in _ok(cli_runner, ["store", "ann", "drop", s, "--feature-set", "emb"]).stdout
    assert ann.status(store, "emb") is None


def test_query_by_cells_polygon_and_filters(tmp_path, clustered):
    store, cells, X = clustered
    examples = cells[[3, 40, 77]]
    mean = X[[3, 40, 77]].mean(axis=0)
    t = similar(store, "emb", cells=tuple(format(int(c), "x") for c in examples), k=10, method="exact")
    assert t.column("h3").to_numpy().tolist() == exact_top(X, cells, mean / np.linalg.norm(mean), 10, examples)
    assert t.schema.metadata[b"example"].decode().startswith("mean of 3 of 3 cells")
    # a polygon around a few cells: the mean of the stored cells whose centre is inside
    lat, lng = h3i.cell_to_latlng(int(cells[100]))
    box = shapely.box(lng - 0.004, lat - 0.003, lng + 0.004, lat + 0.003)
    gpd.GeoDataFrame(geometry=[box], crs="EPSG:4326").to_file(tmp_path / "plots.geojson")
    lats, lngs = np.array([h3i.cell_to_latlng(int(c)) for c in cells]).T
    inside = shapely.contains_xy(box, lngs, lats)
    assert 2 <= inside.sum() < 50
    pm = X[inside].mean(axis=0)
    t = similar(store, "emb", polygon=str(tmp_path / "plots.geojson"), k=5, method="exact")
    assert t.column("h3").to_numpy().tolist() == exact_top(X, cells, pm / np.linalg.norm(pm), 5, cells[inside])
    # filters: a bbox (west,south,east,north) and a maximum distance from the query point
    bbox = f"{lng - 0.02},{lat - 0.02},{lng + 0.02},{lat + 0.02}"
    t = similar(store, "emb", cell=int(cells[100]), k=20, within=bbox, method="exact")
    assert t.num_rows == 20 and (np.abs(t.column("lat").to_numpy() - lat) <= 0.02).all()
    t = similar(store, "emb", point=(lat, lng), k=30, max_km=1.5, method="exact")
    d = t.column("distance_km").to_numpy()
    assert t.num_rows == 30 and d.max() <= 1.5 and d.min() > 0
    far = np.array([h3i.great_circle_distance((lat, lng), ll, unit="km") for ll in zip(lats, lngs)]) > 1.5
    assert t.column("h3").to_numpy().tolist() == exact_top(X, cells, X[100], 30, [cells[100], *cells[far]])


def test_ann_with_region_filter_matches_exact_or_falls_back(tmp_path, clustered):
    _, cells, X = clustered
    store = Store.create(tmp_path / "a.store")
    with store.writer("emb", kind="backbone", dim=DIM) as w:
        w.write(cells, X)
    ann.build(store, "emb", threads=1)
    region = format(h3i.cell_to_parent(int(cells[10]), 8), "x")  # 49 cells: too few among the candidates
    t = similar(store, "emb", cell=int(cells[10]), k=10, within=region)
    exact = similar(store, "emb", cell=int(cells[10]), k=10, within=region, method="exact")
    assert t.column("h3").equals(exact.column("h3"))
    assert t.schema.metadata[b"answered_by"].decode().startswith(("ann", "exact"))


def test_similar_outputs_read_back(cli_runner, tmp_path, clustered):
    store, cells, _ = clustered
    s, cell = str(store.path), format(int(cells[5]), "x")
    args = ["store", "similar", s, "--feature-set", "emb", "--cell", cell, "-k", "7", "--exact"]
    _ok(cli_runner, args + ["--format", "csv", "--out", str(tmp_path / "r.csv")])
    rows = (tmp_path / "r.csv").read_text().splitlines()
    assert rows[0] == "rank,h3_string,similarity,lat,lng" and len(rows) == 8
    _ok(cli_runner, args + ["--format", "parquet", "--out", str(tmp_path / "r.parquet")])
    assert pq.read_table(tmp_path / "r.parquet").column("h3_string").to_pylist() == [r.split(",")[1] for r in rows[1:]]
    _ok(cli_runner, args + ["--format", "gpkg", "--out", str(tmp_path / "r.gpkg")])
    g = gpd.read_file(tmp_path / "r.gpkg")
    assert len(g) == 7 and (g.geom_type == "Polygon").all() and g.crs.to_epsg() == 4326
    assert g["h3_string"].tolist() == [r.split(",")[1] for r in rows[1:]]
    # a CSV of plot coordinates as the example ("places like these plots")
    lat, lng = h3i.cell_to_latlng(int(cells[5]))
    (tmp_path / "plots.csv").write_text(f"plot,lat,lng\na,{lat},{lng}\n")
    r = _ok(cli_runner, ["store", "similar", s, "--feature-set", "emb", "--cells", str(tmp_path / "plots.csv"),
                         "-k", "7", "--exact", "--format", "csv"])
    assert r.stdout.splitlines()[1:] == rows[1:] or [x.split(",")[1] for x in r.stdout.splitlines()[1:]] == \
        [x.split(",")[1] for x in rows[1:]]


def test_bad_inputs_one_line(cli_runner, tmp_path, clustered, monkeypatch):
    store, cells, _ = clustered
    s, cell = str(store.path), format(int(cells[0]), "x")
    base = ["store", "similar", s, "--feature-set", "emb"]
    one_line_error(cli_runner, ["store", "similar", s, "--feature-set", "nope", "--cell", cell], "no feature set 'nope'")
    one_line_error(cli_runner, ["store", "ann", "build", s, "--feature-set", "nope"], "no feature set 'nope'")
    one_line_error(cli_runner, base + ["--cell", cell, "--within", "5.9,45.4,5.7,45.1"], "--within")
    (tmp_path / "bad.geojson").write_text("{ not json")
    one_line_error(cli_runner, base + ["--polygon", str(tmp_path / "bad.geojson")], "cannot read polygon file")
    one_line_error(cli_runner, base + ["--polygon", str(tmp_path / "none.geojson")], "no such file")
    one_line_error(cli_runner, base + ["--cell", cell, "--cells", cell], "exactly one of")
    one_line_error(cli_runner, base + ["--cell", cell, "--max-km", "-1"], "--max-km must be a positive")
    one_line_error(cli_runner, base + ["--cell", cell, "--near", "45"], "--near '45' must be LAT,LNG")
    one_line_error(cli_runner, base + ["--cell", cell, "--format", "gpkg"], "needs --out")
    one_line_error(cli_runner, base + ["--cell", cell, "--format", "csv", "--out", str(store.path / "x.csv")],
         "inside store")
    far = format(h3i.latlng_to_cell(10.0, 10.0, 10), "x")
    one_line_error(cli_runner, base + ["--cells", far], "none of 1 cells is in feature set")
    monkeypatch.setitem(sys.modules, "faiss", None)  # faiss not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'botaclip\[ann\]'"):
        ann.build(store, "emb")
    one_line_error(cli_runner, ["store", "ann", "build", s, "--feature-set", "emb"], "botaclip[ann]")
    assert Store.open(store.path).verify().ok
