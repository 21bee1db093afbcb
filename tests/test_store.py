"""Feature store: round trips, catalog, views, resume semantics, refusals."""

from __future__ import annotations

import json

import duckdb
import h3
import numpy as np
import pyarrow.parquet as pq
import pytest

from botaclip.errors import BotaclipError, InvalidInputError, StoreBusyError
from botaclip.store import Store
from botaclip.store.h3vec import cell_to_parent

PARENT = h3.str_to_int(h3.latlng_to_cell(45.19, 5.72, 6))  # Grenoble, resolution 6
OTHER_PARENT = h3.str_to_int(h3.latlng_to_cell(44.0, 6.5, 6))


def children(parent: int, n: int | None = None) -> np.ndarray:
    cells = np.array(sorted(h3.api.basic_int.cell_to_children(parent, 10)), dtype=np.uint64)
    return cells[:n] if n else cells


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def store(tmp_path):
    return Store.create(tmp_path / "s.store", resolution=10)


@pytest.mark.parametrize("dtype,tol", [("float32", 0.0), ("float16", 1e-3), ("int8", 1.0 / 127)])
def test_round_trip_every_precision(store, dtype, tol):
    rng = np.random.default_rng(1)
    cells = np.concatenate([children(PARENT, 300), children(OTHER_PARENT, 200)])
    emb = rng.normal(size=(len(cells), 24)).astype(np.float32)
    vf = rng.uniform(size=len(cells)).astype(np.float32)
    with store.writer("e", kind="backbone", dim=24, dtype=dtype, provenance={"model": "m"}) as w:
        w.write(cells[::-1], emb[::-1], valid_fraction=vf[::-1])  # order must not matter
    fm = store.features_numpy("e", cells=cells)
    assert fm.found.all()
    assert fm.X.dtype == np.float32 and fm.X.shape == (len(cells), 24)
    assert np.abs(fm.X - unit(emb)).max() <= tol + 1e-7
    # Reading through SQL gives float32 FLOAT[24] too, dequantised.
    con = store.connect()
    typ = con.execute("SELECT typeof(embedding) FROM e LIMIT 1").fetchone()[0]
    assert typ == "FLOAT[24]"
    sql = con.execute("SELECT h3, embedding, valid_fraction FROM e ORDER BY h3").fetchall()
    con.close()
    order = np.argsort(cells)
    got = np.array([r[1] for r in sql], dtype=np.float32)
    assert [r[0] for r in sql] == cells[order].tolist()
    assert np.abs(got - unit(emb)[order]).max() <= tol + 1e-7
    assert np.allclose([r[2] for r in sql], vf[order])
    # The footer says what is on disk.
    meta = json.loads(pq.read_metadata(next((store.path / "features" / "e").rglob("*.parquet"))).metadata[b"botaclip"])
    assert meta["data_type"] == dtype and meta["dimensions"] == 24 and meta["model"] == "m"
    info = store.info("e")
    assert info["dtype"] == dtype and info["rows"] == len(cells) and info["partitions"] == 2 and info["bytes"] > 0


def test_partitions_sorted_and_by_parent(store):
    cells = np.concatenate([children(PARENT, 50), children(OTHER_PARENT, 50)])
    with store.writer("c", kind="covariates", columns=["elev"]) as w:
        w.write(cells, columns={"elev": np.arange(100.0)})
    assert store.partitions("c") == {PARENT, OTHER_PARENT}
    for parent, h, _ in store.iter_partitions("c"):
        assert (np.diff(h.astype(np.int64)) > 0).all()
        assert (cell_to_parent(h, 6) == parent).all()
    assert (store.partition_of(cells) == cell_to_parent(cells, 6)).all()


