"""H3 SQL functions (Python fallback of DuckDB's h3 extension) against h3-py."""

from __future__ import annotations

import duckdb
import h3
import h3.api.basic_int as h3i
import numpy as np
import pytest
import shapely

from botaclip.store.h3sql import SIGNATURES, register_h3_functions
from botaclip.store.h3vec import children_range


@pytest.fixture(scope="module")
def con():
    c = duckdb.connect()
    assert register_h3_functions(c) == "python"  # no extension can be installed here
    register_h3_functions(c)  # idempotent
    rng = np.random.default_rng(7)
    n = 400
    lat = rng.uniform(-89.9, 89.9, n)
    lng = rng.uniform(-180, 180, n)
    res = rng.integers(0, 16, n)
    c.execute("CREATE TABLE pts AS SELECT * FROM (SELECT unnest(?) AS lat, unnest(?) AS lng, unnest(?) AS res)",
              [lat.tolist(), lng.tolist(), res.tolist()])
    yield c
    c.close()


def _pts(con):
    return con.execute("SELECT lat, lng, res FROM pts").fetchall()


def test_latlng_to_cell_matches_h3py(con):
    got = con.execute("SELECT lat, lng, res, h3_latlng_to_cell(lat, lng, res) FROM pts").fetchall()
    for lat, lng, res, cell in got:
        assert cell == h3i.latlng_to_cell(lat, lng, res)
    # pentagon neighbourhoods: the 12 res-0 pentagon centres
    for p in h3i.get_pentagons(5):
        la, ln = h3i.cell_to_latlng(p)
        assert con.execute("SELECT h3_latlng_to_cell(?, ?, 5)", [la, ln]).fetchone()[0] == p
    s = con.execute("SELECT h3_latlng_to_cell_string(45.0, 6.0, 9)").fetchone()[0]
    assert s == h3.latlng_to_cell(45.0, 6.0, 9)


def test_cell_functions_match_h3py(con):
    rows = con.execute("""
        SELECT c, h3_cell_to_lat(c), h3_cell_to_lng(c), h3_get_resolution(c), h3_is_valid_cell(c),
               h3_h3_to_string(c), h3_string_to_h3(h3_h3_to_string(c)), h3_cell_to_parent(c, 0),
               h3_grid_disk(c, 1), h3_cell_to_boundary_wkt(c), h3_is_pentagon(c), h3_cell_to_latlng(c)
        FROM (SELECT h3_latlng_to_cell(lat, lng, res) AS c FROM pts)""").fetchall()
    for c, la, ln, res, valid, s, back, p0, disk, wkt, pent, ll in rows:
        ela, eln = h3i.cell_to_latlng(c)
        assert la == pytest.approx(ela, abs=1e-9) and ln == pytest.approx(eln, abs=1e-9)
        assert ll == pytest.approx([ela, eln], abs=1e-9)
        assert res == h3i.get_resolution(c) and valid is True and pent == h3i.is_pentagon(c)
        assert s == h3i.int_to_str(c) and back == c
        assert p0 == h3i.cell_to_parent(c, 0)
        assert sorted(disk) == sorted(h3i.grid_disk(c, 1))
        ring = np.array(shapely.from_wkt(wkt).exterior.coords)[:-1]
        expect = np.array([(b, a) for a, b in h3i.cell_to_boundary(c)])
        assert np.allclose(ring, expect, atol=1e-9)


def test_parent_distance_children(con):
    c = h3i.latlng_to_cell(45.19, 5.72, 10)
    for r in range(0, 11):
        assert con.execute("SELECT h3_cell_to_parent(?, ?)", [c, r]).fetchone()[0] == h3i.cell_to_parent(c, r)
    assert con.execute("SELECT h3_cell_to_parent(?, 11)", [c]).fetchone()[0] is None  # finer than the cell
    for other in h3i.grid_disk(c, 3):
        assert con.execute("SELECT h3_grid_distance(?, ?)", [c, other]).fetchone()[0] == h3i.grid_distance(c, other)
    kids = con.execute("SELECT h3_cell_to_children(?, 12)", [c]).fetchone()[0]
    assert sorted(kids) == sorted(h3i.cell_to_children(c, 12))
    # signed BIGINT ids work too (the extension accepts both)
    assert con.execute("SELECT h3_get_resolution(CAST(? AS BIGINT))", [c]).fetchone()[0] == 10
    lo, hi = children_range(h3i.cell_to_parent(c, 6), 10)
    assert all(lo <= k <= hi for k in h3i.cell_to_children(h3i.cell_to_parent(c, 6), 10))
    assert not lo <= h3i.latlng_to_cell(44.0, 5.72, 10) <= hi


def test_nulls_and_invalid_input(con):
    row = con.execute("""SELECT h3_latlng_to_cell(NULL, 1, 5), h3_latlng_to_cell(1, 1, NULL),
        h3_latlng_to_cell('nan'::DOUBLE, 1, 5), h3_latlng_to_cell(1, 1, 16), h3_cell_to_lat(NULL),
        h3_cell_to_lat(5), h3_is_valid_cell(NULL), h3_is_valid_cell(5), h3_string_to_h3('zz'),
        h3_string_to_h3(NULL), h3_h3_to_string(NULL), h3_grid_disk(NULL, 1), h3_grid_distance(5, NULL),
        h3_get_resolution(NULL), h3_cell_to_boundary_wkt(7), h3_cell_to_parent(NULL, 3)""").fetchone()
    assert row == (None, None, None, None, None, None, None, False, None, None, None, None, None, None, None, None)


def test_all_names_registered(con):
    for name in SIGNATURES:
        assert con.execute("SELECT count(*) FROM duckdb_functions() WHERE function_name = ?", [name]).fetchone()[0]


def test_vectorised_over_many_rows(con):
    # One Python call per DuckDB vector, not per row: 20k rows in a handful of calls (no timing assertion).
    n = con.execute("SELECT count(DISTINCT h3_latlng_to_cell(random() * 10, random() * 10, 8)) "
                    "FROM range(20000)").fetchone()[0]
    assert n > 100
