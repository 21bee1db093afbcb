"""`botaclip store ...` and `botaclip sql` through the CLI, including every bad input's one-line error."""

from __future__ import annotations

import json

import h3.api.basic_int as h3i
import numpy as np
import pyarrow.parquet as pq
import pytest
from cli_checks import one_line_error

from botaclip.cli import cli
from botaclip.store import Store

PARENT = h3i.latlng_to_cell(45.19, 5.72, 6)


@pytest.fixture
def filled(tmp_path):
    """A store with a 16-d embedding set over one resolution-6 parent (2401 cells)."""
    store = Store.create(tmp_path / "s.store")
    cells = np.array(sorted(h3i.cell_to_children(PARENT, 10)), dtype=np.uint64)
    rng = np.random.default_rng(11)
    emb = rng.normal(size=(len(cells), 16)).astype(np.float32)
    with store.writer("dofa", kind="backbone", dim=16, provenance={"model": "dofa_small"}) as w:
        w.write(cells, emb)
    return store, cells, emb / np.linalg.norm(emb, axis=1, keepdims=True)


def _ok(cli_runner, args):
    r = cli_runner.invoke(cli, args)
    assert r.exit_code == 0, (r.output, r.stderr)
    return r.stdout


def test_create_info_verify(cli_runner, tmp_path):
    out = _ok(cli_runner, ["store", "create", str(tmp_path / "a.store"), "--resolution", "9"])
    assert "resolution 9" in out and "partitions at resolution 5" in out
    Store.open(tmp_path / "a.store")
    info = json.loads(_ok(cli_runner, ["store", "info", str(tmp_path / "a.store"), "--json"]))
    assert info["resolution"] == 9 and info["feature_sets"] == []
    assert _ok(cli_runner, ["store", "verify", str(tmp_path / "a.store")]).startswith("ok")


def test_info_and_sql_formats(cli_runner, filled, tmp_path):
    store, cells, _ = filled
    out = _ok(cli_runner, ["store", "info", str(store.path)])
    assert "dofa: backbone, dim 16, float32, 2401 rows in 1 partitions" in out and "dofa_small" in out
    q = ("SELECT h3_h3_to_string(h3_cell_to_parent(h3, 6)) AS parent, count(*) AS n "
         "FROM dofa GROUP BY parent")
    assert json.loads(_ok(cli_runner, ["sql", str(store.path), q, "--format", "json"])) == \
        [{"parent": h3i.int_to_str(PARENT), "n": 2401}]
    csv_out = _ok(cli_runner, ["sql", str(store.path), q, "--format", "csv"])
    assert csv_out.splitlines() == ["parent,n", f"{h3i.int_to_str(PARENT)},2401"]
    assert "2401" in _ok(cli_runner, ["sql", str(store.path), q])
    _ok(cli_runner, ["sql", str(store.path), "SELECT h3, embedding FROM dofa LIMIT 5", "--format", "parquet",
                     "--out", str(tmp_path / "o.parquet")])
    assert pq.read_table(tmp_path / "o.parquet").num_rows == 5
    # join points to cells with h3_latlng_to_cell
    lat, lng = h3i.cell_to_latlng(int(cells[100]))
    j = json.loads(_ok(cli_runner, ["sql", str(store.path),
                                    f"SELECT f.h3 FROM (SELECT {lat} AS lat, {lng} AS lng) p "
                                    "JOIN dofa f ON f.h3 = h3_latlng_to_cell(p.lat, p.lng, 10)", "--format", "json"]))
    assert j == [{"h3": int(cells[100])}]