def test_features_points_and_missing(store):
    cells = children(PARENT, 10)
    with store.writer("c", kind="covariates", columns=["a", "b"]) as w:
        w.write(cells, columns={"a": np.arange(10.0), "b": np.where(np.arange(10) == 3, np.nan, 1.0)},
                n_obs=np.full(10, 2))
    lat, lng = h3.cell_to_latlng(h3.int_to_str(int(cells[4])))
    t = store.features("c", points=([lat, 0.0], [lng, 0.0]))
    assert t.column("h3").to_pylist()[0] == int(cells[4])
    assert t.column("a").to_pylist() == [4.0, None]
    t2 = store.features("c", cells=[cells[3], cells[1]])
    assert t2.column("a").to_pylist() == [3.0, 1.0] and t2.column("b").to_pylist() == [None, 1.0]
    assert t2.column("n_obs").to_pylist() == [2, 2]
    fm = store.features_numpy("c", cells=np.array([cells[0], children(OTHER_PARENT, 1)[0]]))
    h, X, names = fm
    assert names == ["a", "b"] and fm.found.tolist() == [True, False] and np.isnan(X[1]).all()


def test_predictions_feature_set(store):
    cells = children(PARENT, 20)
    with store.writer("sdm_pred", kind="predictions", columns=["suitability"],
                      provenance={"species": "Abies alba", "model": "lightgbm"}) as w:
        w.write(cells, columns={"suitability": np.linspace(0, 1, 20)})
    con = store.connect()
    assert con.execute("SELECT round(max(suitability), 3) FROM sdm_pred").fetchone()[0] == 1.0
    con.close()


def test_views_from_plain_duckdb(store):
    cells = children(PARENT, 5)
    with store.writer("e", kind="botaclip", dim=3, dtype="int8") as w:
        w.write(cells, np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1]])
    # Any duckdb, without botaclip's connection: views and catalog tables are in the file.
    con = duckdb.connect(str(store.path / "catalog.duckdb"), read_only=True)
    rows = con.execute("SELECT embedding FROM e ORDER BY h3").fetchall()
    fs = con.execute("SELECT name, kind, dtype, dim, rows FROM feature_sets").fetchall()
    con.close()
    assert [list(r[0]) for r in rows][0] == pytest.approx([1.0, 0.0, 0.0])
    assert fs == [("e", "botaclip", "int8", 3, 5)]


def test_resume_is_exact_and_idempotent(store):
    cells = children(PARENT)
    vals = np.arange(len(cells), dtype=np.float64)
    with store.writer("c", kind="covariates", columns=["v"], max_buffer_bytes=1) as w:
        w.write(cells[:700], columns={"v": vals[:700]})  # flushed early as a partial partition
    assert PARENT not in store.partitions("c")  # flushed early, never finished: partial
    assert np.array_equal(store.existing_cells("c", parent=PARENT), cells[:700])
    assert len(store.existing_cells("c", parent=OTHER_PARENT)) == 0
    with store.writer("c", kind="covariates", columns=["v"]) as w:
        done = w.existing_cells()
        assert np.array_equal(np.sort(done), np.sort(cells[:700]))
        todo = np.setdiff1d(cells, done)
        w.write(todo, columns={"v": vals[np.searchsorted(cells, todo)]})
        w.write(cells[:10], columns={"v": vals[:10]})  # rewriting is harmless
        w.finish_partition(PARENT)
    h, X, _ = store.features_numpy("c")
    assert np.array_equal(h, cells) and np.array_equal(X[:, 0], vals)
    assert store.partitions("c") == {PARENT}
    assert store.verify().ok


def test_finish_partition_marks_empty_parent_done(store):
    with store.writer("c", kind="covariates", columns=["v"]) as w:
        w.finish_partition(OTHER_PARENT)
    assert store.partitions("c") == {OTHER_PARENT}
    assert store.features_numpy("c").X.shape == (0, 1)


def test_refusals(store, tmp_path):
    cells = children(PARENT, 4)
    with store.writer("e", kind="backbone", dim=4, provenance={"model": "dofa_base"}) as w:
        w.write(cells, np.ones((4, 4)))
    with pytest.raises(InvalidInputError, match="different dim") as conflict:
        store.writer("e", kind="backbone", dim=8, provenance={"model": "dofa_base"})
    assert conflict.value.params == ["overwrite"]
    with pytest.raises(InvalidInputError, match="model"):
        store.writer("e", kind="backbone", dim=4, provenance={"model": "other"})
    with store.writer("e", kind="backbone", dim=8, overwrite=True, provenance={"model": "other"}) as w:
        w.write(cells, np.ones((4, 8)))
    assert store.info("e")["dim"] == 8 and store.info("e")["rows"] == 4
    with pytest.raises(InvalidInputError, match="invalid feature-set name"):
        store.writer("Bad-Name; DROP", kind="covariates", columns=["a"])
    with pytest.raises(InvalidInputError, match="not valid H3 cells at the store resolution"):
        with store.writer("c", kind="covariates", columns=["a"]) as w:
            w.write(np.array([PARENT], np.uint64), columns={"a": [1.0]})
    with pytest.raises(InvalidInputError, match="NaN"):
        with store.writer("e2", kind="backbone", dim=2) as w:
            w.write(cells[:1], np.array([[np.nan, 1.0]]))
    with pytest.raises(InvalidInputError, match="already exists"):
        Store.create(store.path)
    (tmp_path / "plain").mkdir()
    with pytest.raises(InvalidInputError, match="not a botaclip store"):
        Store.open(tmp_path / "plain")
    with pytest.raises(InvalidInputError, match="no feature set"):
        store.features_numpy("nope")


def test_newer_schema_version_refused(store):
    from botaclip.store.catalog import read_catalog, write_catalog

    state = read_catalog(store.catalog_path)
    state.meta["schema_version"] = "99"
    write_catalog(store.catalog_path, state, store.path)
    with pytest.raises(BotaclipError, match="newer than this botaclip"):
        Store.open(store.path)


def test_second_writer_refused_and_stale_lock_taken_over(store):
    w = store.writer("c", kind="covariates", columns=["a"])
    with pytest.raises(StoreBusyError, match=r"being written by PID \d+"):
        store.writer("d", kind="covariates", columns=["a"])
    w.close()
    # A lock file left by a dead process (no flock held) does not block.
    (store.path / ".writer.lock").write_text(json.dumps({"pid": 999999, "host": "x", "since": "then"}))
    with store.writer("d", kind="covariates", columns=["a"]) as w2:
        w2.write(children(PARENT, 1), columns={"a": [1.0]})
    assert store.info("d")["rows"] == 1


def test_moved_store_still_queries(store, tmp_path):
    with store.writer("c", kind="covariates", columns=["a"]) as w:
        w.write(children(PARENT, 3), columns={"a": [1.0, 2.0, 3.0]})
    moved = tmp_path / "moved.store"
    store.path.rename(moved)
    ro = Store.open(moved, read_only=True)
    con = ro.connect()
    assert con.execute("SELECT sum(a) FROM c").fetchone()[0] == 6.0
    con.close()
    Store.open(moved)  # a read-write open rewrites the views' absolute paths
    con = duckdb.connect(str(moved / "catalog.duckdb"), read_only=True)
    assert con.execute("SELECT sum(a) FROM c").fetchone()[0] == 6.0
    con.close()


def test_catalog_with_hundreds_of_runs_and_sets_round_trips_exactly(two_sets):
    """A catalog is written a batch of rows per INSERT: more runs and feature sets than one batch come back as
    they went in, list columns, NULLs and timestamps included."""
    import copy
    import datetime as dt

    from botaclip.store.catalog import read_catalog, write_catalog

    store, _ = two_sets
    state = read_catalog(store.catalog_path)
    grown = copy.deepcopy(state)
    t0 = dt.datetime(2026, 1, 1, 12, 0, 0)
    for i in range(450):
        grown.runs.append({"run_id": 1000 + i, "feature_set": "emb", "pid": i, "host": "h", "started": t0,
                           "finished": None if i % 3 else t0 + dt.timedelta(seconds=i), "status": "done",
                           "rows_written": i, "partitions_written": 1, "botaclip_version": "0"})
    template = grown.feature_sets["cov"]
    for i in range(230):
        grown.feature_sets[f"x{i:03d}"] = {**template, "name": f"x{i:03d}", "columns": ["a", f"c{i}"],
                                           "extras": [] if i % 2 else None, "provenance": {"i": i}}
    write_catalog(store.catalog_path, grown, store.path)
    back = read_catalog(store.catalog_path)
    assert back.runs == grown.runs
    assert back.feature_sets == grown.feature_sets and back.meta == grown.meta
    write_catalog(store.catalog_path, state, store.path)  # as it was: the sets added here have no files
    assert store.feature_sets() == ["cov", "emb"] and store.verify().ok