def test_similar_matches_numpy(cli_runner, filled):
    store, cells, emb = filled
    q = 42
    out = json.loads(_ok(cli_runner, ["store", "similar", str(store.path), "--feature-set", "dofa",
                                      "--cell", h3i.int_to_str(int(cells[q])), "-k", "5", "--format", "json"]))
    sims = emb @ emb[q]
    sims[q] = -np.inf
    best = np.argsort(-sims)[:5]
    assert [int(r["h3_string"], 16) for r in out] == cells[best].tolist()
    assert np.allclose([r["similarity"] for r in out], sims[best], atol=1e-5)
    # --point picks the containing cell; --within restricts to a region (a resolution-8 cell)
    lat, lng = h3i.cell_to_latlng(int(cells[q]))
    out2 = json.loads(_ok(cli_runner, ["store", "similar", str(store.path), "--feature-set", "dofa",
                                       "--point", f"{lat},{lng}", "-k", "5", "--format", "json"]))
    assert out2 == out
    region = h3i.cell_to_parent(int(cells[q]), 8)
    out3 = json.loads(_ok(cli_runner, ["store", "similar", str(store.path), "--feature-set", "dofa", "--cell",
                                       h3i.int_to_str(int(cells[q])), "-k", "3", "--within",
                                       h3i.int_to_str(region), "--format", "json"]))
    inside = np.array([h3i.cell_to_parent(int(c), 8) == region for c in cells])
    s2 = np.where(inside, sims, -np.inf)
    assert [int(r["h3_string"], 16) for r in out3] == cells[np.argsort(-s2)[:3]].tolist()
    bbox = f"{lng - 0.01},{lat - 0.01},{lng + 0.01},{lat + 0.01}"  # west,south,east,north, as everywhere
    out4 = json.loads(_ok(cli_runner, ["store", "similar", str(store.path), "--feature-set", "dofa", "--cell",
                                       h3i.int_to_str(int(cells[q])), "--within", bbox, "--format", "json"]))
    assert out4 and all(abs(r["lat"] - lat) <= 0.01 and abs(r["lng"] - lng) <= 0.01 for r in out4)


def test_bad_inputs_give_one_line_errors(cli_runner, filled, tmp_path):
    store, cells, _ = filled
    s = str(store.path)
    (tmp_path / "plain").mkdir()
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    one_line_error(cli_runner, ["store", "info", str(tmp_path / "plain")], "is not a botaclip store")
    one_line_error(cli_runner, ["store", "info", str(tmp_path / "missing")], "is not a directory")
    one_line_error(cli_runner, ["store", "create", s], "already exists")
    one_line_error(cli_runner, ["sql", s, "SELEC nonsense"], "SQL error:")
    one_line_error(cli_runner, ["sql", s, "SELECT * FROM no_such_view"], "SQL error:")
    one_line_error(cli_runner, ["sql", s, "CREATE TABLE t AS SELECT 1"], "read-only: CREATE statements are refused")
    one_line_error(cli_runner, ["sql", s, "SELECT 1", "--format", "parquet"], "needs --out")
    one_line_error(cli_runner, ["store", "similar", s, "--feature-set", "dofa"], "exactly one of a cell")
    one_line_error(cli_runner, ["store", "similar", s, "--feature-set", "dofa", "--cell", "zz"], "not an H3 cell")
    one_line_error(cli_runner, ["store", "similar", s, "--feature-set", "dofa", "--cell", h3i.int_to_str(PARENT)],
         "not a valid H3 cell at the store resolution")
    one_line_error(cli_runner, ["store", "similar", s, "--feature-set", "dofa", "--point", "45.1"], "must be LAT,LNG")
    one_line_error(cli_runner, ["store", "similar", s, "--feature-set", "dofa", "--point", "10,10"], "is not in feature set")
    one_line_error(cli_runner, ["store", "similar", s, "--feature-set", "nope", "--cell", h3i.int_to_str(int(cells[0]))],
         "no feature set 'nope'")
    one_line_error(cli_runner, ["store", "similar", s, "--feature-set", "dofa", "--cell", h3i.int_to_str(int(cells[0])),
                      "--within", "1,2,3"], "--within")
    one_line_error(cli_runner, ["store", "import", s, str(tmp_path / "nofile.csv"), "--name", "x"], "no such file")
    one_line_error(cli_runner, ["store", "import", s, str(tmp_path / "bad.csv"), "--name", "x"], "no coordinate columns")
    one_line_error(cli_runner, ["store", "import", s, str(tmp_path / "bad.csv"), "--name", "Bad Name", "--h3", "a"],
         "invalid feature-set name")
    one_line_error(cli_runner, ["store", "add-raster", s, str(tmp_path / "bad.csv"), "--name", "r"], "cannot open raster")
    one_line_error(cli_runner, ["store", "export", s, "--feature-set", "dofa", "--out", str(tmp_path / "x.csv")],
         "use a .parquet")
    one_line_error(cli_runner, ["store", "export", s, "--feature-set", "dofa", "--out", str(tmp_path / "no/x.parquet")],
         "does not exist")
    # nothing stored was harmed
    assert Store.open(store.path).verify().ok and Store.open(store.path).info("dofa")["rows"] == 2401
